"""The SQLite store, sagakit's embedded default.

SQL lives in named constants; the PostgreSQL store uses the same names, so the two files
read side by side. Every write goes through :class:`SqliteDatabase`'s group commit.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson

from sagakit.errors import InvalidTransition, LeaseLost, SagaNotFound, StepFailed, StoreError
from sagakit.records import (
    JSON,
    OutboxMessage,
    Outgoing,
    Plan,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StartResult,
    StepRecord,
    StepStatus,
    Transition,
    now,
)
from sagakit.store.base import SagaPage, run_plan
from sagakit.store.sqlite_db import SqliteDatabase, path_from_url
from sagakit.store.sqlite_messages import SqliteMessages

#: A row as the driver returns it; its columns are typed where it is turned into a record.
Row: TypeAlias = tuple[Any, ...]

INSTANCE_COLUMNS: Final = (
    "saga_id, name, version, status, input, business_key, error, failed_step,"
    " created_at, updated_at, owner, fence, lease_until, cancel_requested, revision"
)
SELECT_INSTANCE: Final = f"SELECT {INSTANCE_COLUMNS} FROM saga_instances WHERE saga_id = ?"
SELECT_STEPS: Final = (
    "SELECT idx, name, status, attempts, compensation_attempts, result, error,"
    " started_at, finished_at FROM saga_steps WHERE saga_id = ? ORDER BY idx"
)
SELECT_EVENTS: Final = (
    "SELECT at, type, step, attempt, detail FROM saga_events WHERE saga_id = ? ORDER BY id"
)
SELECT_LATEST_BY_KEY: Final = (
    f"SELECT {INSTANCE_COLUMNS} FROM saga_instances"
    " WHERE name = ? AND business_key = ? ORDER BY seq DESC LIMIT 1"
)
SELECT_PAGE: Final = (
    f"SELECT seq, {INSTANCE_COLUMNS} FROM saga_instances"
    " WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR seq < ?2)"
    " AND (?3 IS NULL OR name = ?3) AND (?4 IS NULL OR business_key = ?4)"
    " AND (?5 IS NULL OR created_at >= ?5) AND (?6 IS NULL OR created_at < ?6)"
    " ORDER BY seq DESC LIMIT ?7"
)
COUNT_BY_STATUS: Final = "SELECT status, count(*) FROM saga_instances GROUP BY status"
INSERT_INSTANCE: Final = (
    f"INSERT INTO saga_instances ({INSTANCE_COLUMNS}) VALUES ({', '.join('?' * 15)})"
)
INSERT_STEP: Final = (
    "INSERT INTO saga_steps (saga_id, idx, name, status, attempts, compensation_attempts,"
    " result, error, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: ``INSERT_STEP`` with any number of rows (see ``_insert_many``).
INSERT_STEPS: Final = (
    "INSERT INTO saga_steps (saga_id, idx, name, status, attempts, compensation_attempts,"
    " result, error, started_at, finished_at)"
)
#: The rows a transition overwrites, in one statement: every one exists (the start inserted
#: each step's row), so the conflict clause is what runs; ``name`` never changes.
UPSERT_STEPS: Final = (
    " ON CONFLICT (saga_id, idx) DO UPDATE SET status = excluded.status,"
    " attempts = excluded.attempts, compensation_attempts = excluded.compensation_attempts,"
    " result = excluded.result, error = excluded.error, started_at = excluded.started_at,"
    " finished_at = excluded.finished_at"
)
#: ``INSERT_EVENT`` with any number of rows (see ``_insert_many``).
INSERT_EVENTS: Final = "INSERT INTO saga_events (saga_id, at, type, step, attempt, detail)"
#: Rows per statement of ``_insert_many`` at most (well below SQLite's oldest limits on
#: bound parameters and on the rows of a VALUES clause).
ROWS_PER_STATEMENT: Final = 100
INSERT_EVENT: Final = (
    "INSERT INTO saga_events (saga_id, at, type, step, attempt, detail) VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_OUTBOX: Final = (
    "INSERT INTO saga_outbox (saga_id, step, key, kind, body, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)
UPDATE_FENCED: Final = (
    "UPDATE saga_instances SET status = ?, error = ?, failed_step = ?, updated_at = ?,"
    " owner = CASE WHEN ? OR ? IS NOT NULL THEN NULL ELSE owner END,"
    " lease_until = CASE WHEN ? THEN NULL ELSE coalesce(?, lease_until) END"
    ", revision = revision + 1"
    " WHERE saga_id = ? AND fence = ? AND revision = ? RETURNING cancel_requested"
)
CLAIM: Final = (
    "UPDATE saga_instances SET owner = ?1, fence = fence + 1, lease_until = ?2 + ?3"
    " WHERE saga_id = ?4 AND status IN ('running', 'compensating')"
    " AND (lease_until IS NULL OR lease_until < ?2)"
    f" RETURNING {INSTANCE_COLUMNS}"
)
CLAIM_EXPIRED: Final = (
    "UPDATE saga_instances SET owner = ?1, fence = fence + 1, lease_until = ?2 + ?3"
    " WHERE seq IN (SELECT seq FROM saga_instances"
    "   WHERE status IN ('running', 'compensating')"
    "   AND (lease_until IS NULL OR lease_until < ?2)"
    "   AND (?5 IS NULL OR name || ':' || version IN (SELECT value FROM json_each(?5)))"
    "   ORDER BY lease_until LIMIT ?4)"
    f" RETURNING {INSTANCE_COLUMNS}"
)
RENEW: Final = (
    "UPDATE saga_instances SET lease_until = ?1 + ?2"
    " WHERE owner = ?3 AND status IN ('running', 'compensating')"
    " AND (?4 IS NULL OR saga_id IN (SELECT value FROM json_each(?4)))"
)
RELEASE: Final = "UPDATE saga_instances SET owner = NULL, lease_until = NULL WHERE owner = ?"
REOPEN: Final = (
    "UPDATE saga_instances SET status = 'compensating', owner = ?1, fence = fence + 1,"
    " lease_until = ?2 + ?3, updated_at = ?2, revision = revision + 1"
    " WHERE saga_id = ?4 AND status = 'failed'"
    f" RETURNING {INSTANCE_COLUMNS}"
)
REQUEST_CANCEL: Final = (
    "UPDATE saga_instances SET cancel_requested = 1, updated_at = ?1"
    " WHERE saga_id = ?2 AND status = 'running'"
    f" RETURNING {INSTANCE_COLUMNS}"
)
RESOLVE: Final = (
    "UPDATE saga_instances SET status = 'compensated', updated_at = ?1, revision = revision + 1"
    " WHERE saga_id = ?2 AND status = 'failed'"
    f" RETURNING {INSTANCE_COLUMNS}"
)
INSERT_SIGNAL: Final = (
    "INSERT INTO saga_signals (saga_id, name, payload, at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (saga_id, name) DO NOTHING"
)
SELECT_SIGNALS: Final = "SELECT name, payload FROM saga_signals WHERE saga_id = ?"
WAKE: Final = (
    "UPDATE saga_instances SET lease_until = NULL"
    " WHERE saga_id = ? AND owner IS NULL AND status = 'running'"
)
RESET_COMPENSATION_ATTEMPTS: Final = (
    "UPDATE saga_steps SET compensation_attempts = 0 WHERE saga_id = ? AND status = 'compensating'"
)


@functools.lru_cache(maxsize=256)
def _values(head: str, width: int, rows: int, tail: str) -> str:
    """``head VALUES (?, ...), ... tail`` for ``rows`` rows of ``width`` values."""
    row = f"({', '.join('?' * width)})"
    return f"{head} VALUES {', '.join([row] * rows)}{tail}"


def _insert_many(
    conn: sqlite3.Connection, head: str, rows: Sequence[tuple[object, ...]], tail: str = ""
) -> None:
    """Insert ``rows`` with one statement (per ``ROWS_PER_STATEMENT``) rather than
    ``executemany``'s one per row: the writer thread drops and retakes the GIL around each
    statement it runs, and waits for it whenever the event loop holds it."""
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        params = [value for row in chunk for value in row]
        conn.execute(_values(head, len(chunk[0]), len(chunk), tail), params)


def _dump(value: JSON) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load(text: str | None) -> JSON:
    return None if text is None else orjson.loads(text)


def _instance(row: Row, steps: tuple[StepRecord, ...]) -> SagaInstance:
    return SagaInstance(
        saga_id=row[0],
        name=row[1],
        version=row[2],
        status=SagaStatus(row[3]),
        input=orjson.loads(row[4]),
        steps=steps,
        business_key=row[5],
        error=row[6],
        failed_step=row[7],
        created_at=row[8],
        updated_at=row[9],
        owner=row[10],
        fence=row[11],
        lease_until=row[12],
        cancel_requested=bool(row[13]),
        revision=row[14],
    )


def _step(row: Row) -> StepRecord:
    return StepRecord(
        index=row[0],
        name=row[1],
        status=StepStatus(row[2]),
        attempts=row[3],
        compensation_attempts=row[4],
        result=_load(row[5]),
        error=row[6],
        started_at=row[7],
        finished_at=row[8],
    )


def _load_instance(conn: sqlite3.Connection, row: Row) -> SagaInstance:
    steps = tuple(_step(r) for r in conn.execute(SELECT_STEPS, (row[0],)))
    return _instance(row, steps)


def _event_row(saga_id: str, e: SagaEvent) -> tuple[object, ...]:
    return (saga_id, e.at, e.type, e.step, e.attempt, e.detail)


class SqliteStore(SqliteMessages):
    """A :class:`~sagakit.store.base.SagaStore` in one SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @classmethod
    async def open(cls, url: str, *, synchronous: str = "FULL") -> SqliteStore:
        """Open (creating and migrating) the database that ``url`` names."""
        db = SqliteDatabase(path_from_url(url), synchronous=synchronous)
        await asyncio.to_thread(db.migrate, "sagas", "sagakit.store.migrations.sqlite")
        db.start()
        return cls(db)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, saga_id: str) -> SagaInstance | None:
        def work(conn: sqlite3.Connection) -> SagaInstance | None:
            row = conn.execute(SELECT_INSTANCE, (saga_id,)).fetchone()
            return None if row is None else _load_instance(conn, row)

        return await self.db.read(work)

    async def events(self, saga_id: str) -> list[SagaEvent]:
        def work(conn: sqlite3.Connection) -> list[SagaEvent]:
            return [
                SagaEvent(at=at, type=type_, step=step, attempt=attempt, detail=detail)
                for at, type_, step, attempt, detail in conn.execute(SELECT_EVENTS, (saga_id,))
            ]

        return await self.db.read(work)

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        name: str | None = None,
        business_key: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SagaPage:
        below = int(cursor) if cursor else None
        params = (
            status.value if status else None,
            below,
            name,
            business_key,
            created_after,
            created_before,
            limit + 1,
        )

        def work(conn: sqlite3.Connection) -> SagaPage:
            rows = conn.execute(SELECT_PAGE, params).fetchall()
            sagas = tuple(_load_instance(conn, row[1:]) for row in rows[:limit])
            more = len(rows) > limit
            return SagaPage(sagas=sagas, next_cursor=str(rows[limit - 1][0]) if more else None)

        return await self.db.read(work)

    async def latest_by_key(self, name: str, business_key: str) -> SagaInstance | None:
        def work(conn: sqlite3.Connection) -> SagaInstance | None:
            row = conn.execute(SELECT_LATEST_BY_KEY, (name, business_key)).fetchone()
            return None if row is None else _load_instance(conn, row)

        return await self.db.read(work)

    async def count_by_status(self) -> dict[SagaStatus, int]:
        def work(conn: sqlite3.Connection) -> dict[SagaStatus, int]:
            counts = dict.fromkeys(SagaStatus, 0)
            for status, count in conn.execute(COUNT_BY_STATUS):
                counts[SagaStatus(status)] = count
            return counts

        return await self.db.read(work)

    async def ping(self) -> None:
        await self.db.read(lambda conn: conn.execute("SELECT 1").fetchone())

    # -- writes --------------------------------------------------------------------------

    async def start(
        self,
        instance: SagaInstance,
        event: SagaEvent,
        *,
        lease_seconds: float,
        outbox: tuple[OutboxMessage, ...] = (),
    ) -> StartResult:
        return await self.db.write(
            lambda conn: _insert_instance(conn, instance, event, lease_seconds, outbox)
        )

    async def start_unit(
        self, instance: SagaInstance, event: SagaEvent, *, lease_seconds: float, plan: Plan
    ) -> StartResult:
        def work(conn: sqlite3.Connection) -> StartResult | BaseException:
            # A savepoint around it all: a plan that raises (a bug, a test's simulated
            # crash) undoes every action and the saga's insert, and only this job's.
            actions = _UnitActions(self.db, conn)
            actions.savepoints.execute("SAVEPOINT unit")
            try:
                holder = _key_holder(conn, instance)
                if holder is not None:
                    actions.savepoints.execute("RELEASE unit")
                    return holder
                stored = instance.evolve(lease_until=now() + lease_seconds)
                written = run_plan(plan, actions.run)
                # The saga is inserted once, as the unit left it: no insert then update.
                _insert_rows(conn, stored, event, written)
            except BaseException as error:
                actions.savepoints.execute("ROLLBACK TO unit")
                actions.savepoints.execute("RELEASE unit")
                return error
            # Releases the actions' savepoints too (each stays open until here).
            actions.savepoints.execute("RELEASE unit")
            return StartResult(instance=stored, created=True)

        outcome = await self.db.write(work)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def transition(self, change: Transition) -> bool:
        cancel_requested = await self.db.write(lambda conn: _apply(conn, change))
        if cancel_requested is None:
            raise LeaseLost(change.saga_id)
        return cancel_requested

    async def transition_with(
        self,
        change: Transition,
        action: object,
        index: int,
        *,
        outgoing: Outgoing | None = None,
    ) -> tuple[bool, JSON]:
        if not isinstance(action, SqliteAction) or action.db is not self.db:
            raise StoreError("not a local action of this SQLite store")

        def work(conn: sqlite3.Connection) -> tuple[bool, JSON] | Exception | None:
            # A savepoint of its own: an error or a stale fence undoes the action alone.
            conn.execute("SAVEPOINT local_action")
            try:
                result = action.run(conn)
                cancel = _apply(conn, change.with_result(index, result, outgoing))
            except StepFailed as refusal:
                # What a refusing action wrote stays (its inbox row recording the refusal);
                # the step's success is not recorded: the orchestrator records the refusal.
                conn.execute("RELEASE local_action")
                return refusal
            except Exception as error:
                # Returned too: raised, it would make the group commit rerun every write of
                # the batch, this action included.
                conn.execute("ROLLBACK TO local_action")
                conn.execute("RELEASE local_action")
                if isinstance(error, sqlite3.Error):
                    return StoreError(f"SQLite error in a local action: {error}")
                return error
            if cancel is None:
                conn.execute("ROLLBACK TO local_action")
            conn.execute("RELEASE local_action")
            return None if cancel is None else (cancel, result)

        outcome = await self.db.write(work)
        if outcome is None:
            raise LeaseLost(change.saga_id)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def claim(self, saga_id: str, *, owner: str, lease_seconds: float) -> SagaInstance | None:
        def work(conn: sqlite3.Connection) -> SagaInstance | None:
            row = conn.execute(CLAIM, (owner, now(), lease_seconds, saga_id)).fetchone()
            if row is None:
                return None
            _claimed_event(conn, saga_id, owner)
            return _load_instance(conn, row)

        return await self.db.write(work)

    async def claim_expired(
        self,
        *,
        owner: str,
        lease_seconds: float,
        limit: int,
        definitions: Collection[tuple[str, int]] | None = None,
    ) -> list[SagaInstance]:
        known = None if definitions is None else orjson.dumps(_definition_keys(definitions))
        params = (owner, now(), lease_seconds, limit, None if known is None else known.decode())

        def work(conn: sqlite3.Connection) -> list[SagaInstance]:
            rows = conn.execute(CLAIM_EXPIRED, params).fetchall()
            for row in rows:
                _claimed_event(conn, str(row[0]), owner)
            return [_load_instance(conn, row) for row in rows]

        return await self.db.write(work)

    async def add_signal(self, saga_id: str, name: str, payload: JSON, event: SagaEvent) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute(SELECT_INSTANCE, (saga_id,)).fetchone()
            if row is None:
                raise SagaNotFound(f"no saga {saga_id!r}")
            if row[3] != SagaStatus.RUNNING:
                raise InvalidTransition(f"saga {saga_id} is {row[3]}, not running")
            new = conn.execute(INSERT_SIGNAL, (saga_id, name, _dump(payload), now())).rowcount
            if new:
                conn.execute(INSERT_EVENT, _event_row(saga_id, event))
            conn.execute(WAKE, (saga_id,))
            return bool(new)

        return await self.db.write(work)

    async def signals(self, saga_id: str) -> dict[str, JSON]:
        def work(conn: sqlite3.Connection) -> dict[str, JSON]:
            return {name: _load(p) for name, p in conn.execute(SELECT_SIGNALS, (saga_id,))}

        return await self.db.read(work)

    async def wake(self, saga_id: str) -> None:
        await self.db.write(lambda conn: conn.execute(WAKE, (saga_id,)).rowcount)

    async def renew(
        self, *, owner: str, lease_seconds: float, saga_ids: Collection[str] | None = None
    ) -> int:
        ids = None if saga_ids is None else orjson.dumps(list(saga_ids)).decode()
        return await self.db.write(
            lambda conn: conn.execute(RENEW, (now(), lease_seconds, owner, ids)).rowcount
        )

    async def release(self, *, owner: str) -> int:
        return await self.db.write(lambda conn: conn.execute(RELEASE, (owner,)).rowcount)

    async def on_release(self, wake: Callable[[], None]) -> None:
        return None  # no notifications between processes: their workers poll

    async def reopen(
        self, saga_id: str, event: SagaEvent, *, owner: str, lease_seconds: float
    ) -> SagaInstance:
        def work(conn: sqlite3.Connection) -> SagaInstance:
            row = conn.execute(REOPEN, (owner, now(), lease_seconds, saga_id)).fetchone()
            if row is None:
                current = conn.execute(SELECT_INSTANCE, (saga_id,)).fetchone()
                if current is None:
                    raise SagaNotFound(f"no saga {saga_id!r}")
                raise InvalidTransition(f"saga {saga_id} is {current[3]}, not failed")
            conn.execute(RESET_COMPENSATION_ATTEMPTS, (saga_id,))
            conn.execute(INSERT_EVENT, _event_row(saga_id, event))
            return _load_instance(conn, row)

        return await self.db.write(work)

    async def request_cancel(self, saga_id: str, event: SagaEvent) -> SagaInstance:
        return await self._operator_action(REQUEST_CANCEL, saga_id, event, SagaStatus.RUNNING)

    async def resolve(self, saga_id: str, event: SagaEvent) -> SagaInstance:
        return await self._operator_action(RESOLVE, saga_id, event, SagaStatus.FAILED)

    async def _operator_action(
        self, statement: str, saga_id: str, event: SagaEvent, expected: SagaStatus
    ) -> SagaInstance:
        def work(conn: sqlite3.Connection) -> SagaInstance:
            row = conn.execute(statement, (now(), saga_id)).fetchone()
            if row is None:
                current = conn.execute(SELECT_INSTANCE, (saga_id,)).fetchone()
                if current is None:
                    raise SagaNotFound(f"no saga {saga_id!r}")
                raise InvalidTransition(f"saga {saga_id} is {current[3]}, not {expected}")
            conn.execute(INSERT_EVENT, _event_row(saga_id, event))
            return _load_instance(conn, row)

        return await self.db.write(work)

    async def close(self) -> None:
        await self.db.close()


