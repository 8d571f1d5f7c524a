"""A transition with more step rows and events than one statement holds is written whole,
in order, on every backend (SQLite writes them ``ROWS_PER_STATEMENT`` rows a statement)."""

from __future__ import annotations

from sagakit.records import SagaEvent, SagaInstance, SagaStatus, StepRecord, StepStatus, Transition
from sagakit.store import SagaStore
from sagakit.store.sqlite import ROWS_PER_STATEMENT

STEPS = 2 * ROWS_PER_STATEMENT + 17


async def test_a_transition_of_hundreds_of_rows_is_written_whole_and_in_order(
    store: SagaStore,
) -> None:
    rows = tuple(StepRecord(index=i, name=f"s{i}") for i in range(STEPS))
    saga = SagaInstance(
        saga_id="many",
        name="many",
        version=1,
        status=SagaStatus.RUNNING,
        input={},
        steps=rows,
        owner="me",
        fence=1,
    )
    started = await store.start(saga, SagaEvent(type="saga_started"), lease_seconds=60)
    done = tuple(
        r.evolve(status=StepStatus.SUCCEEDED, attempts=1, result={"i": r.index}, finished_at=1.5)
        for r in rows
    )
    events = tuple(
        SagaEvent(type="step_succeeded", step=r.name, attempt=1, at=1000.0 + r.index / 7)
        for r in rows
    )
    change = Transition(
        saga_id="many",
        fence=started.instance.fence,
        revision=started.instance.revision,
        status=SagaStatus.COMPLETED,
        steps=done,
        events=events,
        release=True,
    )
    await store.transition(change)
    kept = await store.get("many")
    assert kept is not None
    assert kept.steps == done
    assert kept.status is SagaStatus.COMPLETED
    assert (await store.events("many"))[1:] == list(events)
