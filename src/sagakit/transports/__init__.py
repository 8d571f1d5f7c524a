"""How a step reaches a participant in another process.

``http.py`` sends each command as an HTTP request with the step's idempotency key;
``amqp/`` sends it through RabbitMQ, from the saga store's outbox, and waits for the reply
the reply consumer stores. Both keep the engine's rules: a command is retried with the same
key, and the participant applies it once.
"""
