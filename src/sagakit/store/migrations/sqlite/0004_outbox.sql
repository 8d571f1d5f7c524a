-- The AMQP transport (SAGAKIT_PARTICIPANTS=amqp): commands waiting to be published by the
-- relay (sent_at NULL until RabbitMQ confirmed them), and the participants' replies, stored
-- once per (saga, name) so that a reply delivered twice or early is harmless.
CREATE TABLE saga_outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id    TEXT NOT NULL,
    step       TEXT NOT NULL,
    key        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,        -- JSON
    created_at REAL NOT NULL,
    sent_at    REAL
);
CREATE INDEX saga_outbox_unsent ON saga_outbox (id) WHERE sent_at IS NULL;
CREATE TABLE saga_replies (
    saga_id TEXT NOT NULL,
    name    TEXT NOT NULL,
    payload TEXT NOT NULL,           -- JSON
    at      REAL NOT NULL,
    PRIMARY KEY (saga_id, name)
) WITHOUT ROWID;
