"""``sagakit sagas ... --app module:attr``: the operator's commands on an application's sagas."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from sagakit import SagaOrchestrator, SagaStatus, StepStatus, open_store
from sagakit.records import SagaInstance
from tests.acceptance import ops_app
from tests.acceptance.test_cli_sagas import Ran, environment

ROOT: Final = Path(__file__).resolve().parents[2]
APP: Final = ("--app", "tests.acceptance.ops_app:SAGAS")


async def sagakit(url: str, *args: str) -> Ran:
    """Run ``python -m sagakit.cli sagas ARGS --database-url URL`` from the repository root."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sagakit.cli", "sagas", *args, "--database-url", url),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


@pytest.fixture
def url(tmp_path: Path) -> str:
    """An SQLite file for the sagas."""
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def release_fails() -> Iterator[None]:
    """This process's ``release`` fails (the CLI's, in its own process, does not)."""
    ops_app.RELEASE_FAILS = True
    yield
    ops_app.RELEASE_FAILS = False


async def left(url: str, input: dict[str, bool], *, signal: bool = False) -> SagaInstance:
    """A booking saga driven here until it parks (or, after ``signal``, ends), then let go."""
    orchestrator = await SagaOrchestrator.from_url(url, ops_app.SAGAS)
    try:
        handle = await orchestrator.start("booking", dict(input))
        saga = await orchestrator.wait(handle.saga_id, timeout=0.5)
        if signal:
            await orchestrator.signal(handle.saga_id, "approved", None)
            saga = await orchestrator.wait(handle.saga_id, timeout=10)
    finally:
        await orchestrator.close(grace=0)
    return saga


async def stored(url: str, saga_id: str) -> SagaInstance:
    """The saga as the database now holds it."""
    store = await open_store(url)
    try:
        saga = await store.get(saga_id)
    finally:
        await store.close()
    assert saga is not None
    return saga


async def test_signal_with_app_resumes_a_waiting_saga_to_its_end(url: str) -> None:
    """A parked saga of the app: ``signal`` delivers its payload, the CLI drives it to the end."""
    parked = await left(url, {})
    assert parked.steps[1].status is StepStatus.WAITING

    ran = await sagakit(
        url, "signal", parked.saga_id, "approved", "--payload", '{"by": "ops"}', *APP
    )

    assert ran.code == 0, ran.err
    assert "signal 'approved' delivered; saga" in ran.out
    assert "completed" in ran.out
    saga = await stored(url, parked.saga_id)
    assert saga.status is SagaStatus.COMPLETED
    assert saga.results()["approval"] == {"by": "ops"}


async def test_cancel_with_app_compensates_a_running_saga(url: str) -> None:
    """``cancel --app`` compensates the app's parked saga here; the history names the CLI."""
    parked = await left(url, {})

    ran = await sagakit(url, "cancel", parked.saga_id, *APP)

    assert ran.code == 0, ran.err
    assert (await stored(url, parked.saga_id)).status is SagaStatus.COMPENSATED


@pytest.mark.usefixtures("release_fails")
async def test_retry_with_app_finishes_a_failed_compensation(url: str) -> None:
    """A saga whose release failed for good: ``retry --app`` compensates it; without ``--app``
    the CLI says it does not know the saga and how to name it."""
    failed = await left(url, {"refuse": True}, signal=True)
    assert failed.status is SagaStatus.FAILED

    refused = await sagakit(url, "retry", failed.saga_id)
    ran = await sagakit(url, "retry", failed.saga_id, *APP)

    assert refused.code == 1
    assert "does not know saga 'booking' v1: name its definitions with --app" in refused.err
    assert ran.code == 0, ran.err
    assert (await stored(url, failed.saga_id)).status is SagaStatus.COMPENSATED


async def test_list_and_show_with_app_show_the_apps_sagas(url: str) -> None:
    """``list`` and ``show`` accept ``--app`` and show the application's sagas."""
    parked = await left(url, {})

    listing = await sagakit(url, "list", "--name", "booking", *APP)
    shown = await sagakit(url, "show", parked.saga_id, *APP)

    assert listing.code == 0, listing.err
    assert parked.saga_id[:8] in listing.out
    assert shown.code == 0, shown.err
    assert "approval" in shown.out


async def test_a_bad_app_is_refused_with_exit_code_2(url: str) -> None:
    """An ``--app`` that names nothing usable: one line, exit code 2, nothing done."""
    parked = await left(url, {})

    ran = await sagakit(url, "cancel", parked.saga_id, "--app", "tests.acceptance.ops_app:NOPE")

    assert ran.code == 2
    assert ran.err.strip() == (
        "sagakit: --app 'tests.acceptance.ops_app:NOPE':"
        " tests.acceptance.ops_app has no attribute 'NOPE'"
    )
    assert (await stored(url, parked.saga_id)).status is SagaStatus.RUNNING
