"""Commands sent straight to real participant processes: duplicates, tombstones, refusals."""

from __future__ import annotations

import asyncio

import httpx

from tests.distributed.conftest import Distributed


def key(name: str) -> dict[str, str]:
    """The header carrying the idempotency key ``name``."""
    return {"Idempotency-Key": name}


async def test_duplicated_charges_debit_once_and_answer_the_same_result(
    distributed: Distributed,
) -> None:
    """One charge sent twice, then ten times at once, debits user1 once."""
    await distributed.participant("payment")
    body = {"user_id": "user1", "amount": 30}
    async with httpx.AsyncClient(base_url=distributed.participant_url("payment")) as client:
        first = await client.post("/payment/charge", json=body, headers=key("s1:payment"))
        second = await client.post("/payment/charge", json=body, headers=key("s1:payment"))
        burst = await asyncio.gather(
            *(
                client.post("/payment/charge", json=body, headers=key("s1:payment"))
                for _ in range(10)
            )
        )
        user = (await client.get("/users/user1")).json()

    assert {r.status_code for r in (first, second, *burst)} == {200}
    assert {r.json()["payment_id"] for r in (first, second, *burst)} == {"s1:payment"}
    assert user["balance"] == 70
    assert distributed.rows_of("payment", "SELECT status, amount FROM payments") == [
        ("charged", 30)
    ]


async def test_duplicated_refunds_credit_once(distributed: Distributed) -> None:
    """A refund sent three times puts the money back once."""
    await distributed.participant("payment")
    body = {"user_id": "user1", "amount": 30}
    async with httpx.AsyncClient(base_url=distributed.participant_url("payment")) as client:
        await client.post("/payment/charge", json=body, headers=key("s1:payment"))
        refunds = [
            await client.post("/payment/refund", headers=key("s1:payment")) for _ in range(3)
        ]
        user = (await client.get("/users/user1")).json()

    assert [r.json() for r in refunds] == [{"undone": True}, {"undone": False}, {"undone": False}]
    assert user["balance"] == 100


async def test_charge_after_its_refund_is_refused_by_the_tombstone(
    distributed: Distributed,
) -> None:
    """A refund that arrives first leaves a tombstone, and the late charge answers 409."""
    await distributed.participant("payment")
    async with httpx.AsyncClient(base_url=distributed.participant_url("payment")) as client:
        refund = await client.post("/payment/refund", headers=key("s1:payment"))
        late = await client.post(
            "/payment/charge",
            json={"user_id": "user1", "amount": 30},
            headers=key("s1:payment"),
        )
        user = (await client.get("/users/user1")).json()

    assert refund.json() == {"undone": False}
    assert late.status_code == 409
    assert late.json()["error"] == "compensated before it was applied"
    assert user["balance"] == 100
    assert distributed.rows_of("payment", "SELECT status FROM payments") == [("voided",)]


async def test_duplicated_reservations_take_stock_once_and_a_short_one_is_refused(
    distributed: Distributed,
) -> None:
    """A reservation sent twice takes stock once; one for more than the stock answers 409."""
    await distributed.participant("inventory")
    async with httpx.AsyncClient(base_url=distributed.participant_url("inventory")) as client:
        body = {"order_id": "o1", "lines": {"item1": 2}}
        answers = [
            await client.post("/inventory/reserve", json=body, headers=key("s1:inventory"))
            for _ in range(2)
        ]
        short = await client.post(
            "/inventory/reserve",
            json={"order_id": "o2", "lines": {"item1": 2, "item2": 9}},
            headers=key("s2:inventory"),
        )
        items = [(await client.get(f"/items/{i}")).json()["stock"] for i in ("item1", "item2")]

    assert [a.status_code for a in answers] == [200, 200]
    assert short.status_code == 409
    assert short.json()["error"] == "Not enough stock"
    assert items == [3, 3]


async def test_duplicated_shipments_ship_once_and_a_blank_address_is_refused(
    distributed: Distributed,
) -> None:
    """A shipment sent twice is recorded once; a blank address answers 409."""
    await distributed.participant("shipping")
    async with httpx.AsyncClient(base_url=distributed.participant_url("shipping")) as client:
        body = {"order_id": "o1", "address": "Some Street"}
        for _ in range(2):
            ok = await client.post("/shipping/ship", json=body, headers=key("s1:shipping"))
            assert ok.status_code == 200
        blank = await client.post(
            "/shipping/ship", json={"order_id": "o2", "address": " "}, headers=key("s2:shipping")
        )

    assert blank.status_code == 409
    assert blank.json()["error"] == "Invalid shipping address"
    assert distributed.rows_of("shipping", "SELECT status FROM shipments ORDER BY 1") == [
        ("rejected",),
        ("shipped",),
    ]


async def test_command_without_an_idempotency_key_is_rejected_with_422(
    distributed: Distributed,
) -> None:
    """A charge without its Idempotency-Key header answers 422 and debits nothing."""
    await distributed.participant("payment")
    async with httpx.AsyncClient(base_url=distributed.participant_url("payment")) as client:
        answer = await client.post("/payment/charge", json={"user_id": "user1", "amount": 30})
        user = (await client.get("/users/user1")).json()

    assert answer.status_code == 422
    assert "error" in answer.json()
    assert user["balance"] == 100