@dataclass(frozen=True, slots=True)
class SqliteAction:
    """A local action of :class:`SqliteStore`: ``run`` gets the writer's connection, inside
    the transaction that records the step, and returns the step's result."""

    db: SqliteDatabase
    run: Callable[[sqlite3.Connection], JSON]


def _insert_instance(
    conn: sqlite3.Connection,
    instance: SagaInstance,
    event: SagaEvent,
    lease_seconds: float,
    outbox: tuple[OutboxMessage, ...],
) -> StartResult:
    """Insert ``instance`` unless its business key is taken (then: the saga holding it)."""
    holder = _key_holder(conn, instance)
    if holder is not None:
        return holder
    stored = instance.evolve(lease_until=now() + lease_seconds)
    conn.execute(INSERT_INSTANCE, _instance_row(stored))
    _insert_many(conn, INSERT_STEPS, [_insert_step_row(stored.saga_id, s) for s in stored.steps])
    conn.execute(INSERT_EVENT, _event_row(stored.saga_id, event))
    if outbox:
        conn.executemany(INSERT_OUTBOX, _outbox_rows(stored.saga_id, outbox, event.at))
    return StartResult(instance=stored, created=True)


class _UnitActions:
    """Runs a unit's local actions, each undone alone if it raises (a refusal's writes stay).

    The saga's rows are inserted after the last action, so nothing precedes the first
    action inside the unit's savepoint: it is rolled back to that one. Each later action
    gets a savepoint of its own, never released: ``RELEASE unit`` releases them all at
    once, one statement per action instead of three (every statement drops and retakes the
    GIL on the writer thread).
    """

    def __init__(self, db: SqliteDatabase, conn: sqlite3.Connection) -> None:
        self.db = db
        self.conn = conn
        #: The savepoint statements go through one cursor (``conn.execute`` makes one each).
        self.savepoints = conn.cursor()
        self.first = True

    def run(self, action: object) -> JSON:
        """Run ``action`` (an ``SqliteAction`` of this database) in the unit's transaction."""
        if not isinstance(action, SqliteAction) or action.db is not self.db:
            raise StoreError("not a local action of this SQLite store")
        if self.first:
            self.first, back_to = False, "unit"
        else:
            self.savepoints.execute("SAVEPOINT unit_step")
            back_to = "unit_step"
        try:
            return action.run(self.conn)
        except StepFailed:
            raise  # a refusal: what it wrote (its inbox row) stays
        except BaseException:
            self.savepoints.execute(f"ROLLBACK TO {back_to}")
            raise


