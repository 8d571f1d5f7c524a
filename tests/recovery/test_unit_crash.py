"""SIGKILL at every point of a checkout run as one unit: before its commit nothing, after it all.

A child process (``tests/recovery/unit_child.py``) checks a demo order out with the
one-unit path and kills itself at a point inside the unit, or just after its commit. The
database is then read: a kill inside leaves no saga and no effect at all (the client got
no answer and checks out again, which then completes); a kill after the commit leaves the
whole saga, its history and its effects, with nothing left to do.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Final

import pytest

from sagakit.records import SagaStatus
from sagakit.store import SagaStore
from sagakit.store.postgres import PostgresStore
from sagakit.store.sqlite import SqliteStore
from tests.history import Event, violations

#: order1 completes; order3 is refused at shipping and compensated inside the unit.
INSIDE: Final = [
    ("order1", "before_do:payment"),
    ("order1", "after_do:payment"),
    ("order1", "before_do:inventory"),
    ("order1", "after_do:inventory"),
    ("order1", "after_do:shipping"),
    ("order3", "before_compensate:inventory"),
    ("order3", "after_compensate:inventory"),
    ("order3", "after_compensate:payment"),
]
ENDS: Final = {"order1": SagaStatus.COMPLETED, "order3": SagaStatus.COMPENSATED}
LEDGER: Final = (
    "SELECT (SELECT count(*) FROM payments) + (SELECT count(*) FROM reservations)"
    " + (SELECT count(*) FROM shipments)"
)


async def child(url: str, order_id: str, point: str) -> tuple[int, str]:
    """Run the child to its end (or its kill): its exit code and what it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.recovery.unit_child",
        url,
        order_id,
        point,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def open_store(url: str) -> SagaStore:
    """The saga store at ``url`` (to read what the child left)."""
    if url.startswith("sqlite"):
        return await SqliteStore.open(url)
    return await PostgresStore.open(url)


async def effects(store: SagaStore) -> int:
    """How many inbox rows the participants hold (effects, refusals and tombstones)."""
    if isinstance(store, SqliteStore):
        return int((await store.db.read(lambda conn: conn.execute(LEDGER).fetchone()))[0])
    assert isinstance(store, PostgresStore)
    async with store.db.connection() as conn:
        return int(await conn.fetchval(LEDGER))


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.mark.parametrize(("order_id", "point"), INSIDE, ids=[f"{o}-{p}" for o, p in INSIDE])
async def test_kill_inside_the_unit_leaves_nothing_and_a_new_checkout_completes(
    url: str, order_id: str, point: str
) -> None:
    """A SIGKILL before the unit's commit leaves no saga, no history and no effect."""
    code, output = await child(url, order_id, point)
    assert code == -signal.SIGKILL, output
    store = await open_store(url)
    try:
        assert (await store.list_sagas()).sagas == ()
        assert await effects(store) == 0
    finally:
        await store.close()

    code, output = await child(url, order_id, "none")  # the client checks out again

    assert (code, output.strip().splitlines()[-1]) == (0, str(ENDS[order_id]))


@pytest.mark.parametrize("order_id", list(ENDS))
async def test_kill_after_the_units_commit_leaves_the_whole_saga_with_nothing_to_do(
    url: str, order_id: str
) -> None:
    """A SIGKILL once the unit is durable leaves the saga ended, with its history and effects."""
    code, output = await child(url, order_id, "after_commit")
    assert code == -signal.SIGKILL, output
    store = await open_store(url)
    try:
        (saga,) = (await store.list_sagas()).sagas
        events = [Event(e.type, e.step, e.attempt) for e in await store.events(saga.saga_id)]
        inbox = await effects(store)
    finally:
        await store.close()

    assert saga.status is ENDS[order_id]
    assert (saga.owner, saga.lease_until) == (None, None)  # nothing left for recovery
    assert events[0] == Event("saga_started", "payment", 1)
    assert events[-1].type == f"saga_{ENDS[order_id]}"
    assert violations(saga.saga_id, events, status=saga.status.value) == []
    assert inbox == 3  # three effects, or two undone and a refusal: one row each
