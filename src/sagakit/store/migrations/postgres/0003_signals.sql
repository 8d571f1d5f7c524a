-- External signals delivered to a saga (SagaOrchestrator.signal): kept until its WaitFor step
-- consumes one; the first delivery of a name wins, so a duplicate is harmless.
CREATE TABLE saga_signals (
    saga_id text NOT NULL,
    name    text NOT NULL,
    payload jsonb,
    at      double precision NOT NULL,
    PRIMARY KEY (saga_id, name)
);
