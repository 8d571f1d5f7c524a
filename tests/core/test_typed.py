"""Typed sagas: a pydantic input validated at start, models in the steps, JSON in the store."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from sagakit import (
    JSON,
    InvalidInput,
    Saga,
    SagaOrchestrator,
    SagaStatus,
    StepContext,
    StepFailed,
    step,
)


class Order(BaseModel):
    """A typed saga's input."""

    order_id: str
    total: int = Field(gt=0)
    address: str = ""


class Charge(BaseModel):
    """A typed step's result."""

    charge_id: str
    amount: int


def order_saga(seen: list[object]) -> Saga:
    """Charge (typed result), then ship (refuses an empty address); ``seen`` gets the models."""

    @step("charge", result=Charge)
    async def charge(ctx: StepContext[Order]) -> Charge:
        seen.append(ctx.input)
        return Charge(charge_id=f"ch-{ctx.input.order_id}", amount=ctx.input.total)

    @charge.compensation
    async def refund(ctx: StepContext[Order, Charge]) -> None:
        seen.append(ctx.result)

    @step("ship")
    async def ship(ctx: StepContext[Order]) -> JSON:
        if not ctx.input.address:
            raise StepFailed("Invalid shipping address")
        return {"to": ctx.input.address}

    return Saga("order", [charge, ship], input=Order)


async def test_a_typed_saga_gives_models_to_its_steps_and_stores_json(store_url: str) -> None:
    """``ctx.input`` and ``ctx.result`` are models; the store holds their JSON."""
    seen: list[object] = []
    async with SagaOrchestrator.connect(store_url, [order_saga(seen)]) as orchestrator:
        handle = await orchestrator.start("order", Order(order_id="o1", total=20))
        done = await handle.result(timeout=10)
    assert done.status is SagaStatus.COMPENSATED  # no address: shipping refused
    assert done.input == {"order_id": "o1", "total": 20, "address": ""}
    assert done.results()["charge"] == {"charge_id": "ch-o1", "amount": 20}
    assert seen == [Order(order_id="o1", total=20), Charge(charge_id="ch-o1", amount=20)]


async def test_a_dict_input_is_validated_and_stored_with_its_defaults(store_url: str) -> None:
    """A dict that fits the model starts the saga; what is stored is the model's JSON."""
    async with SagaOrchestrator.connect(store_url, [order_saga([])]) as orchestrator:
        handle = await orchestrator.start("order", {"order_id": "o2", "total": "5", "address": "x"})
        done = await handle.result(timeout=10)
    assert done.status is SagaStatus.COMPLETED
    assert done.input == {"order_id": "o2", "total": 5, "address": "x"}


async def test_an_invalid_input_raises_and_stores_nothing(store_url: str) -> None:
    """Bad input: ``InvalidInput`` naming the field, and no saga in the store."""
    async with SagaOrchestrator.connect(store_url, [order_saga([])]) as orchestrator:
        with pytest.raises(InvalidInput, match=r"saga 'order' is invalid: total: Input should be"):
            await orchestrator.start("order", {"order_id": "o3", "total": 0}, business_key="o3")
        with pytest.raises(InvalidInput, match="order_id: Field required"):
            await orchestrator.start("order", {"total": 3}, business_key="o3")
        assert await orchestrator.store.latest_by_key("order", "o3") is None


async def test_a_result_that_does_not_fit_its_model_fails_the_step(store_url: str) -> None:
    """A typed step returning the wrong shape: its attempts fail, the saga compensates."""

    @step("charge", result=Charge)
    async def charge(ctx: StepContext) -> Charge:
        return {"charge_id": 7}  # type: ignore[return-value]  # wrong on purpose

    async with SagaOrchestrator.connect(store_url, [Saga("bad", [charge])]) as orchestrator:
        done = await (await orchestrator.start("bad", {})).result(timeout=30)
    assert done.status is SagaStatus.COMPENSATED
    assert "the result does not fit Charge: charge_id: Input should be a valid string" in (
        done.error or ""
    )


async def test_an_untyped_saga_takes_a_model_as_its_json() -> None:
    """JSON sagas are unchanged, and accept a model for convenience (stored as its JSON)."""
    inputs: list[object] = []

    @step("note")
    async def note(ctx: StepContext) -> JSON:
        inputs.append(ctx.input)
        return None

    async with SagaOrchestrator.connect("memory://", [Saga("plain", [note])]) as orchestrator:
        done = await (await orchestrator.start("plain", Order(order_id="o", total=1))).result(5)
    assert inputs == [{"order_id": "o", "total": 1, "address": ""}]
    assert done.status is SagaStatus.COMPLETED


def test_a_step_cannot_serve_two_input_models() -> None:
    """One ``@step`` in sagas of different input models is refused when the second is made."""

    @step("shared")
    async def shared(ctx: StepContext) -> JSON:
        return None

    Saga("one", [shared], input=Order)
    with pytest.raises(ValueError, match="already in a saga with another input model"):
        Saga("two", [shared], input=Charge)
