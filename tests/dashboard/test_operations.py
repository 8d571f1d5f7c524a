"""The operator's view in Chromium: a stuck saga (its owner SIGKILLed), and a viewer's pages."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.dashboard.conftest import TOKEN, screenshot, sign_in
from tests.processes import ServeProcess, free_port

VIEWER_TOKEN = "dashboard-viewer-token"
#: The watching server: no recovery poll for an hour, and stuck after 2 s without progress.
WATCHER = {
    "SAGAKIT_ADMIN_TOKEN": TOKEN,
    "SAGAKIT_VIEWER_TOKENS": VIEWER_TOKEN,
    "SAGAKIT_POLL_SECONDS": "3600",
    # Long enough that the watcher's first recovery poll cannot take the saga over.
    "SAGAKIT_LEASE_SECONDS": "120",
    "SAGAKIT_STUCK_AFTER_SECONDS": "2",
    "SAGAKIT_LOG_FORMAT": "json",
}


@contextlib.asynccontextmanager
async def serving(db: Path, log: Path, env: dict[str, str]) -> AsyncIterator[ServeProcess]:
    """``sagakit serve`` on ``db``, killed at the end."""
    port = free_port()
    args = ["serve", "--port", str(port), "--database-url", f"sqlite:///{db}"]
    process = ServeProcess(port, args, env, log)
    try:
        await process.wait_healthy()
        yield process
    finally:
        process.close()


@pytest.fixture
async def stuck(tmp_path: Path) -> AsyncIterator[tuple[ServeProcess, str, str]]:
    """A server watching a saga whose owner was SIGKILLed: it, the saga's id, the owner."""
    db = tmp_path / "shop.db"
    crashing = {**WATCHER, "SAGAKIT_CRASH_AT": "before_do:shipping"}
    async with serving(db, tmp_path / "doomed.log", crashing) as doomed:
        async with httpx.AsyncClient(base_url=doomed.url) as http:
            with contextlib.suppress(httpx.TransportError):
                await http.post("/checkout/order1")
        assert await doomed.wait(10.0) == -9
    async with serving(db, tmp_path / "watcher.log", WATCHER) as watcher:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=watcher.url, headers=headers) as http:
            [saga] = (await http.get("/sagas")).json()["sagas"]
        yield watcher, saga["saga_id"], saga["owner"]


async def test_a_stuck_saga_is_marked_in_the_list_and_explained_on_its_page(
    stuck: tuple[ServeProcess, str, str], desktop: Page, tmp_path: Path
) -> None:
    """The list's row says stuck; the page names the dead owner, its lease, and what to do."""
    server, saga_id, owner = stuck
    await sign_in(desktop, server.url)
    row = desktop.locator("table.sagas tbody tr", has_text="order1")
    await expect(row.locator(".status.stuck")).to_have_text("stuck", timeout=15_000)
    await screenshot(desktop, tmp_path, "dashboard-stuck-list.png")

    await row.get_by_role("link").click()
    await desktop.wait_for_url(f"{server.url}/dashboard/sagas/{saga_id}")
    await expect(desktop.locator(".callout.stuck")).to_contain_text("Stuck")
    await expect(desktop.locator("main")).to_contain_text(owner)
    await expect(desktop.locator("main")).to_contain_text("lease until")
    await screenshot(desktop, tmp_path, "dashboard-stuck.png")


async def test_a_viewer_signs_in_and_sees_no_buttons(
    stuck: tuple[ServeProcess, str, str], desktop: Page
) -> None:
    """A viewer token opens the pages; the running saga's cancel button is not there."""
    server, saga_id, _ = stuck
    await desktop.goto(f"{server.url}/dashboard")
    await desktop.get_by_label("Token").fill(VIEWER_TOKEN)
    await desktop.get_by_role("button", name="Sign in").click()
    await desktop.wait_for_url(f"{server.url}/dashboard")
    await desktop.goto(f"{server.url}/dashboard/sagas/{saga_id}")
    await expect(desktop.locator("h1")).to_contain_text(saga_id)
    await expect(desktop.get_by_role("button", name="Cancel saga")).to_have_count(0)
