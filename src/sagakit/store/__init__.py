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
    if url.startswith(("postgresql:", "postgres:")):
        from sagakit.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    scheme = url.split(":", 1)[0]
    raise StoreError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///, postgresql:// or memory://"
    )


__all__ = ["MemoryStore", "SagaPage", "SagaQueries", "SagaStore", "open_store"]
