"""``sagakit sagas ...``, the installed command, against SQLite files these tests prepare.

The CLI knows the service's sagas (``checkout``), so the tests make ``checkout`` sagas in the
states they need with stand-in steps of the same names: the CLI then resumes them with the
real participants, whose compensations are no-ops where nothing was applied.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from sagakit.cli_sagas import actor
from sagakit.errors import StepFailed
from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import JSON, JSONObject, SagaInstance, SagaStatus
from sagakit.retry import RetryPolicy
from sagakit.saga import Saga, Step, StepContext
from sagakit.service import running_service
from sagakit.settings import Settings
from sagakit.shop.local_participants import CHECKOUT
from sagakit.store.sqlite import SqliteStore
from tests.processes import INSTALLED

ORDER: Final[JSONObject] = {
    "order_id": "order1",
    "user_id": "user1",
    "items": {"item1": 2},
    "address": "Some Street",
    "total": 20,
}
CLI_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class Ran:
    """What a ``sagakit`` subprocess did."""

    code: int
    out: str
    err: str


def environment() -> dict[str, str]:
    """This process's environment without ``SAGAKIT_*``, with quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAKIT_")}
    return {**env, "SAGAKIT_LOG_LEVEL": "warning"}


async def sagakit(*args: str) -> Ran:
    """Run the installed ``sagakit sagas ARGS`` to its end."""
    process = await asyncio.create_subprocess_exec(
        *INSTALLED,
        "sagas",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


@pytest.fixture
def url(tmp_path: Path) -> str:
    """The URL of an SQLite file for this test (not created yet)."""
    return f"sqlite:///{tmp_path / 'shop.db'}"


@pytest.fixture
async def demo(url: str) -> dict[str, str]:
    """The demo data checked out (order1 completes, order2 and order3 are refused): saga ids."""
    settings = Settings(database_url=url, demo_data=True)
    async with running_service(settings, worker=False) as service:
        return {
            order_id: (await service.checkout(order_id, wait_seconds=5)).saga.saga_id
            for order_id in ("order1", "order2", "order3")
        }


@pytest.fixture
async def store(url: str) -> AsyncIterator[SqliteStore]:
    """The saga store of the test's SQLite file, open beside the CLI's processes."""
    opened = await SqliteStore.open(url)
    try:
        yield opened
    finally:
        await opened.close()


class Payment(Step):
    """A ``payment`` that charges nothing, and whose compensation fails while ``broken``."""

    name = "payment"
    compensation_retry = RetryPolicy(max_attempts=1, initial_delay=0)

    def __init__(self, *, broken: bool) -> None:
        self.broken = broken

    async def do(self, ctx: StepContext) -> JSON:
        return {"payment_id": ctx.idempotency_key}

    async def compensate(self, ctx: StepContext) -> None:
        if self.broken:
            raise RuntimeError("payment provider [/down]")  # not console markup


class Inventory(Step):
    """An ``inventory`` that refuses, or with a gate waits until ``opened`` is set."""

    name = "inventory"

    def __init__(self, *, gated: bool = False) -> None:
        self.gated = gated
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def do(self, ctx: StepContext) -> JSON:
        if not self.gated:
            raise StepFailed("Not enough stock")
        self.entered.set()
        await self.opened.wait()
        return {"reservation_id": ctx.idempotency_key}


class Shipping(Step):
    """A ``shipping`` that ships nothing."""

    name = "shipping"

    async def do(self, ctx: StepContext) -> JSON:
        return {"shipment_id": ctx.idempotency_key}


def stand_in(payment: Payment, inventory: Inventory) -> Saga:
    """A ``checkout`` saga of stand-in steps with the real steps' names."""
    return Saga(CHECKOUT, [payment, inventory, Shipping()])


async def failed_checkout(store: SqliteStore) -> str:
    """A ``checkout`` saga whose payment could not be refunded: it is ``failed``."""
    orchestrator = SagaOrchestrator(store, [stand_in(Payment(broken=True), Inventory())])
    started = await orchestrator.start(CHECKOUT, ORDER, business_key="order1")
    ended = await orchestrator.wait(started.instance.saga_id, 5.0)
    assert ended.status is SagaStatus.FAILED, ended
    return ended.saga_id


async def running_checkout(
    store: SqliteStore, *, lease_seconds: float
) -> tuple[SagaOrchestrator, Inventory, str]:
    """A ``checkout`` saga driven here, waiting in its inventory step until let go."""
    inventory = Inventory(gated=True)
    saga = stand_in(Payment(broken=False), inventory)
    orchestrator = SagaOrchestrator(store, [saga], lease_seconds=lease_seconds)
    started = await orchestrator.start(CHECKOUT, ORDER, business_key="order1")
    await asyncio.wait_for(inventory.entered.wait(), 5.0)
    return orchestrator, inventory, started.instance.saga_id


async def stored(store: SqliteStore, saga_id: str) -> SagaInstance:
    """The saga as the database has it now."""
    saga = await store.get(saga_id)
    assert saga is not None
    return saga


async def details(store: SqliteStore, saga_id: str, type_: str) -> list[str | None]:
    """The details of the saga's events of ``type_``, oldest first."""
    return [e.detail for e in await store.events(saga_id) if e.type == type_]


async def cancel_requested(store: SqliteStore, saga_id: str) -> None:
    """Return once an operator has asked to cancel the saga."""
    async with asyncio.timeout(CLI_SECONDS):
        while True:
            if (await stored(store, saga_id)).cancel_requested:
                return
            await asyncio.sleep(0.02)


def lines_with(text: str, *needles: str) -> list[str]:
    """The lines of ``text`` that hold every one of ``needles``."""
    return [line for line in text.splitlines() if all(n in line for n in needles)]


# -- list -------------------------------------------------------------------------------------


async def test_sagas_list_prints_every_saga_newest_first_and_the_counts(
    url: str, demo: dict[str, str]
) -> None:
    """``sagas list`` prints a row per saga, newest first, and the counts per status."""
    ran = await sagakit("list", "--database-url", url)

    assert (ran.code, ran.err) == (0, "")
    rows = [lines_with(ran.out, demo[o]) for o in ("order3", "order2", "order1")]
    assert all(len(r) == 1 for r in rows), ran.out
    assert "compensated" in rows[0][0]
    assert "Invalid shipping address" in rows[0][0]
    assert "Insufficient balance" in rows[1][0]
    assert "completed" in rows[2][0]
    positions = [ran.out.index(demo[o]) for o in ("order3", "order2", "order1")]
    assert positions == sorted(positions)
    assert lines_with(ran.out, "running 0", "completed 1", "compensated 2", "failed 0")
    assert "--cursor" not in ran.out


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (["--status", "compensated"], ["order3", "order2"]),
        (["--status", "completed"], ["order1"]),
        (["--key", "order2"], ["order2"]),
        (["--name", "checkout", "--key", "order3"], ["order3"]),
        (["--after", "2000-01-01T00:00:00Z", "--status", "completed"], ["order1"]),
        (["--before", "2000-01-01"], []),
        (["--name", "refund"], []),
    ],
)
async def test_sagas_list_filters_print_only_the_matching_sagas(
    url: str, demo: dict[str, str], flags: list[str], shown: list[str]
) -> None:
    """Each filter flag keeps only the sagas that match it; none matching says so."""
    ran = await sagakit("list", "--database-url", url, *flags)

    assert ran.code == 0, ran.err
    assert [o for o in demo if demo[o] in ran.out] == sorted(shown)
    assert ("no sagas match" in ran.out) == (not shown)


