"""The PostgreSQL pool: what a pooled use sends, and that no session state outlives it."""

from __future__ import annotations

import asyncpg

from sagakit.store.postgres_db import PostgresDatabase


async def test_a_released_connection_sends_no_reset_query(postgres_url: str) -> None:
    """Giving a connection back to the pool costs no round trip: no reset query is sent."""
    db = await PostgresDatabase.connect(postgres_url, min_size=1, max_size=1)
    sent: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        sent.append(record.query)

    try:
        async with db.connection() as conn:
            conn.add_query_logger(log)
            await conn.fetchval("SELECT 1")
        async with db.connection() as conn:  # the same connection: the pool holds one
            await conn.fetchval("SELECT 2")
            conn.remove_query_logger(log)
    finally:
        await db.close()
    assert sent == ["SELECT 1", "SELECT 2"]


async def test_a_transaction_left_open_is_rolled_back_on_release(postgres_url: str) -> None:
    """A connection given back inside a transaction comes back out of it, its writes undone."""
    db = await PostgresDatabase.connect(postgres_url, min_size=1, max_size=1)
    try:
        async with db.connection() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS pool_probe (n integer)")
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("INSERT INTO pool_probe VALUES (1)")
        async with db.connection() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM pool_probe") == 0
            await conn.execute("DROP TABLE pool_probe")
    finally:
        await db.close()


async def test_transaction_settings_do_not_leak_to_the_next_user(postgres_url: str) -> None:
    """``SET LOCAL`` inside a transaction ends with it: the next user sees the default."""
    db = await PostgresDatabase.connect(postgres_url, min_size=1, max_size=1)
    try:
        async with db.transaction() as conn:
            await conn.execute("SET LOCAL statement_timeout = '1234ms'")
        async with db.connection() as conn:
            assert await conn.fetchval("SHOW statement_timeout") == "0"
    finally:
        await db.close()
