"""Structured logs: the structlog formatter, the saga context of a line, the transition log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from sagakit.observability.logs import SagaLog, configure_logging, formatter, resolve_format
from sagakit.records import SagaEvent, SagaInstance, SagaStatus, StepRecord
from sagakit.run import current_step
from sagakit.saga import StepContext


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger at DEBUG whose lines are rendered as JSON into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter("json"))
    log = logging.getLogger("tests.logs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield log, buffer
    finally:
        log.removeHandler(handler)
        log.propagate = True


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    """The JSON objects written, one a line."""
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_line_holds_the_event_extra_fields_and_the_bound_request_id(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """A record becomes one JSON object: event, level, logger, time, extras, request id."""
    log, buffer = logger

    with structlog.contextvars.bound_contextvars(request_id="req-7"):
        log.info("payment_refunded", extra={"amount": 20, "user_id": "user1"})

    [line] = lines(buffer)
    assert line["event"] == "payment_refunded"
    assert line["level"] == "info"
    assert line["logger"] == "tests.logs"
    assert line["request_id"] == "req-7"
    assert (line["amount"], line["user_id"]) == (20, "user1")
    assert str(line["timestamp"]).endswith("Z")


def test_lines_logged_inside_a_step_name_its_saga_step_and_attempt(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """While a step runs, every line carries its saga id, saga name, step and attempt."""
    log, buffer = logger
    ctx: StepContext = StepContext(
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
        log.warning("card declined")
    finally:
        current_step.reset(token)
    log.info("between steps")

    inside, outside = lines(buffer)
    assert (inside["saga_id"], inside["saga"], inside["step"], inside["attempt"]) == (
        "s-1",
        "checkout",
        "payment",
        2,
    )
    assert "saga_id" not in outside


def test_exceptions_are_rendered_into_the_json_line(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """A logged exception's traceback is a field of the line, not lines of its own."""
    log, buffer = logger

    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        log.exception("GET /x failed")

    [line] = lines(buffer)
    assert "RuntimeError: disk on fire" in str(line["exception"])


def test_console_format_is_one_readable_line_with_key_values() -> None:
    """The console format puts level, event, logger and sorted key=value pairs on one line."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter("console"))
    record = logging.LogRecord("sagakit.sagas", logging.INFO, __file__, 1, "saga_started", (), None)
    record.saga_id = "abc"

    handler.emit(record)

    text = buffer.getvalue()
    assert text.count("\n") == 1
    assert "[info     ] saga_started" in text
    assert "[sagakit.sagas]" in text
    assert "saga_id=abc" in text
    assert "\x1b[" not in text


def test_format_defaults_to_console_on_a_terminal_and_json_elsewhere() -> None:
    """Unset, the format is console for a terminal and json for a file or a pipe; set, it wins."""
    assert resolve_format(None, Tty()) == "console"
    assert resolve_format(None, io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"
    assert resolve_format("console", io.StringIO()) == "console"


def test_configure_logging_sends_every_logger_through_one_structlog_handler() -> None:
    """After configure_logging, stdlib and structlog loggers both write JSON lines to the stream."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers[:] = []  # pytest's own handlers stay out of it (configure closes old ones)
    buffer = io.StringIO()
    try:
        assert configure_logging("info", stream=buffer) == "json"
        logging.getLogger("uvicorn.error").info(
            "Started server process [1]", extra={"color_message": "\x1b[36m1\x1b[0m"}
        )
        structlog.get_logger("tests").info("native_event", answer=42)
        logging.getLogger("tests").debug("below the level")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()

    first, second = lines(buffer)
    assert first["event"] == "Started server process [1]"
    assert first["logger"] == "uvicorn.error"
    assert "color_message" not in first
    assert (second["event"], second["answer"], second["level"]) == ("native_event", 42, "info")


def instance(status: SagaStatus) -> SagaInstance:
    """A checkout instance of order1 in ``status``."""
    steps = (StepRecord(index=0, name="payment"),)
    return SagaInstance(
        saga_id="s-9",
        name="checkout",
        version=1,
        status=status,
        input={},
        steps=steps,
        business_key="order1",
    )


def test_saga_log_writes_a_line_per_transition_at_its_level(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """Transitions are logged with their saga, step and attempt; starts and steps at debug."""
    log, buffer = logger
    log.setLevel(logging.INFO)
    saga_log = SagaLog(log)

    saga_log(
        instance(SagaStatus.RUNNING),
        [
            SagaEvent(type="saga_started", step="payment", attempt=1),
            SagaEvent(type="step_started", step="payment", attempt=1),
            SagaEvent(type="step_retry", step="payment", attempt=1, detail="timed out"),
        ],
    )
    saga_log(
        instance(SagaStatus.FAILED),
        [SagaEvent(type="saga_failed", step="payment", detail="refund refused")],
    )

    retried, failed = lines(buffer)
    assert retried == {
        **retried,
        "event": "step_retry",
        "level": "warning",
        "saga_id": "s-9",
        "saga": "checkout",
        "business_key": "order1",
        "status": "running",
        "step": "payment",
        "attempt": 1,
        "detail": "timed out",
    }
    assert (failed["event"], failed["level"], failed["detail"]) == (
        "saga_failed",
        "error",
        "refund refused",
    )
