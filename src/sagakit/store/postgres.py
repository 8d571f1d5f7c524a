"""The PostgreSQL store, for many processes on many hosts sharing one database.

SQL lives in named constants with the same names as in ``sqlite.py``. The hot writes
(``start`` and ``transition``) are each one statement — data-modifying CTEs over
``unnest`` arrays — so each costs one round trip and one commit. Leases use the
database's clock, so hosts whose clocks disagree still agree on who holds a saga.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from sagakit.errors import InvalidTransition, LeaseLost, SagaNotFound, StepFailed, StoreError
from sagakit.records import (
    JSON,
    Confirm,
    OutboxMessage,
    Outgoing,
    Plan,
    Retracted,
    SagaEvent,
    SagaInstance,
    SagaStatus,
    StartResult,
    StepRecord,
    StepStatus,
    Tentative,
    Transition,
)
from sagakit.store.base import SagaPage
from sagakit.store.group_commit import GroupCommit
from sagakit.store.postgres_db import (
    DRIVER_ERRORS,
    Connection,
    PostgresDatabase,
    PostgresError,
    Record,
    UniqueViolationError,
    prepared_names,
)
from sagakit.store.postgres_messages import PostgresMessages

DB_NOW: Final = "extract(epoch FROM clock_timestamp())"
INSTANCE_COLUMNS: Final = (
    "saga_id, name, version, status, input::text AS input, business_key, error, failed_step,"
    " created_at, updated_at, owner, fence, lease_until, cancel_requested, revision"
)
SELECT_INSTANCE: Final = f"SELECT {INSTANCE_COLUMNS} FROM saga_instances WHERE saga_id = $1"
SELECT_STEPS: Final = (
    "SELECT saga_id, idx, name, status, attempts, compensation_attempts, result::text AS result,"
    " error, started_at, finished_at FROM saga_steps WHERE saga_id = ANY($1::text[])"
    " ORDER BY saga_id, idx"
)
SELECT_EVENTS: Final = (
    "SELECT at, type, step, attempt, detail FROM saga_events WHERE saga_id = $1 ORDER BY id"
)
SELECT_LATEST_BY_KEY: Final = (
    f"SELECT {INSTANCE_COLUMNS} FROM saga_instances"
    " WHERE name = $1 AND business_key = $2 ORDER BY seq DESC LIMIT 1"
)
SELECT_PAGE: Final = (
    f"SELECT seq, {INSTANCE_COLUMNS} FROM saga_instances"
    " WHERE ($1::text IS NULL OR status = $1) AND ($2::bigint IS NULL OR seq < $2)"
    " AND ($3::text IS NULL OR name = $3) AND ($4::text IS NULL OR business_key = $4)"
    " AND ($5::float8 IS NULL OR created_at >= $5) AND ($6::float8 IS NULL OR created_at < $6)"
    " ORDER BY seq DESC LIMIT $7"
)
COUNT_BY_STATUS: Final = "SELECT status, count(*) AS n FROM saga_instances GROUP BY status"
INSERT_INSTANCE: Final = (
    "WITH inserted AS ("
    "  INSERT INTO saga_instances (saga_id, name, version, status, input, business_key, error,"
    "   failed_step, created_at, updated_at, owner, fence, lease_until)"
    f"  VALUES ($1, $2, $3, $4, $5::jsonb, $6, NULL, NULL, $7, $7, $8, $9, {DB_NOW} + $10)"
    "  ON CONFLICT (name, business_key)"
    "   WHERE business_key IS NOT NULL AND status <> 'compensated' DO NOTHING"
    "  RETURNING saga_id, lease_until),"
    " steps AS ("
    "  INSERT INTO saga_steps (saga_id, idx, name, status, attempts, compensation_attempts,"
    "   result, error, started_at, finished_at)"
    "  SELECT (SELECT saga_id FROM inserted), s.*"
    "  FROM unnest($11::int[], $12::text[], $13::text[], $14::int[], $15::int[], $16::jsonb[],"
    "   $17::text[], $18::float8[], $19::float8[])"
    "   AS s(idx, name, status, attempts, compensation_attempts, result, error, started_at,"
    "    finished_at)"
    "  WHERE EXISTS (SELECT 1 FROM inserted)),"
    " event AS ("
    "  INSERT INTO saga_events (saga_id, at, type, step, attempt, detail)"
    "  SELECT saga_id, $20, $21, $22, $23, $24 FROM inserted),"
    " outbox AS ("
    "  INSERT INTO saga_outbox (saga_id, step, key, kind, body, created_at)"
    "  SELECT (SELECT saga_id FROM inserted), o.step, o.key, o.kind, o.body::jsonb, $20"
    "  FROM unnest($25::text[], $26::text[], $27::text[], $28::text[])"
    "   WITH ORDINALITY AS o(step, key, kind, body, n)"
    "  WHERE EXISTS (SELECT 1 FROM inserted) ORDER BY o.n)"
    " SELECT lease_until FROM inserted"
)
#: Whether a saga that is not compensated holds the key ``$2`` of saga ``$1``: a unit
#: asks before its first action, so that a duplicate request changes nothing.
LIVE_KEY: Final = (
    "SELECT 1 FROM saga_instances WHERE name = $1 AND business_key = $2 AND status <> 'compensated'"
)
KEY_TAKEN: Final = f"SELECT EXISTS ({LIVE_KEY})"
#: A unit's saga, inserted once, as the unit left it (its final state, every step's row and
#: its whole history), unless a saga that is not compensated holds its key: one insert
#: instead of an insert and an update. ``$10``: it ended (no owner, no lease).
_UNIT_COLUMNS: Final = (
    "INSERT INTO saga_instances (saga_id, name, version, status, input, business_key, error,"
    " failed_step, created_at, updated_at, owner, fence, lease_until, revision)"
    " SELECT $1::text, $2::text, $3::int, $4::text, $5::jsonb, $6::text, $7::text, $8::text,"
    " $9::float8, $11::float8, CASE WHEN $10::bool THEN NULL ELSE $12::text END, $13::bigint,"
    f" CASE WHEN $10::bool THEN NULL ELSE {DB_NOW} + $14::float8 END, $15::bigint"
)
_UNIT_ON_CONFLICT: Final = (
    " ON CONFLICT (name, business_key)"
    " WHERE business_key IS NOT NULL AND status <> 'compensated' DO NOTHING"
    " RETURNING saga_id, lease_until"
)
_UNIT_ROWS: Final = (
    " steps AS ("
    "  INSERT INTO saga_steps (saga_id, idx, name, status, attempts, compensation_attempts,"
    "   result, error, started_at, finished_at)"
    "  SELECT (SELECT saga_id FROM inserted), s.*"
    "  FROM unnest($16::int[], $17::text[], $18::text[], $19::int[], $20::int[], $21::jsonb[],"
    "   $22::text[], $23::float8[], $24::float8[])"
    "   AS s(idx, name, status, attempts, compensation_attempts, result, error, started_at,"
    "    finished_at)"
    "  WHERE EXISTS (SELECT 1 FROM inserted)),"
    " events AS ("
    "  INSERT INTO saga_events (saga_id, at, type, step, attempt, detail)"
    "  SELECT (SELECT saga_id FROM inserted), e.at, e.type, e.step, e.attempt, e.detail"
    "  FROM unnest($25::float8[], $26::text[], $27::text[], $28::int[], $29::text[])"
    "   WITH ORDINALITY AS e(at, type, step, attempt, detail, n)"
    "  WHERE EXISTS (SELECT 1 FROM inserted) ORDER BY e.n)"
)
#: The number of ``INSERT_UNIT``'s parameters (``_unit_arguments``).
UNIT_PARAMETERS: Final = 29
#: A unit's saga, inserted once, as the unit left it (its final state, every step's row and
#: its whole history), unless a saga that is not compensated holds its key: one insert
#: instead of an insert and an update. ``$10``: it ended (no owner, no lease).
INSERT_UNIT: Final = (
    f"WITH inserted AS ({_UNIT_COLUMNS}"
    # A compensated saga is not in the unique index: look for a live one (committed) too.
    "  WHERE $6::text IS NULL OR NOT EXISTS (SELECT 1 FROM saga_instances"
    "   WHERE name = $2 AND business_key = $6 AND status <> 'compensated')"
    f" {_UNIT_ON_CONFLICT}),"
    f"{_UNIT_ROWS}"
    " SELECT lease_until FROM inserted"
)


def _chain(calls: Sequence[PostgresCall], *, insert: bool) -> str:
    """The unit's ``calls`` as one statement: the key's check, then each call in turn, each
    only if the one before applied (a call returns NULL when it did).

    ``insert``: the saga's insert follows when every call applied (``INSERT_UNIT``'s
    parameters), and the statement fails (``sagakit_discard_unit``) if a call was refused
    or the insert found the key taken meanwhile, so that nothing of it stays. Without it,
    the statement says whether the key was taken, whether every call applied, and what
    each call that ran answered (``r0``, ``r1``...).
    """
    # With the insert, its parameters come first (the name is $2, the key $6); else $1, $2.
    first, name, key = (UNIT_PARAMETERS + 1, "$2", "$6") if insert else (3, "$1", "$2")
    ctes = [
        f"live AS (SELECT 1 FROM saga_instances WHERE {key}::text IS NOT NULL"
        f" AND name = {name}::text AND business_key = {key}::text AND status <> 'compensated')"
    ]
    for k, call in enumerate(calls):
        after = (
            f"FROM a{k - 1} WHERE a{k - 1}.r IS NULL"
            if k
            else "WHERE NOT EXISTS (SELECT 1 FROM live)"
        )
        ctes.append(f"a{k} AS MATERIALIZED (SELECT {call.expression(first)} AS r {after})")
        first += len(call.args)
    last = len(calls) - 1
    ctes.append(f"ok AS MATERIALIZED (SELECT 1 FROM a{last} WHERE a{last}.r IS NULL)")
    taken = "EXISTS (SELECT 1 FROM live) AS taken"
    if not insert:
        answers = "".join(f", (SELECT r FROM a{k}) AS r{k}" for k in range(len(calls)))
        applied = "EXISTS (SELECT 1 FROM ok) AS applied"
        return f"WITH {', '.join(ctes)} SELECT {taken}, {applied}{answers}"
    ctes.append(f"inserted AS ({_UNIT_COLUMNS} FROM ok {_UNIT_ON_CONFLICT})")
    return (
        f"WITH {', '.join(ctes)},{_UNIT_ROWS}"
        f" SELECT {taken}, (SELECT lease_until FROM inserted) AS lease_until,"
        " CASE WHEN EXISTS (SELECT 1 FROM live) OR EXISTS (SELECT 1 FROM inserted) THEN true"
        "  ELSE sagakit_discard_unit('an action was refused, or the key taken') END AS settled"
    )


#: The name under which ``INSERT_ENDED`` is prepared on a session (SQL ``PREPARE``).
ENDED: Final = "sagakit_insert_ended_unit"
#: A unit's saga that ended inside it, from one JSON document (``_ended_document``): no
#: owner, no lease, so nothing to read back. Prepared by name, it is run with ``EXECUTE``
#: in the same simple query as the ``COMMIT``: one round trip for both. A saga that is not
#: compensated and holds the key makes it fail (the unique index), and the unit roll back.
INSERT_ENDED: Final = (
    "WITH u AS MATERIALIZED (SELECT $1::jsonb AS j),"
    " inserted AS ("
    "  INSERT INTO saga_instances (saga_id, name, version, status, input, business_key, error,"
    "   failed_step, created_at, updated_at, owner, fence, lease_until, revision)"
    "  SELECT j->>'saga_id', j->>'name', (j->>'version')::int, j->>'status', j->'input',"
    "   j->>'business_key', j->>'error', j->>'failed_step', (j->>'created_at')::float8,"
    "   (j->>'updated_at')::float8, NULL, (j->>'fence')::bigint, NULL, (j->>'revision')::bigint"
    "  FROM u RETURNING saga_id),"
    " steps AS ("
    "  INSERT INTO saga_steps (saga_id, idx, name, status, attempts, compensation_attempts,"
    "   result, error, started_at, finished_at)"
    "  SELECT (SELECT saga_id FROM inserted), s.*"
    "  FROM u, jsonb_to_recordset(u.j->'steps')"
    "   AS s(idx int, name text, status text, attempts int, compensation_attempts int,"
    "    result jsonb, error text, started_at float8, finished_at float8)),"
    " events AS ("
    "  INSERT INTO saga_events (saga_id, at, type, step, attempt, detail)"
    "  SELECT (SELECT saga_id FROM inserted), e.at, e.type, e.step, e.attempt, e.detail"
    "  FROM u, ROWS FROM (jsonb_to_recordset(u.j->'events')"
    "   AS (at float8, type text, step text, attempt int, detail text))"
    "   WITH ORDINALITY AS e(at, type, step, attempt, detail, n)"
    "  ORDER BY e.n)"
    " SELECT count(*) FROM inserted"
)
#: The unique index that keeps one saga that is not compensated per business key.
ONE_PER_KEY: Final = "saga_instances_one_per_key"


UPDATE_FENCED: Final = (
    "WITH change AS ("
    "  SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],"
    "   $6::bool[], $7::float8[], $25::float8[], $33::bigint[])"
    "   AS c(saga_id, fence, status, error, failed_step, release, at, park_until, revision)),"
    " instance AS ("
    "  UPDATE saga_instances AS t SET status = c.status, error = c.error,"
    "   failed_step = c.failed_step, updated_at = c.at,"
    "   owner = CASE WHEN c.release OR c.park_until IS NOT NULL THEN NULL ELSE t.owner END,"
    "   lease_until = CASE WHEN c.release THEN NULL"
    "    ELSE coalesce(c.park_until, t.lease_until) END,"
    "   revision = t.revision + 1"
    "  FROM change AS c"
    "  WHERE t.saga_id = c.saga_id AND t.fence = c.fence AND t.revision = c.revision"
    "  RETURNING t.saga_id, t.fence, t.cancel_requested),"
    " steps AS ("
    "  UPDATE saga_steps AS t SET status = s.status, attempts = s.attempts,"
    "   compensation_attempts = s.compensation_attempts, result = s.result::jsonb,"
    "   error = s.error, started_at = s.started_at, finished_at = s.finished_at"
    "  FROM unnest($8::text[], $9::int[], $10::text[], $11::int[], $12::int[], $13::text[],"
    "   $14::text[], $15::float8[], $16::float8[], $23::bigint[])"
    "   AS s(saga_id, idx, status, attempts, compensation_attempts, result, error, started_at,"
    "    finished_at, fence)"
    "  WHERE t.saga_id = s.saga_id AND t.idx = s.idx"
    "   AND (s.saga_id, s.fence) IN (SELECT saga_id, fence FROM instance)),"
    " events AS ("
    "  INSERT INTO saga_events (saga_id, at, type, step, attempt, detail)"
    "  SELECT e.saga_id, e.at, e.type, e.step, e.attempt, e.detail"
    "  FROM unnest($17::text[], $18::float8[], $19::text[], $20::text[], $21::int[],"
    "   $22::text[], $24::bigint[])"
    "   WITH ORDINALITY AS e(saga_id, at, type, step, attempt, detail, fence, n)"
    "  WHERE (e.saga_id, e.fence) IN (SELECT saga_id, fence FROM instance) ORDER BY e.n),"
    " outbox AS ("
    "  INSERT INTO saga_outbox (saga_id, step, key, kind, body, created_at)"
    "  SELECT o.saga_id, o.step, o.key, o.kind, o.body::jsonb, o.at"
    "  FROM unnest($26::text[], $27::text[], $28::text[], $29::text[], $30::text[],"
    "   $31::float8[], $32::bigint[])"
    "   WITH ORDINALITY AS o(saga_id, step, key, kind, body, at, fence, n)"
    "  WHERE (o.saga_id, o.fence) IN (SELECT saga_id, fence FROM instance) ORDER BY o.n)"
    " SELECT saga_id, fence, cancel_requested FROM instance"
)
CLAIM: Final = (
    f"UPDATE saga_instances SET owner = $1, fence = fence + 1, lease_until = {DB_NOW} + $2"
    " WHERE saga_id = $3 AND status IN ('running', 'compensating')"
    f" AND (lease_until IS NULL OR lease_until < {DB_NOW})"
    f" RETURNING {INSTANCE_COLUMNS}"
)
CLAIM_EXPIRED: Final = (
    f"UPDATE saga_instances SET owner = $1, fence = fence + 1, lease_until = {DB_NOW} + $2"
    " WHERE seq IN (SELECT seq FROM saga_instances"
    "   WHERE status IN ('running', 'compensating')"
    f"   AND (lease_until IS NULL OR lease_until < {DB_NOW})"
    "   AND ($4::text[] IS NULL OR name || ':' || version = ANY($4::text[]))"
    "   ORDER BY lease_until NULLS FIRST LIMIT $3 FOR UPDATE SKIP LOCKED)"
    f" RETURNING {INSTANCE_COLUMNS}"
)


def _recording_claims(claim: str) -> str:
    """``claim`` (owner in ``$1``) that also records a ``saga_claimed`` event for each saga it
    claims: one statement, so one round trip and no explicit transaction."""
    return (
        f"WITH claimed AS ({claim}),"
        " recorded AS ("
        "  INSERT INTO saga_events (saga_id, at, type, step, attempt, detail)"
        f"  SELECT saga_id, {DB_NOW}, 'saga_claimed', NULL, NULL, 'claimed by ' || $1"
        "  FROM claimed)"
        " SELECT * FROM claimed"
    )


CLAIM_RECORDED: Final = _recording_claims(CLAIM)
CLAIM_EXPIRED_RECORDED: Final = _recording_claims(CLAIM_EXPIRED)
RENEW: Final = (
    f"UPDATE saga_instances SET lease_until = {DB_NOW} + $2"
    " WHERE owner = $1 AND status IN ('running', 'compensating')"
    " AND ($3::text[] IS NULL OR saga_id = ANY($3::text[]))"
)
RELEASE: Final = "UPDATE saga_instances SET owner = NULL, lease_until = NULL WHERE owner = $1"
#: Other processes' workers listen here, so that sagas handed back are taken over at once.
RELEASED_CHANNEL: Final = "sagakit_released"
NOTIFY_RELEASED: Final = f"NOTIFY {RELEASED_CHANNEL}"
REOPEN: Final = (
    "UPDATE saga_instances SET status = 'compensating', owner = $1, fence = fence + 1,"
    f" lease_until = {DB_NOW} + $2, updated_at = {DB_NOW}, revision = revision + 1"
    " WHERE saga_id = $3 AND status = 'failed'"
    f" RETURNING {INSTANCE_COLUMNS}"
)
REQUEST_CANCEL: Final = (
    f"UPDATE saga_instances SET cancel_requested = true, updated_at = {DB_NOW}"
    " WHERE saga_id = $1 AND status = 'running'"
    f" RETURNING {INSTANCE_COLUMNS}"
)
RESOLVE: Final = (
    f"UPDATE saga_instances SET status = 'compensated', updated_at = {DB_NOW},"
    " revision = revision + 1"
    " WHERE saga_id = $1 AND status = 'failed'"
    f" RETURNING {INSTANCE_COLUMNS}"
)
RESET_COMPENSATION_ATTEMPTS: Final = (
    "UPDATE saga_steps SET compensation_attempts = 0 WHERE saga_id = $1 AND status = 'compensating'"
)
INSERT_EVENT: Final = (
    "INSERT INTO saga_events (saga_id, at, type, step, attempt, detail)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)
INSERT_SIGNAL: Final = (
    f"INSERT INTO saga_signals (saga_id, name, payload, at) VALUES ($1, $2, $3::jsonb, {DB_NOW})"
    " ON CONFLICT (saga_id, name) DO NOTHING"
)
SELECT_SIGNALS: Final = "SELECT name, payload::text AS payload FROM saga_signals WHERE saga_id = $1"
WAKE: Final = (
    "UPDATE saga_instances SET lease_until = NULL"
    " WHERE saga_id = $1 AND owner IS NULL AND status = 'running'"
)


class _Abandoned(Exception):
    """A local action of a unit failed: the unit's transaction is rolled back whole."""


