"""Saga definitions: what a valid saga is, and what is refused."""

from __future__ import annotations

import pytest

from sagakit.records import JSON
from sagakit.retry import RetryPolicy
from sagakit.saga import FunctionStep, Saga, Step, StepContext, step


class Named(Step):
    """A step that does nothing, with the name it is given."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def do(self, ctx: StepContext) -> JSON:
        return None


def test_saga_keeps_its_step_names_in_order() -> None:
    """A valid saga exposes its steps' names in the order they were given."""
    saga = Saga("checkout", [Named("payment"), Named("inventory"), Named("shipping")])

    assert saga.step_names == ("payment", "inventory", "shipping")


def test_saga_version_defaults_to_one() -> None:
    """A saga defined without a version is version 1."""
    assert Saga("checkout", [Named("payment")]).version == 1


def test_saga_with_an_empty_name_is_refused() -> None:
    """A saga must have a name."""
    with pytest.raises(ValueError, match="name"):
        Saga("", [Named("payment")])


def test_saga_with_duplicate_step_names_is_refused() -> None:
    """Two steps of one saga may not share a name, since results are keyed by it."""
    with pytest.raises(ValueError, match="unique"):
        Saga("checkout", [Named("payment"), Named("inventory"), Named("payment")])


def test_saga_with_an_unnamed_step_is_refused() -> None:
    """A step that keeps the default empty name is refused."""
    with pytest.raises(ValueError, match="every step needs a name"):
        Saga("checkout", [Named("payment"), Named("")])


def test_saga_without_steps_is_refused() -> None:
    """A saga needs at least one step."""
    with pytest.raises(ValueError, match="every step needs a name"):
        Saga("checkout", [])


def context(name: str, result: JSON = None) -> StepContext:
    """A context for step ``name`` of saga ``s-1``."""
    return StepContext(
        saga_id="s-1",
        saga_name="order",
        step=name,
        input={"amount": 10},
        results={},
        idempotency_key=f"s-1:{name}",
        attempt=1,
        result=result,
    )


async def test_decorated_function_is_a_step_whose_do_runs_it() -> None:
    """``@step`` turns an async function into a named ``Step`` whose ``do`` returns its value."""

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        return {"charged": ctx.input["amount"]}

    assert isinstance(charge, Step)
    assert charge.name == "charge"
    assert await charge.do(context("charge")) == {"charged": 10}
    assert Saga("order", [charge]).step_names == ("charge",)


async def test_decorated_compensation_receives_the_steps_result() -> None:
    """The function given to ``@<step>.compensation`` is the step's undo, and sees its result."""
    refunded: list[JSON] = []

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        return "ch-1"

    @charge.compensation
    async def refund(ctx: StepContext) -> None:
        refunded.append(ctx.result)

    await charge.compensate(context("charge", result="ch-1"))

    assert refunded == ["ch-1"]
    assert charge.undo is refund  # the decorator hands the function back unchanged


async def test_decorated_step_without_compensation_compensates_as_a_no_op() -> None:
    """A function step given no compensation has nothing to undo, and its undo succeeds."""

    @step("notify")
    async def notify(ctx: StepContext) -> JSON:
        return None

    assert notify.undo is None
    await notify.compensate(context("notify"))  # returns without raising


def test_decorated_step_keeps_its_retry_policies_and_timeout() -> None:
    """``step(...)``'s options become the step's retry, compensation retry and timeout."""
    retry = RetryPolicy(max_attempts=5)
    undo_retry = RetryPolicy(max_attempts=7)

    @step("charge", retry=retry, compensation_retry=undo_retry, timeout=None)
    async def charge(ctx: StepContext) -> JSON:
        return None

    assert isinstance(charge, FunctionStep)
    assert (charge.retry, charge.compensation_retry, charge.timeout) == (retry, undo_retry, None)


def test_decorated_step_defaults_match_a_step_class() -> None:
    """Without options a function step retries and times out as a ``Step`` subclass does."""

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        return None

    assert (charge.retry, charge.compensation_retry, charge.timeout) == (
        Step.retry,
        Step.compensation_retry,
        Step.timeout,
    )


def test_second_compensation_for_one_step_is_refused() -> None:
    """A step has one compensation: attaching another raises rather than replacing it."""

    @step("charge")
    async def charge(ctx: StepContext) -> JSON:
        return None

    @charge.compensation
    async def refund(ctx: StepContext) -> None:
        return None

    async def refund_again(ctx: StepContext) -> None:
        return None

    with pytest.raises(ValueError, match="already has a compensation"):
        charge.compensation(refund_again)


def test_plain_def_is_refused_as_a_step() -> None:
    """A synchronous function cannot be a step's action: it is refused when decorated."""

    def charge(ctx: StepContext) -> JSON:
        return None

    with pytest.raises(TypeError, match="async def"):
        step("charge")(charge)  # type: ignore[arg-type]
