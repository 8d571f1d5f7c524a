"""What a checkout run as one unit sends to PostgreSQL: one statement (the key's check, each
action's call, the insert of the saga as it ended), committed alone; a duplicate runs no
action."""

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
    """One round trip: the key's check, payment, inventory, shipping, the insert; a second
    checkout of the same order checks the key in that statement and runs nothing."""
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
        # Refused at shipping: the one statement is discarded and the saga runs the
        # ordinary way (in the background, till it ends).
        warmed = await orch.start("checkout", checkout_input(warm), business_key="order3")
        await warmed.result(timeout=10)
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
    # One statement, committed alone: no BEGIN, no COMMIT.
    assert len(first) == 1, first
    (unit,) = first
    assert "business_key" in unit
    assert unit.index(functions[0]) < unit.index(functions[1]) < unit.index(functions[2])
    assert "INSERT INTO saga_instances" in unit
    assert "UPDATE" not in unit
    # The duplicate: the same statement, which finds the key taken and runs no action,
    # then the read of the saga that holds it.
    assert sent[0] == unit
    assert not any(f in q for q in sent[1:] for f in functions), sent
