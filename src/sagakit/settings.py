"""Settings: command-line flags first, then ``SAGAKIT_*`` environment variables, then defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sagakit.extras import missing_extra

try:
    from pydantic_settings import BaseSettings, SettingsConfigDict
except ModuleNotFoundError as exc:
    missing_extra(exc, "sagakit's settings (the service and its CLI)")


class Settings(BaseSettings):
    """Everything a sagakit process can be told."""

    model_config = SettingsConfigDict(env_prefix="SAGAKIT_", extra="ignore")

    database_url: str = "sqlite:///./sagakit.db"
    admin_token: str | None = None
    #: Comma-separated bearer tokens that may read the operator surface but change nothing.
    viewer_tokens: str = ""
    #: How long a dashboard session lasts after its sign-in.
    session_hours: float = Field(default=12.0, gt=0, le=24 * 366)
    checkout_wait_seconds: float = Field(default=10.0, ge=0, le=3600)
    #: How long a process may go silent before another takes its sagas over.
    lease_seconds: float = Field(default=15.0, gt=0)
    #: How often a worker looks for sagas whose driver went away.
    poll_seconds: float = Field(default=1.0, gt=0)
    #: An active saga with no progress for this long is shown (and counted) as stuck.
    stuck_after_seconds: float = Field(default=300.0, gt=0)
    demo_data: bool = True
    #: Run the checkout's actions as local actions of the store (effect and step record in
    #: one transaction). Off, each action commits on its own first, as a remote participant's
    #: would, and the step's record follows.
    local_steps: bool = True
    #: Run a checkout whose steps are all local as one transaction (start, every effect,
    #: the compensations after a refusal, the outcome). Off, each transition is its own
    #: write, as for a saga with remote steps (the crash tests of that path turn it off).
    one_unit: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    #: Seconds a client has to send a request's headers (from connecting, or from the
    #: previous answer on a kept-alive connection), however slowly they trickle in.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    #: Seconds a client has to send a request's body, once its headers are in.
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: Seconds an idle kept-alive connection stays open.
    keep_alive_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: Open connections per process; past it the longest-idle one is closed. Unset: the
    #: open-files limit less 128.
    max_connections: int | None = Field(default=None, ge=1, le=1_000_000)
    log_level: str = "info"
    #: ``json`` (one object a line, for production) or ``console`` (for a person); unset:
    #: ``console`` when stderr is a terminal, ``json`` otherwise.
    log_format: Literal["json", "console"] | None = None
    #: How many times each checkout compensation is tried before its saga is marked
    #: ``failed`` for an operator; unset: the engine's default (about half an hour of tries).
    compensation_attempts: int | None = Field(default=None, ge=1, le=10_000)
    #: Where the checkout's participants run: ``local`` (in this process, on this database)
    #: or ``http`` (``sagakit participant`` services at the three URLs below), or ``amqp``
    #: (``sagakit participant --transport amqp`` processes, through RabbitMQ at ``amqp_url``).
    participants: Literal["local", "http", "amqp"] = "local"
    payment_url: str = "http://127.0.0.1:8001"
    inventory_url: str = "http://127.0.0.1:8002"
    shipping_url: str = "http://127.0.0.1:8003"
    #: Seconds one call to a participant may take before it is retried (same key).
    participant_timeout_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: The RabbitMQ server of the ``amqp`` transport.
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    #: The prefix of the ``amqp`` transport's queue names (one per deployment or test run).
    amqp_prefix: str = Field(default="sagakit", min_length=1, max_length=100)
    #: Seconds an ``amqp`` step waits for its reply before it sends the command again.
    amqp_reply_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: Seconds sent commands (and the replies of sagas no longer active) are kept in the
    #: saga store's ``saga_outbox`` and ``saga_replies`` before the relay deletes them.
    amqp_retention_seconds: float = Field(default=7 * 86400, ge=0)
