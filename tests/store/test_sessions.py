"""The session table on every store: kept, found until expiry, removed, pruned."""

from __future__ import annotations

from sagakit.store import SagaStore
from sagakit.store.sessions import SessionRecord, open_sessions


def record(digest: str, *, credential: str = "c1", expires_at: float = 200.0) -> SessionRecord:
    """A session row."""
    return SessionRecord(
        id_digest=digest,
        role="admin",
        label=digest[:8],
        credential=credential,
        created_at=100.0,
        expires_at=expires_at,
    )


async def test_a_session_is_found_until_it_expires_and_not_after_removal(
    store: SagaStore,
) -> None:
    """``find`` answers before ``expires_at`` only; ``remove`` ends it at once."""
    sessions = await open_sessions(store)
    await sessions.add(record("a" * 64))

    assert await sessions.find("a" * 64, now=199.9) == record("a" * 64)
    assert await sessions.find("a" * 64, now=200.0) is None
    assert await sessions.find("b" * 64, now=150.0) is None
    await sessions.remove("a" * 64)
    assert await sessions.find("a" * 64, now=150.0) is None


async def test_prune_drops_expired_sessions_and_those_of_other_credentials(
    store: SagaStore,
) -> None:
    """Only live sessions opened with a credential still valid survive ``prune``."""
    sessions = await open_sessions(store)
    await sessions.add(record("live"))
    await sessions.add(record("old", expires_at=120.0))
    await sessions.add(record("stale", credential="c0"))

    assert await sessions.prune({"c1"}, now=150.0) == 2
    assert await sessions.find("live", now=150.0) is not None
    assert await sessions.find("stale", now=150.0) is None
    assert await sessions.prune(set(), now=150.0) == 1
    assert await sessions.find("live", now=150.0) is None
