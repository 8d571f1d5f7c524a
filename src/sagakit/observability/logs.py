"""Structured logs: structlog renders every log record, as JSON lines or for a terminal.

sagakit's modules log through :mod:`logging`, so that an application embedding sagakit keeps
its own logging. :func:`configure_logging` (what the ``sagakit`` command uses) gives the root
logger one handler whose structlog formatter adds to every line the request id (bound by the
API's middleware), the saga, step and attempt it was logged under (from
:data:`sagakit.orchestrator.current_step`) and the record's ``extra`` fields.
:class:`SagaLog` is an orchestrator listener that logs one event per saga transition.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Sequence
from typing import Final, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from sagakit.records import SagaEvent, SagaInstance
from sagakit.run import current_step

LogFormat = Literal["json", "console"]

#: The level of each transition's line: the happy path is quiet at ``info``.
EVENT_LEVEL: Final = {
    # The happy path is silent at info: a line per checkout (its formatting and an unbuffered
    # write) was a tenth of the server's CPU in `python -m bench.profile --target sqlite`;
    # refusals, retries and failures are still logged.
    # One info line when a saga ends, whatever its outcome (see ENDINGS).
    "saga_started": logging.DEBUG,
    "step_started": logging.DEBUG,
    "step_succeeded": logging.DEBUG,
    "compensation_attempt": logging.DEBUG,
    "step_retry": logging.WARNING,
    "step_exhausted": logging.WARNING,
    "compensation_retry": logging.WARNING,
    "saga_cancelled": logging.WARNING,
    "compensation_failed": logging.ERROR,
    "saga_failed": logging.ERROR,
}

_sagas = logging.getLogger("sagakit.sagas")
#: The events that end a saga, and the outcome each line names.
ENDINGS: Final = {
    "saga_completed": "completed",
    "saga_compensated": "compensated",
    "saga_failed": "failed",
}


def add_saga_context(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """Name the saga, step and attempt a line was logged under, unless it names them itself."""
    ctx = current_step.get()
    if ctx is not None:
        event.setdefault("saga_id", ctx.saga_id)
        event.setdefault("saga", ctx.saga_name)
        event.setdefault("step", ctx.step)
        event.setdefault("attempt", ctx.attempt)
    return event


def drop_color_message(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """Drop the copy of the message uvicorn decorates with terminal colours."""
    event.pop("color_message", None)
    return event


def _shared() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        add_saga_context,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _renderer(fmt: LogFormat, colors: bool) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    # Plain tracebacks: rich's would print local variables, an admin token among them.
    return structlog.dev.ConsoleRenderer(
        colors=colors, exception_formatter=structlog.dev.plain_traceback
    )


def formatter(fmt: LogFormat, *, colors: bool = False) -> logging.Formatter:
    """A formatter that renders any log record as structlog does, in ``fmt``."""
    tail: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if fmt == "json":
        tail.append(structlog.processors.format_exc_info)
    foreign: list[Processor] = [structlog.stdlib.ExtraAdder(), drop_color_message, *_shared()]
    processors = [*tail, _renderer(fmt, colors)]
    if fmt == "json":
        return JsonLines(foreign_pre_chain=foreign, processors=processors)
    return structlog.stdlib.ProcessorFormatter(foreign_pre_chain=foreign, processors=processors)


#: The attributes every ``LogRecord`` has: any other one came from ``extra=``.
_RECORD_KEYS: Final = frozenset(
    {*logging.LogRecord("n", 0, "p", 0, "m", (), None).__dict__, "message", "color_message"}
)
_LEVEL_NAMES: Final = {
    level: logging.getLevelName(level).lower()
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
}


class JsonLines(structlog.stdlib.ProcessorFormatter):
    """structlog's JSON lines for the records of :mod:`logging`, rendered directly.

    The same line as the processor chain makes (the message as ``event``, the record's
    ``extra`` fields, the bound context such as the request id, the saga's, the logger, the
    level, an ISO timestamp in UTC, a traceback as ``exception``) for a fifth of its cost:
    sagakit logs a line per request and one per saga. Lines from structlog's own API take
    the processor chain.
    """

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):  # structlog's own API: its event dict
            return super().format(record)
        event: dict[str, object] = {"event": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _RECORD_KEYS:
                event[key] = value
        structlog.contextvars.merge_contextvars(None, "format", event)
        event.setdefault("logger", record.name)
        event.setdefault("level", _LEVEL_NAMES.get(record.levelno) or record.levelname.lower())
        add_saga_context(None, "format", event)
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        event.setdefault("timestamp", stamp.isoformat().replace("+00:00", "Z"))
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exception"] = record.exc_text
        try:
            return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson refuses (an integer over 64 bits): as structlog does
            return json.dumps(event, default=repr)


def resolve_format(fmt: LogFormat | None, stream: TextIO) -> LogFormat:
    """``fmt`` if given; else ``console`` for a terminal and ``json`` for anything else."""
    if fmt is not None:
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure_logging(
    level: str = "info", fmt: LogFormat | None = None, *, stream: TextIO | None = None
) -> LogFormat:
    """Send every log record to ``stream`` (stderr) through structlog; the format used.

    Replaces the root logger's handlers (this is for the ``sagakit`` command and the app
    factory it runs; an application embedding sagakit configures logging itself).
    """
    out = stream or sys.stderr
    chosen = resolve_format(fmt, out)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter(chosen, colors=chosen == "console" and out.isatty()))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # No line names its source file, thread or process: do not look them up for each record
    # (the caller's frame above all; together about 4 µs a record, two records a checkout).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Lines logged with structlog's own API take the same road.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *_shared(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return chosen


class SagaLog:
    """Logs one event per saga transition on ``sagakit.sagas``; an orchestrator listener."""

    def __init__(self, logger: logging.Logger = _sagas) -> None:
        self.logger = logger

    def __call__(self, instance: SagaInstance, events: Sequence[SagaEvent]) -> None:
        """Log ``events``, just made durable for ``instance``."""
        for event in events:
            level = EVENT_LEVEL.get(event.type, logging.INFO)
            if not self.logger.isEnabledFor(level):
                continue
            fields: dict[str, object] = {
                "saga_id": instance.saga_id,
                "saga": instance.name,
                "status": instance.status.value,
            }
            if instance.business_key is not None:
                fields["business_key"] = instance.business_key
            if event.step is not None:
                fields["step"] = event.step
            if event.attempt is not None:
                fields["attempt"] = event.attempt
            if event.detail is not None:
                fields["detail"] = event.detail
            if event.type in ENDINGS:
                fields["outcome"] = ENDINGS[event.type]
                fields["duration_ms"] = round((instance.updated_at - instance.created_at) * 1000, 3)
                if instance.failed_step is not None:
                    fields["failed_step"] = instance.failed_step
            self.logger.log(level, event.type, extra=fields)
