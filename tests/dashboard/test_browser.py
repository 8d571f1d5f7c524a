"""The dashboard in headless Chromium against a real server: sign in, read, act, on a phone."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from tests.dashboard.conftest import PHONE, Shop, screenshot, sign_in

#: Long enough for a saga page's auto-refresh (2 s) or the list's (5 s) to come round.
REFRESH_TIMEOUT_MS = 15_000


async def test_operator_finds_a_compensated_checkout_and_its_failed_step(
    shop: Shop, desktop: Page, tmp_path: Path
) -> None:
    """Signed in, the list shows order3's saga compensated; its page shows shipping's error."""
    await shop.checkout("order1")
    await shop.checkout("order2")
    saga_id = await shop.checkout("order3")

    await desktop.goto(f"{shop.url}/dashboard")
    await expect(desktop.get_by_role("heading", name="sagakit dashboard")).to_be_visible()
    await expect(desktop.locator("table")).to_have_count(0)
    await sign_in(desktop, shop.url)

    row = desktop.locator("table.sagas tbody tr", has_text="order3")
    await expect(row.locator(".status")).to_have_text("compensated")
    await expect(row).to_contain_text("Invalid shipping address")
    await screenshot(desktop, tmp_path, "dashboard-list.png")
    await row.get_by_role("link").click()

    await desktop.wait_for_url(f"{shop.url}/dashboard/sagas/{saga_id}")
    await expect(desktop.locator("h1")).to_contain_text(saga_id)
    shipping = desktop.locator("ol.timeline li.action", has_text="shipping")
    await expect(shipping.locator(".result")).to_have_text("failed")
    await expect(shipping.locator(".detail")).to_have_text("Invalid shipping address")
    undo = desktop.locator("ol.timeline li.compensation")
    await expect(undo.locator(".what")).to_have_text(
        ["undo inventory attempt 1", "undo payment attempt 1"]
    )
    await expect(undo.locator(".result")).to_have_text(["compensated", "compensated"])
    await expect(desktop.get_by_role("button", name="Retry compensation")).to_have_count(0)


async def test_retry_in_the_dashboard_finishes_a_failed_compensation(
    shop: Shop, desktop: Page, tmp_path: Path
) -> None:
    """A checkout whose refund failed for good is failed; after the repair, retry compensates it."""
    shop.break_refunds()
    saga_id = await shop.checkout("order3")
    assert (await shop.saga(saga_id))["status"] == "failed"
    assert await shop.balance("user1") == 90
    shop.mend_refunds()

    await sign_in(desktop, shop.url)
    await desktop.goto(f"{shop.url}/dashboard/sagas/{saga_id}")
    status = desktop.locator(".summary .status")
    await expect(status).to_have_text("failed")
    await expect(desktop.locator(".callout")).to_contain_text(
        "the payment provider refuses refunds"
    )
    undo_payment = desktop.locator("ol.timeline li.compensation", has_text="undo payment")
    await expect(undo_payment.locator(".result")).to_have_text(["error", "gave up"])
    await screenshot(desktop, tmp_path, "dashboard-failed.png", full_page=True)

    await desktop.get_by_role("button", name="Retry compensation").click()

    await expect(status).to_have_text("compensated", timeout=REFRESH_TIMEOUT_MS)
    await expect(undo_payment.locator(".result")).to_have_text(["error", "gave up", "compensated"])
    await screenshot(desktop, tmp_path, "dashboard-saga.png", full_page=True)
    body = await shop.saga(saga_id)
    assert body["status"] == "compensated"
    events = body["events"]
    assert isinstance(events, list)
    cookies = await desktop.context.cookies()
    session = next(c["value"] for c in cookies if c["name"] == "sagakit_session")
    assert [e["detail"] for e in events if e["type"] == "operator_retry"] == [
        f"retry requested by dashboard:{session[:8]}"
    ]
    assert await shop.balance("user1") == 100


async def test_list_shows_a_new_saga_without_being_reloaded(shop: Shop, desktop: Page) -> None:
    """The list refreshes itself in place: a checkout made after it loaded appears in it."""
    await sign_in(desktop, shop.url)
    await expect(desktop.locator(".empty")).to_have_text("No saga matches.")
    navigations: list[str] = []
    desktop.on("framenavigated", lambda frame: navigations.append(frame.url))

    await shop.checkout("order1")

    row = desktop.locator("table.sagas tbody tr", has_text="order1")
    await expect(row.locator(".status")).to_have_text("completed", timeout=REFRESH_TIMEOUT_MS)
    assert navigations == []


async def test_dashboard_fits_a_phone_screen_without_sideways_scrolling(
    shop: Shop, phone: Page, tmp_path: Path
) -> None:
    """At 390 px wide the list and a saga's page fit the screen and keep status and errors."""
    await shop.checkout("order1")
    saga_id = await shop.checkout("order3")
    width = PHONE["width"]

    await sign_in(phone, shop.url)
    row = phone.locator("table.sagas tbody tr", has_text="order3")
    await expect(row.locator(".status")).to_be_visible()
    await expect(row.get_by_text("Invalid shipping address")).to_be_visible()
    assert await phone.evaluate("document.documentElement.scrollWidth") <= width
    await screenshot(phone, tmp_path, "dashboard-list-phone.png")

    await phone.goto(f"{shop.url}/dashboard/sagas/{saga_id}")
    await expect(phone.locator("ol.timeline li.action", has_text="shipping")).to_be_visible()
    assert await phone.evaluate("document.documentElement.scrollWidth") <= width
    await screenshot(phone, tmp_path, "dashboard-saga-phone.png", full_page=True)
