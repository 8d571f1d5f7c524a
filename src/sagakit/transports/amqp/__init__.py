"""The AMQP transport (RabbitMQ, through aio-pika): commands and replies as messages.

The checkout service (``SAGAKIT_PARTICIPANTS=amqp``):

- each checkout step's command (``charge``, ``reserve``, ``ship``, or the compensation
  ``refund``, ``release``, ``cancel``) is written to the ``saga_outbox`` table of the saga
  store in the very transaction that records the attempt (``Step.outgoing``), and the
  step waits for its reply in ``saga_replies``; a refusal becomes ``StepFailed``, no reply
  within ``amqp_reply_seconds`` is transient (the step retries with the same key, and the
  retry's record carries the command again);
- a *relay* publishes the unsent outbox rows as persistent messages with publisher confirms,
  and marks them sent only once RabbitMQ confirmed them (a crash in between publishes again,
  and the participant's inbox makes the duplicate harmless);
- a *reply consumer* stores each reply once per (saga, name) and acks it after that commit:
  a reply delivered twice, or before its step waits for it, changes nothing.

A participant (``sagakit participant KIND --transport amqp``) consumes its durable command
queue with manual acks, applies each command through the same inbox SQL as the HTTP
services (the effect and its inbox row in one transaction, deduplicated by the key),
publishes the reply (persistent, confirmed), and only then acks. A command that fails
again after a redelivery is rejected to the dead-letter queue.
"""

from sagakit.extras import missing_extra

try:
    import aio_pika  # noqa: F401  # the amqp extra: say so here, before a submodule fails
except ModuleNotFoundError as exc:
    missing_extra(exc, "The AMQP transport")
