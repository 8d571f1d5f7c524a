"""Fixtures shared by every tier: a saga store of each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagakit.store import MemoryStore, SagaStore
from sagakit.store.sqlite import SqliteStore

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SagaStore]:
    """A fresh, empty store of each backend in turn."""
    backend: SagaStore
    if request.param == "memory":
        backend = MemoryStore()
    else:
        backend = await SqliteStore.open(f"sqlite:///{tmp_path / 'sagas.db'}")
    try:
        yield backend
    finally:
        await backend.close()
