"""Starting sagas as a library does: from a URL, by business key, and through a handle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagakit.errors import BusinessKeyConflict, StepFailed
from sagakit.handle import SagaHandle
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, SagaStatus, StartResult
from sagakit.saga import Saga, StepContext, step
from sagakit.store import SagaStore


@step("reserve")
async def reserve(ctx: StepContext) -> JSON:
    """Reserve the order's items; refuse an order flagged ``refuse``."""
    if ctx.input.get("refuse"):
        raise StepFailed("Not enough stock")
    return {"reserved": ctx.input["items"]}


ORDER = Saga("order", [reserve])


class Gate:
    """A one-step saga whose step waits until the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

        @step("wait")
        async def wait(ctx: StepContext) -> JSON:
            await self.open.wait()
            return None

        self.saga = Saga("gated", [wait])


@pytest.fixture
async def orchestrator(store: SagaStore) -> AsyncIterator[SagaOrchestrator]:
    """An orchestrator of the ``order`` saga on each backend in turn."""
    made = SagaOrchestrator(store, [ORDER])
    try:
        yield made
    finally:
        await made.shutdown(grace=1.0)


async def test_from_url_opens_the_store_and_close_leaves_the_saga_durable(tmp_path: Path) -> None:
    """An orchestrator from a SQLite URL runs a saga; after ``close`` a new one reads it back."""
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    first = await SagaOrchestrator.from_url(url, [ORDER])
    handle = await first.start("order", {"items": ["i1"]}, business_key="o-1")
    assert (await handle.result(timeout=5)).status is SagaStatus.COMPLETED
    await first.close()

    second = await SagaOrchestrator.from_url(url, [ORDER])
    try:
        again = await second.start("order", {"items": ["i1"]}, business_key="o-1")
        assert not again.created
        assert again.saga_id == handle.saga_id
        assert again.instance.results() == {"reserve": {"reserved": ["i1"]}}
    finally:
        await second.close()


async def test_start_again_with_the_same_key_and_input_returns_the_same_saga(
    orchestrator: SagaOrchestrator,
) -> None:
    """The same business key and an equal input give back the first saga, without a new one."""
    first = await orchestrator.start("order", {"items": ["i1", "i2"]}, business_key="o-1")
    await first.result(timeout=5)
    second = await orchestrator.start("order", {"items": ["i1", "i2"]}, business_key="o-1")

    assert (first.created, second.created) == (True, False)
    assert second.saga_id == first.saga_id
    page = await orchestrator.store.list_sagas(business_key="o-1")
    assert len(page.sagas) == 1


async def test_start_again_with_the_same_key_and_another_input_is_refused(
    orchestrator: SagaOrchestrator,
) -> None:
    """A business key reused with a different input raises ``BusinessKeyConflict``."""
    first = await orchestrator.start("order", {"items": ["i1"]}, business_key="o-1")
    await first.result(timeout=5)

    with pytest.raises(BusinessKeyConflict, match=first.saga_id):
        await orchestrator.start("order", {"items": ["i2"]}, business_key="o-1")

    page = await orchestrator.store.list_sagas(business_key="o-1")
    assert [s.input for s in page.sagas] == [{"items": ["i1"]}]


async def test_key_whose_saga_is_running_refuses_another_input_too(store: SagaStore) -> None:
    """While the key's saga still runs, a start with another input is refused as well."""
    gate = Gate()
    orchestrator = SagaOrchestrator(store, [gate.saga])
    try:
        running = await orchestrator.start("gated", {"n": 1}, business_key="k")
        with pytest.raises(BusinessKeyConflict):
            await orchestrator.start("gated", {"n": 2}, business_key="k")
        gate.open.set()
        assert (await running.result(timeout=5)).status is SagaStatus.COMPLETED
    finally:
        await orchestrator.shutdown(grace=1.0)


async def test_key_whose_saga_was_compensated_starts_anew_with_another_input(
    orchestrator: SagaOrchestrator,
) -> None:
    """After a key's saga ended ``compensated``, a new input starts a new saga, not a conflict."""
    refused = await orchestrator.start("order", {"items": [], "refuse": True}, business_key="o-1")
    assert (await refused.result(timeout=5)).status is SagaStatus.COMPENSATED

    retried = await orchestrator.start("order", {"items": ["i1"]}, business_key="o-1")

    assert retried.created
    assert retried.saga_id != refused.saga_id
    assert (await retried.result(timeout=5)).status is SagaStatus.COMPLETED


async def test_handle_is_a_start_result_with_the_outcome_to_await(
    orchestrator: SagaOrchestrator,
) -> None:
    """``start`` gives a ``SagaHandle``, a ``StartResult`` whose ``result`` awaits the end."""
    handle = await orchestrator.start("order", {"items": ["i1"]})

    assert isinstance(handle, SagaHandle)
    assert isinstance(handle, StartResult)
    ended = await handle.result(timeout=5)
    assert ended.saga_id == handle.saga_id == handle.instance.saga_id
    assert ended.status is SagaStatus.COMPLETED


async def test_handle_result_times_out_while_the_saga_still_runs() -> None:
    """``result(timeout=...)`` raises ``TimeoutError`` when the saga has not ended in time."""
    gate = Gate()
    orchestrator = await SagaOrchestrator.from_url("memory://", [gate.saga])
    try:
        handle = await orchestrator.start("gated", {})
        with pytest.raises(TimeoutError, match="still running"):
            await handle.result(timeout=0.05)
        gate.open.set()
        assert (await handle.result(timeout=5)).status is SagaStatus.COMPLETED
    finally:
        await orchestrator.close()
