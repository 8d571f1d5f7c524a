"""Pieces of the saga page: who holds a saga, its current error, its steps, status pills."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final

import orjson

from sagakit.records import SagaEvent, SagaInstance, SagaStatus, StepRecord, StepStatus
from sagakit.run import WAIT_FOREVER


def badge(value: str) -> str:
    """A status or result as a coloured pill."""
    return f'<span class="status {escape(value.replace(" ", "-"))}">{escape(value)}</span>'


def when(at: float | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    if at is None:
        return ""
    if at >= WAIT_FOREVER:  # a saga parked with no deadline
        return "never"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _compact(value: object, limit: int = 160) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def holder(saga: SagaInstance, stuck: str | None) -> str:
    """Who drives an active saga, until when, its last progress; a callout when stuck."""
    if not saga.status.is_active:
        return ""
    lease = f"{when(saga.lease_until)} UTC" if saga.lease_until else "-"
    line = (
        f"<p class=summary><span>owner <b class=mono>{escape(saga.owner or 'none')}</b></span>"
        f"<span>lease until <b>{lease}</b></span>"
        f"<span>last progress <b>{when(saga.updated_at)}</b> UTC</span></p>"
    )
    if stuck is None:
        return line
    return (
        f"{line}<div class='callout stuck'><b>Stuck</b>: {escape(stuck)}. Check that a"
        " <code>sagakit serve</code> or <code>sagakit worker</code> runs on this database;"
        " one takes the saga over once its lease has run out.</div>"
    )


def current_error(saga: SagaInstance, events: Sequence[SagaEvent]) -> str | None:
    """The saga's error while it is current: not once an operator's retry is under way."""
    if saga.error is None:
        return None
    if saga.status is SagaStatus.COMPENSATING:
        kinds = [e.type for e in events]
        retried = max((i for i, k in enumerate(kinds) if k == "operator_retry"), default=-1)
        gave_up = max((i for i, k in enumerate(kinds) if k == "saga_failed"), default=-1)
        if retried > gave_up:
            return None
    return saga.error


#: Step statuses whose last error is still the step's current state.
ERROR_IS_CURRENT: Final = (StepStatus.FAILED, StepStatus.RUNNING, StepStatus.COMPENSATING)


def _error_is_current(step: StepRecord, *, resolved: bool) -> bool:
    if resolved and step.status.needs_compensation:
        return False
    return step.status in ERROR_IS_CURRENT


def step_status(step: StepRecord, *, resolved: bool) -> str:
    if resolved and step.status.needs_compensation:
        return badge("resolved")
    return badge(step.status.value)


def steps_table(steps: Sequence[StepRecord], *, resolved: bool = False) -> str:
    """The steps; a step's error only while it is current (the timeline keeps every one)."""
    rows = "".join(
        f"<tr><td>{escape(s.name)}</td><td>{step_status(s, resolved=resolved)}</td>"
        f"<td class=num>{s.attempts}</td><td class=num>{s.compensation_attempts}</td>"
        f"<td>{'' if s.result is None else f'<code>{escape(_compact(s.result))}</code>'}</td>"
        f"<td>{escape(s.error or '') if _error_is_current(s, resolved=resolved) else ''}</td>"
        "</tr>"
        for s in steps
    )
    return (
        "<table class=steps><thead><tr><th>Step</th><th>Status</th><th>Attempts</th>"
        "<th>Compensations</th><th>Result</th><th>Last error</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
