-- The AMQP transport (SAGAKIT_PARTICIPANTS=amqp): commands waiting to be published by the
-- relay (sent_at NULL until RabbitMQ confirmed them), and the participants' replies, stored
-- once per (saga, name) so that a reply delivered twice or early is harmless.
CREATE TABLE saga_outbox (
    id         bigserial PRIMARY KEY,
    saga_id    text NOT NULL,
    step       text NOT NULL,
    key        text NOT NULL,
    kind       text NOT NULL,
    body       jsonb NOT NULL,
    created_at double precision NOT NULL,
    sent_at    double precision
);
CREATE INDEX saga_outbox_unsent ON saga_outbox (id) WHERE sent_at IS NULL;
CREATE TABLE saga_replies (
    saga_id text NOT NULL,
    name    text NOT NULL,
    payload jsonb NOT NULL,
    at      double precision NOT NULL,
    PRIMARY KEY (saga_id, name)
);
