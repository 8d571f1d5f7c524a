"""How ``sagakit sagas`` shows sagas: rich tables, coloured statuses, times in UTC.

Saga data (ids, errors, details, input) is always wrapped in :class:`~rich.text.Text`, so
that nothing a step wrote can be read as console markup.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final, TextIO

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from sagakit.records import SagaEvent, SagaInstance, SagaStatus, StepRecord, StepStatus
from sagakit.run import WAIT_FOREVER
from sagakit.store.activity import StuckRule, stuck_reason

#: The colour of each saga or step status (step statuses share most of the names).
STYLE_OF: Final = {
    "running": "blue",
    "waiting": "magenta",
    "compensating": "yellow",
    "completed": "green",
    "succeeded": "green",
    "compensated": "cyan",
    "failed": "bold red",
}


def console(*, stderr: bool = False) -> Console:
    """A console; when it is not a terminal it is wide, so that ids are never cut."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=200 if wide else None)


def when(at: float | None, *, precise: bool = False) -> str:
    """A timestamp in UTC, to the second (or to the millisecond)."""
    if at is None:
        return ""
    if at >= WAIT_FOREVER:  # a saga parked with no deadline
        return "never"
    text = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return (text[:-3] if precise else text[:-7]) + "Z"


def status_text(status: SagaStatus | StepStatus) -> Text:
    """A status in its colour."""
    return Text(status.value, style=STYLE_OF.get(status.value, ""))


def say(*parts: str | Text) -> None:
    """Print one line of plain text and styled parts (data is never read as markup)."""
    console().print(Text.assemble(*parts))


def duration(step: StepRecord) -> str:
    """How long a step ran, from its start to its last finish."""
    if step.started_at is None or step.finished_at is None:
        return ""
    ms = (step.finished_at - step.started_at) * 1000
    return f"{ms:.1f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def saga_table(sagas: tuple[SagaInstance, ...], rule: StuckRule | None = None) -> Table:
    """Sagas, one a row; a stuck one's status says so."""
    table = Table("saga", "name", "key", "status", "failed step", "error", "created (UTC)")
    table.columns[0].no_wrap = True
    for saga in sagas:
        table.add_row(
            Text(saga.saga_id),
            Text(saga.name),
            Text(saga.business_key or ""),
            _status(saga, rule),
            Text(saga.failed_step or ""),
            Text(saga.error or ""),
            when(saga.created_at),
        )
    return table


def _status(saga: SagaInstance, rule: StuckRule | None) -> Text:
    text = status_text(saga.status)
    if rule is not None and stuck_reason(saga, time.time(), rule):
        text.append(" stuck", style="bold red")
    return text


def steps_table(saga: SagaInstance) -> Table:
    """A saga's steps, in order."""
    table = Table("#", "step", "status", "attempts", "undo attempts", "duration", "result", "error")
    for step in saga.steps:
        table.add_row(
            str(step.index + 1),
            Text(step.name),
            status_text(step.status),
            str(step.attempts),
            str(step.compensation_attempts),
            duration(step),
            Text("" if step.result is None else orjson.dumps(step.result).decode()),
            Text(step.error or ""),
        )
    return table


def events_table(events: list[SagaEvent]) -> Table:
    """A saga's history, oldest first."""
    table = Table("at (UTC)", "event", "step", "attempt", "detail")
    for event in events:
        table.add_row(
            when(event.at, precise=True),
            Text(event.type),
            Text(event.step or ""),
            "" if event.attempt is None else str(event.attempt),
            Text(event.detail or ""),
        )
    return table


def header(saga: SagaInstance, stuck: str | None = None) -> Table:
    """A saga's own fields, one a line (who drives it, and whether it is stuck)."""
    grid = Table.grid(padding=(0, 2))
    fields = [
        ("saga", Text(saga.saga_id)),
        ("name", Text(f"{saga.name} v{saga.version}")),
        ("status", status_text(saga.status)),
        ("key", Text(saga.business_key or "")),
        ("failed step", Text(saga.failed_step or "")),
        ("error", Text(saga.error or "")),
        ("created", Text(when(saga.created_at, precise=True))),
        ("updated", Text(when(saga.updated_at, precise=True))),
        ("owner", Text(saga.owner or "")),
        ("lease expires", Text(when(saga.lease_until, precise=True))),
        ("last progress", Text(when(saga.updated_at, precise=True))),
        ("stuck", Text(stuck or "no", style="bold red" if stuck else "")),
        ("input", Text(orjson.dumps(saga.input).decode())),
    ]
    for name, value in fields:
        grid.add_row(Text(name, style="bold"), value)
    return grid


@contextlib.contextmanager
def logs_above(progress: Progress) -> Iterator[None]:
    """Print log lines above the progress bar rather than through it, while it shows.

    The log handlers write to the stderr they were given at start; the bar's console prints
    each line above itself. Handlers writing to a terminal's stderr go through it meanwhile.
    """
    if progress.disable:
        yield
        return
    moved: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []
    for handler in logging.getLogger().handlers:
        # The bar's console may have put a proxy in sys.stderr already: its file counts.
        stderr = (sys.__stderr__, sys.stderr, getattr(sys.stderr, "rich_proxied_file", None))
        if isinstance(handler, logging.StreamHandler) and handler.stream in stderr:
            previous = handler.setStream(_ConsoleStream(progress))
            if previous is not None:
                moved.append((handler, previous))
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)


class _ConsoleStream(io.TextIOBase):
    """A text stream whose lines the progress bar's console prints above the bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def write(self, text: str) -> int:
        line = text.rstrip("\n")
        if line:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return len(text)