class _Retry(Exception):
    """A unit's tentative result was wrong: its transaction was rolled back; run it again."""


class _Taken(Exception):
    """A unit's business key belongs to a saga already: its transaction is rolled back."""

    def __init__(self, *, ran: bool) -> None:
        super().__init__("business key taken")
        #: Whether the plan had run to its end (so it cannot be driven the ordinary way).
        self.ran = ran


#: A SQL function's name, as :class:`PostgresCall` accepts it (no quoting, no schema).
_FUNCTION_NAME: Final = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class PostgresCall:
    """A local action that is one call of a SQL function: one statement, one round trip.

    ``function(args...)`` (each argument cast to its ``types`` entry) returns NULL when the
    action applied, or when a replay finds it applied, and the refusal's message (text)
    when the step is refused. The step's result is then ``result``. Because the store knows
    the whole action as SQL, it can send it together with its own statements: the first
    action of a unit goes in the statement that checks the saga's business key.
    """

    function: str
    args: tuple[object, ...]
    types: tuple[str, ...]
    result: JSON

    def __post_init__(self) -> None:
        if not _FUNCTION_NAME.fullmatch(self.function):
            raise ValueError(f"not a plain SQL function name: {self.function!r}")
        if len(self.args) != len(self.types):
            raise ValueError("one type per argument")

    def expression(self, first: int) -> str:
        """The call as SQL, its arguments numbered from ``$first``."""
        casts = ", ".join(f"${first + i}::{t}" for i, t in enumerate(self.types))
        return f"{self.function}({casts})"

    def outcome(self, refusal: str | None) -> JSON:
        """The step's result for what the function returned (``StepFailed`` if refused)."""
        if refusal is not None:
            raise StepFailed(refusal)
        return self.result

    async def __call__(self, conn: Connection) -> JSON:
        """Run the call on its own (a :attr:`PostgresAction.run`)."""
        return self.outcome(await conn.fetchval(f"SELECT {self.expression(1)}", *self.args))