async def test_sagas_list_limit_prints_a_cursor_that_lists_the_rest(
    url: str, demo: dict[str, str]
) -> None:
    """``--limit 2`` prints the two newest and a cursor; that cursor prints the oldest."""
    first = await sagakit("list", "--database-url", url, "--limit", "2")
    (hint,) = lines_with(first.out, "--cursor")
    cursor = hint.split("--cursor ")[1].split()[0]

    rest = await sagakit("list", "--database-url", url, "--limit", "2", "--cursor", cursor)

    assert [o for o in demo if demo[o] in first.out] == ["order2", "order3"]
    assert [o for o in demo if demo[o] in rest.out] == ["order1"]
    assert "--cursor" not in rest.out


# -- show -------------------------------------------------------------------------------------


async def test_sagas_show_prints_the_steps_and_the_history(url: str, demo: dict[str, str]) -> None:
    """``sagas show`` prints the saga, each step with its status, and every event in order."""
    ran = await sagakit("show", demo["order3"], "--database-url", url)

    assert (ran.code, ran.err) == (0, "")
    assert lines_with(ran.out, "status", "compensated")
    assert lines_with(ran.out, "payment", "compensated", "ms")
    assert lines_with(ran.out, "shipping", "failed", "Invalid shipping address")
    events = ["saga_started", "step_failed", "compensation_succeeded", "saga_compensated"]
    positions = [ran.out.index(e) for e in events]
    assert positions == sorted(positions)


