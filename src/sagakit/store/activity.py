"""Stuck sagas: which active sagas nobody is moving, and how old the oldest active one is.

An active saga (``running`` or ``compensating``) is **stuck** when

- its lease expired more than ``grace`` seconds ago and no process has taken it (a live
  worker takes an expired lease within its poll interval, renewing it), or
- it made no progress (no transition recorded) for ``stuck_after`` seconds, unless it is
  parked: waiting for a signal or a timer, with no owner, until a deadline still ahead.

The same rule is applied in Python (:func:`stuck_reason`, for one saga) and in SQL (for the
metrics, over every active saga at once).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sagakit.records import SagaInstance, SagaStatus
from sagakit.settings import Settings
from sagakit.store.base import SagaStore


@dataclass(frozen=True, slots=True)
class StuckRule:
    """When an active saga counts as stuck."""

    stuck_after: float = 300.0
    grace: float = 5.0


def stuck_rule(settings: Settings) -> StuckRule:
    """When an active saga counts as stuck, by these settings (the grace: three polls)."""
    return StuckRule(
        stuck_after=settings.stuck_after_seconds, grace=max(5.0, 3 * settings.poll_seconds)
    )


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def stuck_reason(saga: SagaInstance, now: float, rule: StuckRule) -> str | None:
    """Why ``saga`` is stuck, or ``None`` when it is not (or not active)."""
    if not saga.status.is_active:
        return None
    lease = saga.lease_until
    if saga.owner is not None and lease is not None and lease < now - rule.grace:
        return f"the lease of {saga.owner} expired at {_iso(lease)} and no process has taken it"
    parked = saga.owner is None and lease is not None and lease >= now
    if not parked and saga.updated_at < now - rule.stuck_after:
        return f"no progress since {_iso(saga.updated_at)}"
    return None


@dataclass(frozen=True, slots=True)
class Activity:
    """Active sagas at one moment: the oldest one's start and the stuck ones per name."""

    oldest_created_at: float | None = None
    stuck_by_name: dict[str, int] = field(default_factory=dict)


STUCK_SQL = (
    "(owner IS NOT NULL AND lease_until < {now} - {grace})"
    " OR (updated_at < {now} - {after}"
    "     AND NOT (owner IS NULL AND lease_until IS NOT NULL AND lease_until >= {now}))"
)
ACTIVE = "status IN ('running', 'compensating')"


def _sql(now: str, grace: str, after: str) -> str:
    stuck = STUCK_SQL.format(now=now, grace=grace, after=after)
    return (
        f"SELECT name, min(created_at), sum(CASE WHEN {stuck} THEN 1 ELSE 0 END)"
        f" FROM saga_instances WHERE {ACTIVE} GROUP BY name"
    )


def _activity(rows: list[tuple[str, float, int]]) -> Activity:
    if not rows:
        return Activity()
    return Activity(
        oldest_created_at=min(float(r[1]) for r in rows),
        stuck_by_name={str(r[0]): int(r[2]) for r in rows},
    )


async def activity(store: SagaStore, now: float, rule: StuckRule) -> Activity:
    """The oldest active saga's start and the stuck sagas per name, read from ``store``."""
    kind = type(store).__name__
    db = getattr(store, "db", None)
    if kind == "SqliteStore":
        from sagakit.store.sqlite_db import SqliteDatabase

        assert isinstance(db, SqliteDatabase)
        sql = _sql("?1", "?2", "?3")

        def work(conn: sqlite3.Connection) -> list[tuple[str, float, int]]:
            return list(conn.execute(sql, (now, rule.grace, rule.stuck_after)).fetchall())

        return _activity(await db.read(work))
    if kind == "PostgresStore":
        from sagakit.store.postgres_db import PostgresDatabase

        assert isinstance(db, PostgresDatabase)
        sql = _sql("$1::float8", "$2::float8", "$3::float8")
        async with db.connection("stuck sagas") as conn:
            rows = await conn.fetch(sql, now, rule.grace, rule.stuck_after)
        return _activity([(r[0], r[1], r[2]) for r in rows])
    return await _scan(store, now, rule)


async def _scan(store: SagaStore, now: float, rule: StuckRule) -> Activity:
    """The same answer from the store's listing (the memory store)."""
    oldest: float | None = None
    stuck: dict[str, int] = {}
    for status in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
        cursor: str | None = None
        while True:
            page = await store.list_sagas(status=status, limit=500, cursor=cursor)
            for saga in page.sagas:
                oldest = saga.created_at if oldest is None else min(oldest, saga.created_at)
                stuck[saga.name] = stuck.get(saga.name, 0) + (
                    stuck_reason(saga, now, rule) is not None
                )
            cursor = page.next_cursor
            if cursor is None:
                break
    return Activity(oldest_created_at=oldest, stuck_by_name=stuck)
