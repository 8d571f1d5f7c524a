"""Errors raised by sagakit.

The hierarchy::

    SagakitError
    ├── StepFailed              a step's definite business rejection (it applied nothing)
    ├── StoreError              the store failed; driver errors are wrapped once, here
    ├── SagaNotFound            no saga instance has that id
    ├── UnknownSaga             no definition of that name is registered
    ├── InvalidTransition       an operator action that the saga's status forbids
    └── BusinessKeyConflict     a business key already started with a different input

    BaseException
    └── LeaseLost               another process now drives the saga; stop at once

``LeaseLost`` derives from ``BaseException`` so that a step's ``except Exception`` cannot
swallow it: a process that lost its lease must stop driving that saga.
"""

from __future__ import annotations


class SagakitError(Exception):
    """A sagakit error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else ""


class StepFailed(SagakitError):
    """The step was rejected for a business reason and applied nothing."""


class StoreError(SagakitError):
    """The saga store failed."""


class SagaNotFound(SagakitError):
    """No saga instance has that id."""


class UnknownSaga(SagakitError):
    """No saga definition of that name is registered."""


class InvalidTransition(SagakitError):
    """The saga's status does not allow this action."""


class BusinessKeyConflict(SagakitError):
    """That business key's saga was started with a different input."""


class LeaseLost(BaseException):  # a signal, not an error: see module docstring
    """Another process has claimed this saga; this one must stop driving it."""


class InvalidInput(SagakitError, ValueError):
    """The input does not fit the saga's input model; nothing was stored."""
