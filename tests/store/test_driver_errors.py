"""Every error of the PostgreSQL driver becomes ``StoreError`` at the store's boundary."""

from __future__ import annotations

import asyncpg
import pytest

from sagakit.errors import StoreError
from sagakit.store.postgres_db import wrapped_errors

DRIVER_FAILURES = [
    asyncpg.InternalClientError("cannot switch to state 15"),
    asyncpg.exceptions.ProtocolError("unexpected message"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    ConnectionResetError("reset by peer"),
    TimeoutError(),
]


@pytest.mark.parametrize("failure", DRIVER_FAILURES, ids=lambda e: type(e).__name__)
def test_a_driver_error_becomes_a_store_error(failure: Exception) -> None:
    """Raised inside ``wrapped_errors`` it comes out as ``StoreError`` naming the action."""
    with (
        pytest.raises(StoreError, match="PostgreSQL checkout failed") as caught,
        wrapped_errors("checkout"),
    ):
        raise failure
    assert caught.value.__cause__ is failure