@dataclass(frozen=True, slots=True)
class PostgresAction:
    """A local action of :class:`PostgresStore`: ``run`` gets a connection inside the
    transaction that records the step, and returns the step's result.

    ``call``, when given, is the same action as one SQL function call (``run`` must do
    exactly what it does): the store may then send it with its own statements.
    """

    db: PostgresDatabase
    run: Callable[[Connection], Awaitable[JSON]]
    call: PostgresCall | None = None

    @classmethod
    def of_call(cls, db: PostgresDatabase, call: PostgresCall) -> PostgresAction:
        """The action that ``call`` is."""
        return cls(db, call, call)


def _transition_arguments(changes: Sequence[Transition]) -> list[object]:
    """The arguments of ``UPDATE_FENCED`` for ``changes``, as parallel arrays."""
    steps = [(c, s) for c in changes for s in c.steps]
    events = [(c, e) for c in changes for e in c.events]
    outbox = [(c, m) for c in changes for m in c.outbox]
    return [
        [c.saga_id for c in changes],
        [c.fence for c in changes],
        [c.status.value for c in changes],
        [c.error for c in changes],
        [c.failed_step for c in changes],
        [c.release for c in changes],
        [c.at for c in changes],
        [c.saga_id for c, _ in steps],
        [s.index for _, s in steps],
        [s.status.value for _, s in steps],
        [s.attempts for _, s in steps],
        [s.compensation_attempts for _, s in steps],
        [_dump(s.result) for _, s in steps],
        [s.error for _, s in steps],
        [s.started_at for _, s in steps],
        [s.finished_at for _, s in steps],
        [c.saga_id for c, _ in events],
        [e.at for _, e in events],
        [e.type for _, e in events],
        [e.step for _, e in events],
        [e.attempt for _, e in events],
        [e.detail for _, e in events],
        [c.fence for c, _ in steps],
        [c.fence for c, _ in events],
        [c.park_until for c in changes],
        [c.saga_id for c, _ in outbox],
        [m.step for _, m in outbox],
        [m.key for _, m in outbox],
        [m.kind for _, m in outbox],
        [orjson.dumps(m.body).decode() for _, m in outbox],
        [c.at for c, _ in outbox],
        [c.fence for c, _ in outbox],
        [c.revision for c in changes],
    ]


