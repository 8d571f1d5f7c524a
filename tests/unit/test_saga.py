"""Saga definitions: what a valid saga is, and what is refused."""

from __future__ import annotations

import pytest

from sagakit.records import JSON
from sagakit.saga import Saga, Step, StepContext


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
