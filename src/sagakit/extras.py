"""Which extra installs what: the one-line advice given when an optional dependency is missing.

The core (``pip install sagakit``) holds definitions, the orchestrator, the worker, the SQLite
and memory stores and the testing kit. Everything else imports its dependency where it is used
and, when that is not installed, raises :class:`MissingExtra` naming the extra to install.
"""

from __future__ import annotations

from typing import Final, NoReturn

#: The top-level module each extra brings, and the extra's name.
EXTRA_OF_MODULE: Final = {
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "pydantic_settings": "server",
    "prometheus_client": "server",
    "structlog": "server",
    "rich": "server",
    "httpx": "server",
    "asyncpg": "postgres",
    "aio_pika": "amqp",
    "aiormq": "amqp",
    "opentelemetry": "otel",
}


class MissingExtra(ModuleNotFoundError):
    """An optional dependency is not installed; the message says which extra brings it."""


def extra_for(exc: ModuleNotFoundError) -> str | None:
    """The extra that brings the module ``exc`` failed to import, if one does."""
    return EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])


def missing_extra(exc: ModuleNotFoundError, feature: str) -> NoReturn:
    """Raise, for ``exc`` (a failed import while loading ``feature``), the error naming the
    extra to install.

    An import that failed for a module no extra brings is raised unchanged, so that a real
    bug is not disguised as an installation problem.
    """
    extra = extra_for(exc)
    if extra is None:
        raise exc
    module = (exc.name or "").split(".")[0]
    error = MissingExtra(
        f"{feature} needs the {extra!r} extra ({module} is not installed):"
        f" pip install 'sagakit[{extra}]'"
    )
    error.name = exc.name
    raise error from exc