def _insert_arguments(
    instance: SagaInstance,
    event: SagaEvent,
    lease_seconds: float,
    outbox: tuple[OutboxMessage, ...],
) -> list[object]:
    """The arguments of ``INSERT_INSTANCE`` for ``instance``, its first event and messages."""
    steps = instance.steps
    return [
        instance.saga_id,
        instance.name,
        instance.version,
        instance.status.value,
        orjson.dumps(instance.input).decode(),
        instance.business_key,
        instance.created_at,
        instance.owner,
        instance.fence,
        lease_seconds,
        *_step_columns(steps),
        event.at,
        event.type,
        event.step,
        event.attempt,
        event.detail,
        [m.step for m in outbox],
        [m.key for m in outbox],
        [m.kind for m in outbox],
        [orjson.dumps(m.body).decode() for m in outbox],
    ]


def _step_columns(steps: Sequence[StepRecord]) -> list[list[object]]:
    """The step rows as the column arrays an insert unnests, in the table's column order."""
    return [
        [s.index for s in steps],
        [s.name for s in steps],
        [s.status.value for s in steps],
        [s.attempts for s in steps],
        [s.compensation_attempts for s in steps],
        [_dump(s.result) for s in steps],
        [s.error for s in steps],
        [s.started_at for s in steps],
        [s.finished_at for s in steps],
    ]