async def test_sagas_show_of_an_unknown_saga_exits_1_with_one_line_on_stderr(
    url: str, demo: dict[str, str]
) -> None:
    """An unknown id exits 1 and says so in one line on stderr, nothing on stdout."""
    ran = await sagakit("show", "nosuchsaga", "--database-url", url)

    assert ran == Ran(1, "", "sagakit: no saga 'nosuchsaga'\n")


async def test_sagas_show_and_list_print_a_saga_s_error_literally(
    url: str, store: SqliteStore
) -> None:
    """An error holding console markup (``[/down]``) is printed as written, never parsed."""
    saga_id = await failed_checkout(store)
    error = "compensation of payment failed: RuntimeError: payment provider [/down]"

    shown = await sagakit("show", saga_id, "--database-url", url)
    listed = await sagakit("list", "--status", "failed", "--database-url", url)

    assert (shown.code, shown.err) == (0, "")
    assert lines_with(shown.out, "error", error)
    assert (listed.code, listed.err) == (0, "")
    assert lines_with(listed.out, saga_id, "failed", "payment provider [/down]")


# -- retry ------------------------------------------------------------------------------------


async def test_sagas_retry_of_a_failed_checkout_compensates_it_and_exits_0(
    url: str, store: SqliteStore
) -> None:
    """``sagas retry`` resumes the compensation in the CLI process and waits for its end."""
    saga_id = await failed_checkout(store)

    ran = await sagakit("retry", saga_id, "--database-url", url)

    assert (ran.code, ran.err) == (0, "")
    assert lines_with(ran.out, saga_id, "compensated")
    saga = await stored(store, saga_id)
    assert saga.status is SagaStatus.COMPENSATED
    assert [s.status.value for s in saga.steps] == ["compensated", "failed", "pending"]
    assert await details(store, saga_id, "operator_retry") == [f"retry requested by {actor()}"]


async def test_sagas_retry_of_a_saga_that_is_not_failed_exits_1(
    url: str, demo: dict[str, str], store: SqliteStore
) -> None:
    """Retrying a completed saga exits 1 with the reason in one line, and changes nothing."""
    saga_id = demo["order1"]

    ran = await sagakit("retry", saga_id, "--database-url", url)

    assert ran == Ran(1, "", f"sagakit: saga {saga_id} is completed, not failed\n")
    assert (await stored(store, saga_id)).status is SagaStatus.COMPLETED
    assert await details(store, saga_id, "operator_retry") == []


# -- cancel -----------------------------------------------------------------------------------


async def test_sagas_cancel_waits_while_the_saga_s_driver_compensates_it(
    url: str, store: SqliteStore
) -> None:
    """The CLI asks; the process that drives the saga compensates it; the CLI reports that."""
    orchestrator, inventory, saga_id = await running_checkout(store, lease_seconds=30.0)
    cli = asyncio.create_task(sagakit("cancel", saga_id, "--database-url", url))
    try:
        await cancel_requested(store, saga_id)
    finally:
        inventory.opened.set()

    ran = await cli

    assert (ran.code, ran.err) == (0, "")
    assert lines_with(ran.out, saga_id, "compensated")
    saga = await orchestrator.wait(saga_id, 5.0)
    assert (saga.status, saga.error) == (SagaStatus.COMPENSATED, "cancelled by an operator")
    assert await details(store, saga_id, "operator_cancel") == [f"cancel requested by {actor()}"]
    assert await details(store, saga_id, "saga_claimed") == []  # the CLI never took it over


async def test_sagas_cancel_of_an_abandoned_saga_takes_it_over_and_compensates_it(
    url: str, store: SqliteStore
) -> None:
    """A running saga whose driver is gone is claimed by the CLI once its lease runs out."""
    orchestrator, _, saga_id = await running_checkout(store, lease_seconds=0.3)
    driver = orchestrator.drive(await stored(store, saga_id))  # the task driving it already
    driver.cancel()  # the driver dies; its lease is left to run out
    await asyncio.gather(driver, return_exceptions=True)

    ran = await sagakit("cancel", saga_id, "--database-url", url)

    assert ran.code == 0, ran.err  # stderr has the log of what this CLI process drove
    assert lines_with(ran.out, saga_id, "compensated")
    saga = await stored(store, saga_id)
    assert saga.status is SagaStatus.COMPENSATED
    assert [s.status.value for s in saga.steps] == ["compensated", "compensated", "pending"]
    types = [e.type for e in await store.events(saga_id)]
    assert types.index("operator_cancel") < types.index("saga_cancelled")
    assert types[-1] == "saga_compensated"


