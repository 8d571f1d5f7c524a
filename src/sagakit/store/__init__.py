"""Saga stores: the seam (``SagaStore``, ``SagaQueries``) and ``open_store(url)``."""

from __future__ import annotations

from sagakit.errors import StoreError
from sagakit.store.base import SagaPage, SagaQueries, SagaStore
from sagakit.store.memory import MemoryStore


async def open_store(url: str) -> SagaStore:
    """The store that ``url`` names: ``memory://``, ``sqlite:///path`` or ``postgresql://``.

    Drivers are imported only when their URL is used.
    """
    if url.startswith("memory:"):
        return MemoryStore()
    if url.startswith("sqlite:"):
        from sagakit.store.sqlite import SqliteStore

        return await SqliteStore.open(url)
    raise StoreError(
        f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite:/// or memory://"
    )


__all__ = ["MemoryStore", "SagaPage", "SagaQueries", "SagaStore", "open_store"]
