"""The public API, name by name: adding or removing a name is a visible change here."""

from __future__ import annotations

import sagakit

#: Every name ``import sagakit`` exports, written out: a name that leaves ``__all__`` (or
#: joins it) fails the test below until this list says so too.
PUBLIC = [
    "JSON",
    "BusinessKeyConflict",
    "FunctionStep",
    "InvalidInput",
    "InvalidTransition",
    "JSONObject",
    "LeaseLost",
    "MemoryStore",
    "Parallel",
    "RetryPolicy",
    "Saga",
    "SagaEvent",
    "SagaHandle",
    "SagaInstance",
    "SagaNotFound",
    "SagaOrchestrator",
    "SagaQueries",
    "SagaStatus",
    "SagaStore",
    "SagakitError",
    "Sleep",
    "StartResult",
    "Step",
    "StepContext",
    "StepFailed",
    "StepRecord",
    "StepStatus",
    "StoreError",
    "UnknownSaga",
    "WaitFor",
    "Worker",
    "open_store",
    "step",
]


def test_all_is_exactly_the_public_names() -> None:
    """``sagakit.__all__`` is this list: no name more, none less, none twice."""
    assert sorted(sagakit.__all__) == sorted(PUBLIC)
    assert len(set(sagakit.__all__)) == len(sagakit.__all__)


def test_every_public_name_resolves() -> None:
    """Each exported name is an attribute of the package."""
    missing = [name for name in PUBLIC if getattr(sagakit, name, None) is None]
    assert missing == []