def _unit_arguments(
    instance: SagaInstance, event: SagaEvent, written: Transition | None, lease_seconds: float
) -> list[object]:
    """The arguments of ``INSERT_UNIT``: ``instance`` as ``written`` left it (if it did), its
    first ``event`` and the unit's."""
    steps = instance.steps if written is None else written.steps
    events = (event,) if written is None else (event, *written.events)
    return [
        instance.saga_id,
        instance.name,
        instance.version,
        (instance.status if written is None else written.status).value,
        orjson.dumps(instance.input).decode(),
        instance.business_key,
        None if written is None else written.error,
        None if written is None else written.failed_step,
        instance.created_at,
        written is not None and written.release,
        instance.created_at if written is None else written.at,
        instance.owner,
        instance.fence,
        lease_seconds,
        instance.revision + (0 if written is None else 1),
        *_step_columns(steps),
        [e.at for e in events],
        [e.type for e in events],
        [e.step for e in events],
        [e.attempt for e in events],
        [e.detail for e in events],
    ]


def _key_arguments(instance: SagaInstance) -> list[object]:
    """``_chain``'s first parameters without the insert: the saga's name and key."""
    return [instance.name, instance.business_key]


def _call_arguments(calls: Sequence[PostgresCall]) -> list[object]:
    """``_chain``'s last parameters: every call's arguments, in turn."""
    return [argument for call in calls for argument in call.args]


def _ended_document(instance: SagaInstance, event: SagaEvent, written: Transition) -> str:
    """The JSON document ``INSERT_ENDED`` reads: ``instance`` as ``written`` ended it."""
    return orjson.dumps(
        {
            "saga_id": instance.saga_id,
            "name": instance.name,
            "version": instance.version,
            "status": written.status.value,
            "input": instance.input,
            "business_key": instance.business_key,
            "error": written.error,
            "failed_step": written.failed_step,
            "created_at": instance.created_at,
            "updated_at": written.at,
            "fence": instance.fence,
            "revision": instance.revision + 1,
            "steps": [
                {
                    "idx": s.index,
                    "name": s.name,
                    "status": s.status.value,
                    "attempts": s.attempts,
                    "compensation_attempts": s.compensation_attempts,
                    "result": s.result,
                    "error": s.error,
                    "started_at": s.started_at,
                    "finished_at": s.finished_at,
                }
                for s in written.steps
            ],
            "events": [
                {
                    "at": e.at,
                    "type": e.type,
                    "step": e.step,
                    "attempt": e.attempt,
                    "detail": e.detail,
                }
                for e in (event, *written.events)
            ],
        }
    ).decode()


def _dollar_tag(text: str) -> str:
    """A dollar-quoting tag that ``text`` does not contain: ``$tag$text$tag$`` is then a
    literal of ``text`` exactly, with no escaping to get wrong."""
    n = 0
    while f"$sk{n}$" in text:
        n += 1
    return f"$sk{n}$"


def _dump(value: JSON) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load(text: str | None) -> JSON:
    return None if text is None else orjson.loads(text)


