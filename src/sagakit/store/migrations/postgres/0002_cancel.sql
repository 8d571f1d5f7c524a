-- An operator's request to cancel a running saga: its driver compensates at its next step.
ALTER TABLE saga_instances ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
