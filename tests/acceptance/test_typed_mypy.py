"""mypy sees a typed saga's models: ``ctx.input``, ``ctx.result`` and a step's return."""

from __future__ import annotations

from pathlib import Path

from mypy import api

HEADER = """
from pydantic import BaseModel
from sagakit import Saga, StepContext, step

class Order(BaseModel):
    total: int

class Charge(BaseModel):
    amount: int
"""

RIGHT = """
@step("charge", result=Charge)
async def charge(ctx: StepContext[Order]) -> Charge:
    return Charge(amount=ctx.input.total)

@charge.compensation
async def refund(ctx: StepContext[Order, Charge]) -> None:
    if ctx.result is not None:
        print(ctx.result.amount + ctx.input.total)

SAGA = Saga("order", [charge], input=Order)
"""

WRONG = """
@step("charge", result=Charge)
async def charge(ctx: StepContext[Order]) -> str:
    return str(ctx.input.totl)

@charge.compensation
async def refund(ctx: StepContext[Order, Charge]) -> None:
    print(ctx.result.amount)
"""


def _mypy(tmp_path: Path, body: str) -> list[str]:
    source = tmp_path / "app.py"
    source.write_text(HEADER + body)
    out, _, _ = api.run(
        ["--strict", "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(source)]
    )
    return [line.split(": error: ", 1)[1] for line in out.splitlines() if ": error: " in line]


def test_mypy_accepts_a_typed_saga_used_as_typed(tmp_path: Path) -> None:
    """Models read and returned as declared: no error under ``--strict``."""
    assert _mypy(tmp_path, RIGHT) == []


def test_mypy_refuses_a_wrong_field_a_wrong_result_and_an_unchecked_result(
    tmp_path: Path,
) -> None:
    """A misspelt input field, a result not of the model, a result that may be None."""
    errors = "\n".join(_mypy(tmp_path, WRONG))

    assert '"Order" has no attribute "totl"' in errors
    assert "Coroutine[Any, Any, str]" in errors  # the action must return a Charge
    assert 'Item "None" of "Charge | None" has no attribute "amount"' in errors