def _parked(change: Transition, lease_until: float | None) -> float | None:
    """The lease after ``change``: its ``park_until`` when it parks the saga, else unchanged."""
    return lease_until if change.park_until is None else change.park_until


def _key_holder(conn: sqlite3.Connection, instance: SagaInstance) -> StartResult | None:
    """The saga that holds ``instance``'s business key (active, completed or failed), if any."""
    if instance.business_key is None:
        return None
    row = conn.execute(SELECT_LATEST_BY_KEY, (instance.name, instance.business_key)).fetchone()
    if row is not None and row[3] != SagaStatus.COMPENSATED:
        return StartResult(instance=_load_instance(conn, row), created=False)
    return None


def _insert_rows(
    conn: sqlite3.Connection, stored: SagaInstance, event: SagaEvent, written: Transition | None
) -> None:
    """Insert ``stored`` as ``written`` (a unit's transition from it, if any) leaves it: the
    rows that inserting it and then applying ``written`` would leave, in three statements."""
    saga_id = stored.saga_id
    events: tuple[SagaEvent, ...]
    if written is None:
        final, steps, events = stored, stored.steps, (event,)
    else:
        if (written.fence, written.revision) != (stored.fence, stored.revision):
            raise LeaseLost(saga_id)  # a unit writes from the state it inserts: never here
        rows = list(stored.steps)
        for step in written.steps:
            rows[step.index] = step
        steps, events = tuple(rows), (event, *written.events)
        final = stored.evolve(
            status=written.status,
            error=written.error,
            failed_step=written.failed_step,
            updated_at=written.at,
            owner=None if written.release or written.park_until is not None else stored.owner,
            lease_until=None if written.release else _parked(written, stored.lease_until),
            revision=stored.revision + 1,
        )
    conn.execute(INSERT_INSTANCE, _instance_row(final))
    _insert_many(conn, INSERT_STEPS, [_insert_step_row(saga_id, s) for s in steps])
    _insert_many(conn, INSERT_EVENTS, [_event_row(saga_id, e) for e in events])
    if written is not None and written.outbox:
        conn.executemany(INSERT_OUTBOX, _outbox_rows(saga_id, written.outbox, written.at))


