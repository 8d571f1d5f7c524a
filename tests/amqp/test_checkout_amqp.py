"""The checkout's contract with its participants over RabbitMQ."""

from __future__ import annotations

from tests.amqp.conftest import AmqpDistributed


async def test_demo_flow_over_amqp_completes_order1_and_refuses_order2_and_order3(
    amqp: AmqpDistributed,
) -> None:
    """order1 answers 200, order2 400 Insufficient balance, order3 400 Invalid address."""
    server = await amqp.start()
    async with server.client() as client:
        first = await client.post("/checkout/order1")
        second = await client.post("/checkout/order2")
        third = await client.post("/checkout/order3")

    assert first.status_code == 200, first.text
    assert first.json()["status"] == "completed"
    assert second.status_code == 400, second.text
    assert second.json() | {"saga_id": ""} == {
        "order_id": "order2",
        "saga_id": "",
        "status": "compensated",
        "error": "Insufficient balance",
        "failed_step": "payment",
    }
    assert third.status_code == 400, third.text
    assert (third.json()["status"], third.json()["error"], third.json()["failed_step"]) == (
        "compensated",
        "Invalid shipping address",
        "shipping",
    )
    assert amqp.integer_of("payment", "SELECT balance FROM users WHERE user_id = 'user1'") == 80
    assert amqp.rows_of("inventory", "SELECT item_id, stock FROM items ORDER BY item_id") == [
        ("item1", 3),
        ("item2", 3),
    ]
    amqp.assert_exactly_once(balance=105, stock=8)
    # Every command was published and confirmed.
    assert amqp.rows("SELECT count(*) FROM saga_outbox WHERE sent_at IS NULL") == [(0,)]
