"""What a checkout run as one unit sends to PostgreSQL: one statement per action, the key's
check inside the first, the insert of the saga as it ended in the message that commits; a
duplicate runs no action."""

from __future__ import annotations

import asyncpg

from sagakit.orchestrator import SagaOrchestrator
from sagakit.records import SagaStatus
from sagakit.shop.checkout import checkout_input
from sagakit.shop.local_participants import checkout_saga
from sagakit.shop.postgres import PostgresShop
from sagakit.store.postgres import PostgresStore
from sagakit.store.postgres_db import PostgresDatabase


async def test_a_checkout_unit_is_one_statement_per_action_and_one_insert(
    postgres_url: str,
) -> None:
    """BEGIN, the key's check with the payment, inventory, shipping, the insert with the
    COMMIT: five round trips; a second checkout of the same order checks the key, runs
    nothing."""
    db = await PostgresDatabase.connect(postgres_url, min_size=1, max_size=1)
    await db.migrate("sagas", "sagakit.store.migrations.postgres")
    store, shop = PostgresStore(db), PostgresShop(db)
    await shop.migrate()
    await shop.load_demo_data()
    orch = SagaOrchestrator(store, [checkout_saga(shop)], one_unit=True)
    sent: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        sent.append(record.query)

    try:
        warm = await shop.get_order("order3")  # refused at shipping: every statement used
        order = await shop.get_order("order1")
        assert order is not None
        assert warm is not None
        await orch.start("checkout", checkout_input(warm), business_key="order3")
        async with db.connection() as conn:  # the pool's one connection
            conn.add_query_logger(log)
        started = await orch.start("checkout", checkout_input(order), business_key="order1")
        first = list(sent)
        sent.clear()
        again = await orch.start("checkout", checkout_input(order), business_key="order1")
        async with db.connection() as conn:
            conn.remove_query_logger(log)
        await orch.shutdown()
    finally:
        await db.close()

    assert started.instance.status is SagaStatus.COMPLETED
    assert (again.created, again.instance.saga_id) == (False, started.instance.saga_id)
    functions = ["sagakit_shop_charge", "sagakit_shop_reserve", "sagakit_shop_ship"]
    assert len(first) == 5, first
    assert first[0] == "BEGIN"
    assert "business_key" in first[1]
    assert all(f in q for f, q in zip(functions, first[1:4], strict=True)), first
    # The saga, as it ended, inserted (not updated) in the message that commits.
    assert first[4].startswith("EXECUTE sagakit_insert_ended_unit(")
    assert first[4].endswith("; COMMIT")
    # The duplicate: BEGIN, the key's check (no action runs), ROLLBACK, then the read.
    assert not any(f in q for q in sent for f in functions[1:]), sent
