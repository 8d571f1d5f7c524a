"""sagakit: durable sagas for Python.

Define steps (``Step.do`` and ``Step.compensate``), put them in a ``Saga``, and let a
``SagaOrchestrator`` run instances of it durably against a store from ``open_store(url)``.
"""

from sagakit.errors import (
    InvalidTransition,
    LeaseLost,
    SagakitError,
    SagaNotFound,
    StepFailed,
    StoreError,
    UnknownSaga,
)
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import SagaEvent, SagaInstance, SagaStatus, StartResult, StepRecord, StepStatus
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext
from sagakit.store import MemoryStore, SagaQueries, SagaStore, open_store
from sagakit.worker import Worker

__all__ = [
    "InvalidTransition",
    "LeaseLost",
    "MemoryStore",
    "RetryPolicy",
    "Saga",
    "SagaEvent",
    "SagaInstance",
    "SagaNotFound",
    "SagaOrchestrator",
    "SagaQueries",
    "SagaStatus",
    "SagaStore",
    "SagakitError",
    "StartResult",
    "Step",
    "StepContext",
    "StepFailed",
    "StepRecord",
    "StepStatus",
    "StoreError",
    "UnknownSaga",
    "Worker",
    "open_store",
]
