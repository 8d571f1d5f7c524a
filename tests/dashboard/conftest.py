"""The dashboard in a real browser: a real ``sagakit serve`` and Debian's headless Chromium.

The server is the CLI in a subprocess on a fresh SQLite file. A saga that fails for good is
made honestly, in the checkout domain itself: a trigger in the shop's database refuses to
mark payments refunded, so the payment's compensation fails (twice:
``SAGAKIT_COMPENSATION_ATTEMPTS=2``) and the saga ends ``failed``; dropping the trigger is
the operator's repair, after which the dashboard's retry finishes the compensation.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright, never a browser
Playwright downloads. Without it these tests are skipped, unless ``SAGAKIT_REQUIRE_BROWSER``
is set (CI sets it), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright

from tests.processes import ServeProcess, free_port

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
]
TOKEN: Final = "dashboard-test-token"
DESKTOP: Final[ViewportSize] = {"width": 1280, "height": 860}
PHONE: Final[ViewportSize] = {"width": 390, "height": 844}
#: Where screenshots are copied for the docs (``scripts/screenshots`` sets it to docs/img).
SCREENSHOT_DIR_ENV: Final = "SAGAKIT_SCREENSHOT_DIR"

BREAK_REFUNDS: Final = """
CREATE TRIGGER refunds_refused BEFORE UPDATE OF status ON payments
WHEN NEW.status = 'refunded'
BEGIN SELECT RAISE(ABORT, 'the payment provider refuses refunds'); END
"""
MEND_REFUNDS: Final = "DROP TRIGGER refunds_refused"


class Shop:
    """The running server, its database file, and an HTTP client for the API."""

    def __init__(self, server: ServeProcess, db: Path, http: httpx.AsyncClient) -> None:
        self.server = server
        self.url = server.url
        self.db = db
        self.http = http

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db, timeout=30.0)
        try:
            yield conn
            conn.commit()
        finally:
            conn.close()

    def break_refunds(self) -> None:
        """Make every refund fail in the database, as a provider that refuses them would."""
        with self._connect() as conn:
            conn.execute(BREAK_REFUNDS)

    def mend_refunds(self) -> None:
        """Let refunds through again: the operator's repair."""
        with self._connect() as conn:
            conn.execute(MEND_REFUNDS)

    async def checkout(self, order_id: str) -> str:
        """Check ``order_id`` out through the API; its saga's id."""
        response = await self.http.post(f"/checkout/{order_id}")
        assert response.status_code in (200, 400, 409), response.text
        saga_id: str = response.json()["saga_id"]
        return saga_id

    async def saga(self, saga_id: str) -> dict[str, object]:
        """``GET /sagas/{saga_id}``."""
        response = await self.http.get(f"/sagas/{saga_id}")
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    async def balance(self, user_id: str) -> int:
        """The user's balance, through the API."""
        balance: int = (await self.http.get(f"/users/{user_id}")).json()["balance"]
        return balance


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    """``sagakit serve`` on a free port and a fresh database, stopped with SIGTERM after."""
    port = free_port()
    db = tmp_path / "x.db"
    args = ["serve", "--port", str(port), "--database-url", f"sqlite:///{db}"]
    env = {
        "SAGAKIT_ADMIN_TOKEN": TOKEN,
        "SAGAKIT_COMPENSATION_ATTEMPTS": "2",
        "SAGAKIT_LOG_FORMAT": "json",
    }
    server = ServeProcess(port, args, env, tmp_path / "serve.log")
    try:
        await server.wait_healthy()
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30.0, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            yield Shop(server, db, http)
        await server.terminate()
    finally:
        server.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright."""
    if not CHROMIUM.exists():
        message = "Debian's chromium is not installed: apt-get install -y chromium"
        if os.environ.get("SAGAKIT_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def desktop(browser: Browser) -> AsyncIterator[Page]:
    """A page in a desktop-sized window."""
    context = await browser.new_context(viewport=DESKTOP)
    try:
        yield await context.new_page()
    finally:
        await context.close()


@pytest.fixture
async def phone(browser: Browser) -> AsyncIterator[Page]:
    """A page on a phone-sized touch screen, 390 CSS pixels wide."""
    context = await browser.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def sign_in(page: Page, url: str) -> None:
    """Open the dashboard, see the sign-in form, and sign in with the admin token."""
    await page.goto(f"{url}/dashboard")
    await page.get_by_label("Token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{url}/dashboard")


def _keep(png: bytes, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(png)
    if target := os.environ.get(SCREENSHOT_DIR_ENV):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / name)
    return path


async def screenshot(page: Page, tmp_path: Path, name: str, *, full_page: bool = False) -> Path:
    """Save a PNG screenshot under ``tmp_path`` (and the docs' directory when asked)."""
    if full_page:
        png = await page.screenshot(full_page=True)
    else:  # the window down to the end of the content, not the blank below it
        bottom = await page.evaluate(
            "document.querySelector('main').getBoundingClientRect().bottom"
        )
        size = page.viewport_size
        assert size is not None
        height = min(size["height"], int(bottom) + 24)
        png = await page.screenshot(clip={"x": 0, "y": 0, "width": size["width"], "height": height})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return await asyncio.to_thread(_keep, png, tmp_path, name)