def _step(row: Record) -> StepRecord:
    return StepRecord(
        index=row["idx"],
        name=row["name"],
        status=StepStatus(row["status"]),
        attempts=row["attempts"],
        compensation_attempts=row["compensation_attempts"],
        result=None if row["result"] is None else orjson.loads(row["result"]),
        error=row["error"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _instance(row: Record, steps: tuple[StepRecord, ...]) -> SagaInstance:
    return SagaInstance(
        saga_id=row["saga_id"],
        name=row["name"],
        version=row["version"],
        status=SagaStatus(row["status"]),
        input=orjson.loads(row["input"]),
        steps=steps,
        business_key=row["business_key"],
        error=row["error"],
        failed_step=row["failed_step"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        owner=row["owner"],
        fence=row["fence"],
        lease_until=row["lease_until"],
        cancel_requested=row["cancel_requested"],
        revision=row["revision"],
    )


async def _with_steps(conn: Connection, rows: Sequence[Record]) -> list[SagaInstance]:
    """Instances for ``rows``, with their steps fetched in one query."""
    if not rows:
        return []
    by_saga: dict[str, list[StepRecord]] = {}
    for step in await conn.fetch(SELECT_STEPS, [r["saga_id"] for r in rows]):
        by_saga.setdefault(step["saga_id"], []).append(_step(step))
    return [_instance(r, tuple(by_saga.get(r["saga_id"], ()))) for r in rows]


class PostgresStore(PostgresMessages):
    """A :class:`~sagakit.store.base.SagaStore` in PostgreSQL."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        # Transitions of concurrent sagas share statements and commits (group commit).
        self._transitions: GroupCommit[Transition, bool] = GroupCommit(
            self._write_transitions, flushers=4
        )

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connect to the database that ``url`` names and apply the migrations."""
        db = await PostgresDatabase.connect(url)
        try:
            await db.migrate("sagas", "sagakit.store.migrations.postgres")
        except BaseException:
            await db.close()
            raise
        return cls(db)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, saga_id: str) -> SagaInstance | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_INSTANCE, saga_id)
            found = await _with_steps(conn, [row] if row else [])
        return found[0] if found else None

    async def events(self, saga_id: str) -> list[SagaEvent]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(SELECT_EVENTS, saga_id)
        return [
            SagaEvent(
                at=r["at"], type=r["type"], step=r["step"], attempt=r["attempt"], detail=r["detail"]
            )
            for r in rows
        ]

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
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                SELECT_PAGE,
                status.value if status else None,
                below,
                name,
                business_key,
                created_after,
                created_before,
                limit + 1,
            )
            sagas = await _with_steps(conn, rows[:limit])
        more = len(rows) > limit
        return SagaPage(
            sagas=tuple(sagas), next_cursor=str(rows[limit - 1]["seq"]) if more else None
        )

    async def latest_by_key(self, name: str, business_key: str) -> SagaInstance | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(SELECT_LATEST_BY_KEY, name, business_key)
            found = await _with_steps(conn, [row] if row else [])
        return found[0] if found else None

    async def count_by_status(self) -> dict[SagaStatus, int]:
        counts = dict.fromkeys(SagaStatus, 0)
        async with self.db.connection() as conn:
            for row in await conn.fetch(COUNT_BY_STATUS):
                counts[SagaStatus(row["status"])] = row["n"]
        return counts

    async def ping(self) -> None:
        async with self.db.connection("ping") as conn:
            await conn.fetchval("SELECT 1")

    # -- writes --------------------------------------------------------------------------

    async def start(
        self,
        instance: SagaInstance,
        event: SagaEvent,
        *,
        lease_seconds: float,
        outbox: tuple[OutboxMessage, ...] = (),
    ) -> StartResult:
        # A key whose live saga is compensated between our insert and our read can make
        # both miss; trying again settles it.
        for _ in range(5):
            async with self.db.connection("start") as conn:
                lease_until = await conn.fetchval(
                    INSERT_INSTANCE, *_insert_arguments(instance, event, lease_seconds, outbox)
                )
            if lease_until is not None:
                return StartResult(instance=instance.evolve(lease_until=lease_until), created=True)
            assert instance.business_key is not None
            # Read with the connection given back: holding one while asking the pool for
            # another deadlocks once every pooled connection does the same.
            existing = await self.latest_by_key(instance.name, instance.business_key)
            if existing is not None and existing.status is not SagaStatus.COMPENSATED:
                return StartResult(instance=existing, created=False)
        raise InvalidTransition(f"could not start a saga for key {instance.business_key!r}")

    async def start_unit(
        self, instance: SagaInstance, event: SagaEvent, *, lease_seconds: float, plan: Plan
    ) -> StartResult:
        # One transaction: BEGIN, the key's check with the first action (when it is a
        # call), each further action, one insert of the saga as the unit left it with the
        # COMMIT. A plan that raises rolls every action back; nothing of the saga is written.
        try:
            async with self.db.connection("unit") as conn:
                lease_until = await self._unit(conn, instance, event, lease_seconds, plan)
            started = instance.evolve(lease_until=lease_until)
            return StartResult(instance=started, created=True)
        except _Abandoned:
            # An action failed: the unit was rolled back whole. The saga starts the
            # ordinary way below, and its driver runs that attempt again.
            plan.close()
        except _Taken as taken:
            plan.close()
            if taken.ran:
                # Another request took the key while this one ran its plan (rolled back):
                # answer with that saga, as a request that came second would get.
                assert instance.business_key is not None
                existing = await self.latest_by_key(instance.name, instance.business_key)
                if existing is None:  # pragma: no cover - a saga is never deleted
                    raise InvalidTransition(
                        f"no saga holds key {instance.business_key!r}"
                    ) from None
                return StartResult(instance=existing, created=False)
        # The key is taken (or the unit was abandoned): ``start`` finds its saga, or starts
        # this one the ordinary way.
        return await self.start(instance, event, lease_seconds=lease_seconds)

    async def _unit(
        self,
        conn: Connection,
        instance: SagaInstance,
        event: SagaEvent,
        lease_seconds: float,
        plan: Plan,
    ) -> float | None:
        """Run the unit on ``conn``; its saga's lease.

        The leading actions that are calls (:class:`PostgresCall`) are sent, tentatively,
        the result they give when they apply, so that the plan names the next ones. If all
        its actions are calls, the unit is one statement, committed alone (``_chain``);
        otherwise a transaction: BEGIN, those calls in one statement, each further action,
        and the saga's insert (with the COMMIT, when the saga ended in the unit). When a
        tentative result was wrong (an action refused: rare), nothing of that attempt
        stays, and the plan runs again with real results, one action at a time.
        """
        calls: list[PostgresCall] = []
        try:
            pending = plan.send(None)
            while (call := self._call_of(pending)) is not None:
                calls.append(call)
                pending = plan.send(Tentative(call.result))
            if isinstance(pending, Confirm):
                applied, lease = await self._one_statement(
                    conn, instance, event, lease_seconds, calls, pending.written, plan
                )
                if applied:
                    return lease
                calls, pending = [], plan.throw(Retracted())
            else:
                try:
                    return await self._transaction(
                        conn, instance, event, lease_seconds, plan, calls, pending
                    )
                except _Retry:
                    calls, pending = [], plan.throw(Retracted())
            return await self._transaction(conn, instance, event, lease_seconds, plan, [], pending)
        except StopIteration as end:  # it ran no action: its first step is not local here
            written: Transition | None = end.value
            inserted = await conn.fetchrow(
                INSERT_UNIT, *_unit_arguments(instance, event, written, lease_seconds)
            )
            if inserted is None:
                raise _Taken(ran=True) from None
            lease_until: float | None = inserted["lease_until"]
            return lease_until

    def _call_of(self, action: object) -> PostgresCall | None:
        """``action``'s call, if it is a local action of this store given as one."""
        if isinstance(action, PostgresAction) and action.db is self.db:
            return action.call
        return None

    async def _one_statement(
        self,
        conn: Connection,
        instance: SagaInstance,
        event: SagaEvent,
        lease_seconds: float,
        calls: Sequence[PostgresCall],
        written: Transition | None,
        plan: Plan,
    ) -> tuple[bool, float | None]:
        """The unit whose actions are all ``calls`` as one statement (see ``_chain``):
        whether it applied (else nothing stays), and the saga's lease."""
        try:
            row = await conn.fetchrow(
                _chain(calls, insert=True),
                *_unit_arguments(instance, event, written, lease_seconds),
                *_call_arguments(calls),
            )
        except PostgresError:
            # Discarded (``sagakit_discard_unit``: refused, or the key taken meanwhile), or
            # an action failed: nothing stays. Run one action at a time, where a failure
            # abandons the unit as it always did.
            return False, None
        assert row is not None
        if row["taken"]:
            raise _Taken(ran=False)  # the plan waits for its confirmation: unfinished
        try:
            plan.send(None)  # confirmed: the plan returns ``written``
        except StopIteration:
            lease: float | None = row["lease_until"]
            return True, lease
        raise StoreError("a unit's plan went on after its confirmation")

    async def _transaction(
        self,
        conn: Connection,
        instance: SagaInstance,
        event: SagaEvent,
        lease_seconds: float,
        plan: Plan,
        calls: Sequence[PostgresCall],
        pending: object,
    ) -> float | None:
        """The unit as a transaction: ``calls`` (sent tentative results) in one statement,
        then the plan from its ``pending`` action on, the saga's insert, the COMMIT.
        ``_Retry`` (rolled back) if a call's tentative result was wrong."""
        prepared = prepared_names(conn)
        # A session's first unit prepares the ended saga's insert in the same message.
        await conn.execute(
            "BEGIN" if ENDED in prepared else f"PREPARE {ENDED} AS {INSERT_ENDED}; BEGIN"
        )
        prepared.add(ENDED)
        try:
            if calls:
                try:
                    row = await conn.fetchrow(
                        _chain(calls, insert=False),
                        *_key_arguments(instance),
                        *_call_arguments(calls),
                    )
                except PostgresError:
                    raise _Retry from None  # an action failed: one at a time, it abandons
                assert row is not None
                if row["taken"]:
                    raise _Taken(ran=False)
                if not row["applied"]:
                    raise _Retry
            written = await self._run_plan(conn, plan, instance, pending, checked=bool(calls))
            if written is not None and written.release:
                # Ended: the insert and the COMMIT in one message (simple query protocol).
                document = _ended_document(instance, event, written)
                tag = _dollar_tag(document)
                try:
                    status = await conn.execute(f"EXECUTE {ENDED}({tag}{document}{tag}); COMMIT")
                except UniqueViolationError as taken:
                    if taken.constraint_name == ONE_PER_KEY:
                        raise _Taken(ran=True) from None
                    raise
                if status != "COMMIT":  # pragma: no cover - an error would have been raised
                    raise StoreError(f"PostgreSQL unit ended with {status!r}, not COMMIT")
                return None
            inserted = await conn.fetchrow(
                INSERT_UNIT, *_unit_arguments(instance, event, written, lease_seconds)
            )
            if inserted is None:
                raise _Taken(ran=True)  # a saga that is not compensated took the key
            await conn.execute("COMMIT")
            lease_until: float | None = inserted["lease_until"]
            return lease_until
        except BaseException:
            if not conn.is_closed() and conn.is_in_transaction():
                with contextlib.suppress(*DRIVER_ERRORS):
                    await conn.execute("ROLLBACK")
            raise

    async def _run_plan(
        self, conn: Connection, plan: Plan, instance: SagaInstance, action: object, *, checked: bool
    ) -> Transition | None:
        """Drive ``plan`` on from ``action``; an action that fails (rather than refuses)
        abandons the unit.

        Unless ``checked``, the saga's business key is checked with the first action (in
        its statement when it is a call): a key taken raises ``_Taken`` before anything is
        applied. No savepoints: they would cost two round trips per action, for the rare
        action that errors. A refusal keeps what it wrote (its inbox row), as it must.
        """
        unchecked = not checked and instance.business_key is not None
        while True:
            result: JSON = None
            error: Exception | None = None
            if isinstance(action, Confirm):
                pass  # the tentative results it was sent were right: the chain applied
            elif not isinstance(action, PostgresAction) or action.db is not self.db:
                error = StoreError("not a local action of this PostgreSQL store")
            else:
                try:
                    if unchecked:  # the first action: the key is checked with it
                        unchecked = False
                        result = await self._checked(conn, instance, action)
                    else:
                        result = await action.run(conn)
                except StepFailed as refusal:
                    error = refusal
                except _Taken:
                    raise
                except Exception as raised:
                    raise _Abandoned from raised
            try:
                action = plan.send(result) if error is None else plan.throw(error)
            except StopIteration as end:
                written: Transition | None = end.value
                return written

    async def _checked(
        self, conn: Connection, instance: SagaInstance, action: PostgresAction
    ) -> JSON:
        """Run a unit's first ``action`` if no live saga holds the key (``_Taken`` if one
        does): one statement when the action is a call."""
        if action.call is None:
            if await conn.fetchval(KEY_TAKEN, instance.name, instance.business_key):
                raise _Taken(ran=False)
            return await action.run(conn)
        row = await conn.fetchrow(
            _chain([action.call], insert=False), *_key_arguments(instance), *action.call.args
        )
        assert row is not None
        if row["taken"]:
            raise _Taken(ran=False)
        return action.call.outcome(row["r0"])

    async def transition(self, change: Transition) -> bool:
        return await self._transitions.submit(change)

    async def _write_transitions(self, changes: Sequence[Transition]) -> list[bool | BaseException]:
        """Write a batch of transitions (of distinct sagas) in one statement and one commit."""
        async with self.db.connection("transition") as conn:
            rows = await conn.fetch(UPDATE_FENCED, *_transition_arguments(changes))
        # Keyed by fence too: a stale driver and the new owner may share a batch.
        written = {(r["saga_id"], r["fence"]): bool(r["cancel_requested"]) for r in rows}
        return [written.get((c.saga_id, c.fence), LeaseLost(c.saga_id)) for c in changes]

    async def transition_with(
        self,
        change: Transition,
        action: object,
        index: int,
        *,
        outgoing: Outgoing | None = None,
    ) -> tuple[bool, JSON]:
        if not isinstance(action, PostgresAction) or action.db is not self.db:
            raise StoreError("not a local action of this PostgreSQL store")
        # One transaction: an error or a stale fence rolls the action back too. A refusal
        # keeps what the action wrote (its inbox row recording the refusal) and records no
        # success: the orchestrator records the refusal next.
        refusal: StepFailed | None = None
        async with self.db.transaction("local action") as conn:
            try:
                result = await action.run(conn)
            except StepFailed as refused:
                refusal = refused
            else:
                written = change.with_result(index, result, outgoing)
                rows = await conn.fetch(UPDATE_FENCED, *_transition_arguments([written]))
                if not rows:
                    raise LeaseLost(change.saga_id)
        if refusal is not None:
            raise refusal
        return bool(rows[0]["cancel_requested"]), result

    async def claim(self, saga_id: str, *, owner: str, lease_seconds: float) -> SagaInstance | None:
        # The claim and its event in one statement; the steps read after it commits are the
        # claimed ones: every other writer's transition is fenced out from then on.
        async with self.db.connection("claim") as conn:
            row = await conn.fetchrow(CLAIM_RECORDED, owner, lease_seconds, saga_id)
            if row is None:
                return None
            return (await _with_steps(conn, [row]))[0]

    async def claim_expired(
        self,
        *,
        owner: str,
        lease_seconds: float,
        limit: int,
        definitions: Collection[tuple[str, int]] | None = None,
    ) -> list[SagaInstance]:
        known = None if definitions is None else [f"{n}:{v}" for n, v in definitions]
        async with self.db.connection("claim") as conn:
            rows = await conn.fetch(CLAIM_EXPIRED_RECORDED, owner, lease_seconds, limit, known)
            return await _with_steps(conn, rows)

    async def add_signal(self, saga_id: str, name: str, payload: JSON, event: SagaEvent) -> bool:
        async with self.db.transaction("signal") as conn:
            # Locks the row, so that a driver parking the saga meanwhile is ordered with us.
            row = await conn.fetchrow(SELECT_INSTANCE + " FOR UPDATE", saga_id)
            if row is None:
                raise SagaNotFound(f"no saga {saga_id!r}")
            if row["status"] != SagaStatus.RUNNING:
                raise InvalidTransition(f"saga {saga_id} is {row['status']}, not running")
            status = await conn.execute(INSERT_SIGNAL, saga_id, name, _dump(payload))
            new = status.endswith(" 1")
            if new:
                await conn.execute(
                    INSERT_EVENT,
                    saga_id,
                    event.at,
                    event.type,
                    event.step,
                    event.attempt,
                    event.detail,
                )
            await conn.execute(WAKE, saga_id)
            return new

    async def signals(self, saga_id: str) -> dict[str, JSON]:
        async with self.db.connection("signals") as conn:
            rows = await conn.fetch(SELECT_SIGNALS, saga_id)
        return {r["name"]: _load(r["payload"]) for r in rows}

    async def wake(self, saga_id: str) -> None:
        async with self.db.connection("wake") as conn:
            await conn.execute(WAKE, saga_id)

    async def renew(
        self, *, owner: str, lease_seconds: float, saga_ids: Collection[str] | None = None
    ) -> int:
        ids = None if saga_ids is None else list(saga_ids)
        async with self.db.connection("renew") as conn:
            status = await conn.execute(RENEW, owner, lease_seconds, ids)
        return int(status.split()[-1])

    async def release(self, *, owner: str) -> int:
        async with self.db.connection("release") as conn:
            released = int((await conn.execute(RELEASE, owner)).split()[-1])
            if released:
                await conn.execute(NOTIFY_RELEASED)
        return released

    async def on_release(self, wake: Callable[[], None]) -> None:
        await self.db.listen(RELEASED_CHANNEL, wake)

    async def reopen(
        self, saga_id: str, event: SagaEvent, *, owner: str, lease_seconds: float
    ) -> SagaInstance:
        async with self.db.transaction("reopen") as conn:
            row = await conn.fetchrow(REOPEN, owner, lease_seconds, saga_id)
            if row is None:
                current = await conn.fetchrow(SELECT_INSTANCE, saga_id)
                if current is None:
                    raise SagaNotFound(f"no saga {saga_id!r}")
                raise InvalidTransition(f"saga {saga_id} is {current['status']}, not failed")
            await conn.execute(RESET_COMPENSATION_ATTEMPTS, saga_id)
            await conn.execute(
                INSERT_EVENT, saga_id, event.at, event.type, event.step, event.attempt, event.detail
            )
            return (await _with_steps(conn, [row]))[0]

    async def request_cancel(self, saga_id: str, event: SagaEvent) -> SagaInstance:
        return await self._operator_action(REQUEST_CANCEL, saga_id, event, SagaStatus.RUNNING)

    async def resolve(self, saga_id: str, event: SagaEvent) -> SagaInstance:
        return await self._operator_action(RESOLVE, saga_id, event, SagaStatus.FAILED)

    async def _operator_action(
        self, statement: str, saga_id: str, event: SagaEvent, expected: SagaStatus
    ) -> SagaInstance:
        async with self.db.transaction("operator action") as conn:
            row = await conn.fetchrow(statement, saga_id)
            if row is None:
                current = await conn.fetchrow(SELECT_INSTANCE, saga_id)
                if current is None:
                    raise SagaNotFound(f"no saga {saga_id!r}")
                raise InvalidTransition(f"saga {saga_id} is {current['status']}, not {expected}")
            await conn.execute(
                INSERT_EVENT, saga_id, event.at, event.type, event.step, event.attempt, event.detail
            )
            return (await _with_steps(conn, [row]))[0]

    async def close(self) -> None:
        await self.db.close()
