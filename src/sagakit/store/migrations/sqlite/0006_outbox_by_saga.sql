-- An AMQP step whose reply is late asks whether its command was published at all (if not,
-- RabbitMQ is unreachable and the step keeps waiting): find a saga's commands by its id.
CREATE INDEX saga_outbox_saga ON saga_outbox (saga_id, step, kind);
