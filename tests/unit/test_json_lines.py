"""The JSON lines formatter writes what structlog's processor chain writes, for less."""

from __future__ import annotations

import json
import logging
import re
import sys

import structlog

from sagakit.observability.logs import JsonLines, add_saga_context, drop_color_message, formatter
from sagakit.records import JSON
from sagakit.run import current_step
from sagakit.saga import StepContext


def _chain() -> logging.Formatter:
    """The processor chain the JSON formatter stands in for, as structlog runs it."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(),
            drop_color_message,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            add_saga_context,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def _record(level: int, msg: str, *args: object, **extra: object) -> logging.LogRecord:
    exc_info = sys.exc_info() if level >= logging.ERROR and sys.exc_info()[0] else None
    record = logging.LogRecord("sagakit.test", level, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def _same(record: logging.LogRecord) -> dict[str, object]:
    fast, slow = formatter("json"), _chain()
    assert isinstance(fast, JsonLines)
    ours, theirs = json.loads(fast.format(record)), json.loads(slow.format(record))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ours.pop("timestamp"))
    theirs.pop("timestamp")
    assert ours == theirs
    return dict(ours)


def test_a_plain_line_with_extra_fields_and_a_bound_request_id() -> None:
    with structlog.contextvars.bound_contextvars(request_id="r-1", status=7):
        line = _same(
            _record(logging.INFO, "%s %d", "POST", 200, status=200, route="/x", color_message="c")
        )
    assert line == {
        "event": "POST 200",
        "status": 200,  # the record's own field wins over the bound one
        "route": "/x",
        "request_id": "r-1",
        "logger": "sagakit.test",
        "level": "info",
    }


def test_a_line_logged_inside_a_step_names_the_saga_step_and_attempt() -> None:
    ctx: StepContext[dict[str, JSON], JSON] = StepContext(
        saga_id="s-1",
        saga_name="checkout",
        step="payment",
        input={},
        results={},
        idempotency_key="s-1:payment",
        attempt=2,
    )
    token = current_step.set(ctx)
    try:
        line = _same(_record(logging.WARNING, "slow", step="own"))
    finally:
        current_step.reset(token)
    assert (line["saga_id"], line["step"], line["attempt"], line["level"]) == (
        "s-1",
        "own",
        2,
        "warning",
    )


def test_an_exception_is_rendered_as_its_traceback() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        line = _same(_record(logging.ERROR, "failed"))
    assert str(line["exception"]).endswith("ValueError: bad value")


def test_values_json_cannot_hold_are_written_as_their_repr() -> None:
    line = _same(_record(logging.INFO, "odd", big=2**70, thing=object(), when={1: "a"}))
    assert line["big"] == 2**70
    assert str(line["thing"]).startswith("<object object at")
