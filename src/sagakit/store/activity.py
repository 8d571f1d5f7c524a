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


@dataclass(frozen=True, slots=True, kw_only=True)
class Filters:
    """A listing's filters other than its status (what its counts follow)."""

    name: str | None = None
    business_key: str | None = None
    created_after: float | None = None
    created_before: float | None = None

    @property
    def empty(self) -> bool:
        """Whether no filter is set (the store's own count answers then)."""
        return not (self.name or self.business_key or self.created_after or self.created_before)


COUNT_MATCHING = (
    "SELECT status, count(*) FROM saga_instances"
    " WHERE ({p1} IS NULL OR name = {p1}) AND ({p2} IS NULL OR business_key = {p2})"
    " AND ({p3} IS NULL OR created_at >= {p3}) AND ({p4} IS NULL OR created_at < {p4})"
    " GROUP BY status"
)


async def count_matching(store: SagaStore, filters: Filters) -> dict[SagaStatus, int]:
    """How many sagas match ``filters`` in each status (every status, zeros included)."""
    if filters.empty:
        return await store.count_by_status()
    counts = dict.fromkeys(SagaStatus, 0)
    params = (filters.name, filters.business_key, filters.created_after, filters.created_before)
    kind = type(store).__name__
    db = getattr(store, "db", None)
    if kind == "SqliteStore":
        from sagakit.store.sqlite_db import SqliteDatabase

        assert isinstance(db, SqliteDatabase)
        sql = COUNT_MATCHING.format(p1="?1", p2="?2", p3="?3", p4="?4")

        def work(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            return list(conn.execute(sql, params).fetchall())

        rows = await db.read(work)
    elif kind == "PostgresStore":
        from sagakit.store.postgres_db import PostgresDatabase

        assert isinstance(db, PostgresDatabase)
        sql = COUNT_MATCHING.format(p1="$1::text", p2="$2::text", p3="$3::float8", p4="$4::float8")
        async with db.connection("saga counts") as conn:
            rows = [(r[0], r[1]) for r in await conn.fetch(sql, *params)]
    else:
        rows = await _count_scan(store, filters)
    for status, count in rows:
        counts[SagaStatus(status)] = int(count)
    return counts


async def _count_scan(store: SagaStore, filters: Filters) -> list[tuple[str, int]]:
    tally: dict[str, int] = {}
    cursor: str | None = None
    while True:
        page = await store.list_sagas(
            name=filters.name,
            business_key=filters.business_key,
            created_after=filters.created_after,
            created_before=filters.created_before,
            limit=500,
            cursor=cursor,
        )
        for saga in page.sagas:
            tally[saga.status.value] = tally.get(saga.status.value, 0) + 1
        cursor = page.next_cursor
        if cursor is None:
            return list(tally.items())
