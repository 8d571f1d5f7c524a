"""The records' hand-written copies (``evolve``, ``with_result``) keep every field."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sagakit.records import (
    OutboxMessage,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StepRecord,
    StepStatus,
    Transition,
)


def _other(value: Any, name: str) -> Any:
    """A value of ``name`` unlike ``value``."""
    if isinstance(value, StepStatus):
        return StepStatus.COMPENSATED
    if isinstance(value, SagaStatus):
        return SagaStatus.FAILED
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 7
    if isinstance(value, tuple):
        return (*value, StepRecord(index=9, name="x"))
    if isinstance(value, dict):
        return {**value, "x": 1}
    return f"other {name}"


def test_step_evolve_changes_each_field_alone() -> None:
    record = StepRecord(index=1, name="a", result={"r": 1}, error="e", started_at=1.0)
    for f in fields(StepRecord):
        value = _other(getattr(record, f.name), f.name)
        changed = record.evolve(**{f.name: value})
        for g in fields(StepRecord):
            expected = value if g.name == f.name else getattr(record, g.name)
            assert getattr(changed, g.name) == expected, (f.name, g.name)


def test_instance_evolve_changes_each_field_alone() -> None:
    instance = SagaInstance(
        saga_id="s",
        name="n",
        version=1,
        status=SagaStatus.RUNNING,
        input={"a": 1},
        steps=(StepRecord(index=0, name="a"),),
        business_key="k",
        error="e",
        failed_step="a",
        owner="o",
        fence=1,
        lease_until=2.0,
        revision=3,
    )
    for f in fields(SagaInstance):
        value = _other(getattr(instance, f.name), f.name)
        changed = instance.evolve(**{f.name: value})
        for g in fields(SagaInstance):
            expected = value if g.name == f.name else getattr(instance, g.name)
            assert getattr(changed, g.name) == expected, (f.name, g.name)


def test_with_result_keeps_every_other_field() -> None:
    change = Transition(
        saga_id="s",
        fence=2,
        status=SagaStatus.COMPENSATING,
        revision=4,
        steps=(StepRecord(index=0, name="a"), StepRecord(index=1, name="b")),
        events=(SagaEvent(type="x"),),
        error="e",
        failed_step="a",
        release=True,
        park_until=5.0,
        outbox=(OutboxMessage(step="a", key="k", kind="charge", body={}),),
        at=6.0,
    )
    extra = OutboxMessage(step="b", key="k2", kind="charge", body={"r": 1})
    written = change.with_result(1, {"r": 1}, lambda result: (extra,))
    for f in fields(Transition):
        if f.name not in ("steps", "outbox"):
            assert getattr(written, f.name) == getattr(change, f.name), f.name
    assert written.steps == (change.steps[0], change.steps[1].evolve(result={"r": 1}))
    assert written.outbox == (*change.outbox, extra)
    assert change.with_result(0, 1, None).outbox == change.outbox
