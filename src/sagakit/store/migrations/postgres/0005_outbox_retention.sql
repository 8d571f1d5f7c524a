-- The AMQP relay deletes sent commands and old replies past SAGAKIT_AMQP_RETENTION_SECONDS:
-- indexes so that doing so reads only what it deletes.
CREATE INDEX saga_outbox_sent ON saga_outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX saga_replies_at ON saga_replies (at);