def _apply(conn: sqlite3.Connection, change: Transition) -> bool | None:
    """Apply ``change``; its cancel flag, or ``None`` when its fence or revision is stale."""
    row = conn.execute(
        UPDATE_FENCED,
        (
            change.status._value_,  # the text itself: ``.value`` is a Python property
            change.error,
            change.failed_step,
            change.at,
            change.release,
            change.park_until,
            change.release,
            change.park_until,
            change.saga_id,
            change.fence,
            change.revision,
        ),
    ).fetchone()
    if row is None:
        return None
    if change.steps:
        rows = [_insert_step_row(change.saga_id, s) for s in change.steps]
        _insert_many(conn, INSERT_STEPS, rows, UPSERT_STEPS)
    if change.events:
        _insert_many(conn, INSERT_EVENTS, [_event_row(change.saga_id, e) for e in change.events])
    if change.outbox:
        conn.executemany(INSERT_OUTBOX, _outbox_rows(change.saga_id, change.outbox, change.at))
    return bool(row[0])


def _outbox_rows(
    saga_id: str, messages: tuple[OutboxMessage, ...], at: float
) -> list[tuple[object, ...]]:
    return [(saga_id, m.step, m.key, m.kind, orjson.dumps(m.body).decode(), at) for m in messages]


def _definition_keys(definitions: Collection[tuple[str, int]]) -> list[str]:
    """``name:version`` of each definition, as ``CLAIM_EXPIRED`` compares them (the version,
    after the last colon, has none: the key is unambiguous)."""
    return [f"{name}:{version}" for name, version in definitions]


def _claimed_event(conn: sqlite3.Connection, saga_id: str, owner: str) -> None:
    event = SagaEvent(type="saga_claimed", detail=f"claimed by {owner}")
    conn.execute(INSERT_EVENT, _event_row(saga_id, event))


def _instance_row(i: SagaInstance) -> tuple[object, ...]:
    return (
        i.saga_id,
        i.name,
        i.version,
        i.status._value_,
        orjson.dumps(i.input).decode(),
        i.business_key,
        i.error,
        i.failed_step,
        i.created_at,
        i.updated_at,
        i.owner,
        i.fence,
        i.lease_until,
        i.cancel_requested,
        i.revision,
    )


def _insert_step_row(saga_id: str, s: StepRecord) -> tuple[object, ...]:
    return (
        saga_id,
        s.index,
        s.name,
        s.status._value_,
        s.attempts,
        s.compensation_attempts,
        _dump(s.result),
        s.error,
        s.started_at,
        s.finished_at,
    )
