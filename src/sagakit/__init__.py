"""sagakit: durable sagas for Python.

Define steps (``Step.do`` and ``Step.compensate``, or functions decorated with ``@step``),
put them in a ``Saga``, and let a ``SagaOrchestrator`` run instances of it durably against a
store from ``open_store(url)`` (or ``SagaOrchestrator.from_url(url, sagas)``).

Beside this module: ``sagakit.fastapi`` (a lifespan and a dependency for an existing app)
and ``sagakit.testing`` (a fake clock, crash points and an effect ledger for your tests).
"""

from sagakit.errors import (
    BusinessKeyConflict,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    SagakitError,
    SagaNotFound,
    StepFailed,
    StoreError,
    UnknownSaga,
)
from sagakit.handle import SagaHandle
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import (
    JSON,
    JSONObject,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StartResult,
    StepRecord,
    StepStatus,
)
from sagakit.retry import RetryPolicy
from sagakit.saga import (
    FunctionStep,
    Parallel,
    Saga,
    Sleep,
    Step,
    StepContext,
    WaitFor,
    step,
)
from sagakit.store import MemoryStore, SagaQueries, SagaStore, open_store
from sagakit.worker import Worker

__all__ = [
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