async def test_sagas_cancel_that_outlasts_its_timeout_exits_0_and_leaves_it_to_a_worker(
    url: str, store: SqliteStore
) -> None:
    """With ``--timeout`` run out the CLI says the saga is still running, and lets go."""
    orchestrator, inventory, saga_id = await running_checkout(store, lease_seconds=30.0)
    try:
        ran = await sagakit("cancel", saga_id, "--database-url", url, "--timeout", "0.5")
    finally:
        inventory.opened.set()

    assert ran.code == 0, ran.err
    assert lines_with(ran.out, saga_id, "still running after 0.5s")
    assert (await orchestrator.wait(saga_id, 5.0)).status is SagaStatus.COMPENSATED


@pytest.mark.parametrize("order_id", ["order1", "order3"])
async def test_sagas_cancel_of_a_finished_saga_exits_1(
    url: str, demo: dict[str, str], store: SqliteStore, order_id: str
) -> None:
    """A completed or compensated saga cannot be cancelled: exit 1, one line, no change."""
    saga_id = demo[order_id]
    before = await stored(store, saga_id)

    ran = await sagakit("cancel", saga_id, "--database-url", url)

    assert ran == Ran(1, "", f"sagakit: saga {saga_id} is {before.status}, not running\n")
    assert await stored(store, saga_id) == before


# -- resolve ----------------------------------------------------------------------------------


async def test_sagas_resolve_marks_a_failed_saga_compensated_with_the_reason(
    url: str, store: SqliteStore
) -> None:
    """``sagas resolve --reason`` makes a failed saga compensated and records who and why."""
    saga_id = await failed_checkout(store)

    ran = await sagakit("resolve", saga_id, "--reason", "refunded by hand", "--database-url", url)

    assert (ran.code, ran.err) == (0, "")
    assert lines_with(ran.out, saga_id, "compensated")
    assert (await stored(store, saga_id)).status is SagaStatus.COMPENSATED
    assert await details(store, saga_id, "operator_resolved") == [
        f"resolved by {actor()}: refunded by hand"
    ]


async def test_sagas_resolve_of_a_saga_that_is_not_failed_exits_1(
    url: str, demo: dict[str, str], store: SqliteStore
) -> None:
    """Resolving a compensated saga exits 1 with the reason, and records nothing."""
    saga_id = demo["order2"]

    ran = await sagakit("resolve", saga_id, "--reason", "why not", "--database-url", url)

    assert ran == Ran(1, "", f"sagakit: saga {saga_id} is compensated, not failed\n")
    assert await details(store, saga_id, "operator_resolved") == []


@pytest.mark.parametrize(
    "reason",
    [None, "", "   ", "r" * 1001],
    ids=["missing", "empty", "blank", "too-long"],
)
async def test_sagas_resolve_without_a_usable_reason_exits_2_and_changes_nothing(
    url: str, store: SqliteStore, reason: str | None
) -> None:
    """A missing, blank or overlong ``--reason`` is a usage error: exit 2, saga still failed."""
    saga_id = await failed_checkout(store)
    flags = [] if reason is None else ["--reason", reason]

    ran = await sagakit("resolve", saga_id, "--database-url", url, *flags)

    assert ran.code == 2
    assert "--reason" in ran.err
    assert (await stored(store, saga_id)).status is SagaStatus.FAILED


# -- usage and databases ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["list", "--status", "bogus"],
        ["list", "--limit", "0"],
        ["list", "--limit", "501"],
        ["list", "--after", "yesterday"],
        ["list", "--cursor", "abc"],
        ["show"],
        ["show", "not/an/id"],
        ["retry", "s1", "--timeout", "0"],
        ["cancel", "s1", "--timeout", "soon"],
    ],
    ids=lambda a: " ".join(a) or "nothing",
)
async def test_sagas_with_bad_arguments_exits_2_with_the_usage(url: str, args: list[str]) -> None:
    """Bad or missing arguments exit 2 and print the usage on stderr."""
    ran = await sagakit(*args)

    assert ran.code == 2
    assert ran.out == ""
    assert "usage: sagakit sagas" in ran.err


async def test_sagas_on_a_missing_database_exits_1_and_creates_no_file(tmp_path: Path) -> None:
    """Pointed at an SQLite file that does not exist, the CLI says so and creates nothing."""
    path = tmp_path / "absent.db"

    ran = await sagakit("list", "--database-url", f"sqlite:///{path}")

    assert ran == Ran(1, "", f"sagakit: no database at {path}\n")
    assert not path.exists()
