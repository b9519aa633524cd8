"""asyncpg against a real PostgreSQL, on tokioloop.

Needs ``TOKIOLOOP_PG_DSN`` (``scripts/services.sh start`` prints it); skips
when it is unset.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import os
import time
import uuid

import pytest

asyncpg = pytest.importorskip("asyncpg")

from integration_support import assert_running_tokioloop, run

DSN = os.environ.get("TOKIOLOOP_PG_DSN")
pytestmark = pytest.mark.skipif(
    not DSN, reason="TOKIOLOOP_PG_DSN is not set (start PostgreSQL with scripts/services.sh)"
)


def table_name():
    return "t_" + uuid.uuid4().hex[:12]


def test_queries_and_types():
    async def main():
        conn = await asyncpg.connect(DSN, timeout=10)
        try:
            assert await conn.fetchval("SELECT 1 + $1::int", 41) == 42
            row = await conn.fetchrow(
                "SELECT $1::text AS t, $2::numeric AS n, $3::timestamptz AS ts, "
                "$4::int[] AS arr, $5::jsonb AS j, $6::bytea AS b, $7::uuid AS u",
                "héllo",
                decimal.Decimal("1.50"),
                datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
                [1, 2, 3],
                json.dumps({"a": [1, 2]}),
                b"\x00\xff",
                uuid.UUID(int=7),
            )
            assert row["t"] == "héllo"
            assert row["n"] == decimal.Decimal("1.50")
            assert row["ts"].year == 2024
            assert row["arr"] == [1, 2, 3]
            assert json.loads(row["j"]) == {"a": [1, 2]}
            assert row["b"] == b"\x00\xff"
            assert row["u"] == uuid.UUID(int=7)
            # A big result set: many protocol messages, several socket reads.
            rows = await conn.fetch("SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g")
            assert len(rows) == 20000 and rows[-1][0] == 20000
            stmt = await conn.prepare("SELECT $1::int * 2")
            assert [await stmt.fetchval(i) for i in range(5)] == [0, 2, 4, 6, 8]
            # Server-side errors come back as exceptions, the connection survives.
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.fetch("SELECT * FROM no_such_table")
            assert await conn.fetchval("SELECT 'still usable'") == "still usable"
            assert_running_tokioloop()
        finally:
            await conn.close()

    run(main)


def test_transaction_commit_rollback_and_copy():
    async def main():
        name = table_name()
        conn = await asyncpg.connect(DSN, timeout=10)
        try:
            await conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
            async with conn.transaction():
                await conn.executemany(
                    f"INSERT INTO {name} VALUES ($1, $2)", [(i, f"v{i}") for i in range(100)]
                )
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await conn.execute(f"DELETE FROM {name}")
                    raise ZeroDivisionError
            assert await conn.fetchval(f"SELECT count(*) FROM {name}") == 100
            # Savepoints.
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {name} VALUES (1000, 'outer')")
                with pytest.raises(asyncpg.UniqueViolationError):
                    async with conn.transaction():
                        await conn.execute(f"INSERT INTO {name} VALUES (1, 'dup')")
            assert await conn.fetchval(f"SELECT v FROM {name} WHERE id = 1000") == "outer"
            # COPY in and out, and a server-side cursor.
            await conn.copy_records_to_table(
                name, records=[(2000 + i, f"c{i}") for i in range(5000)]
            )
            assert await conn.fetchval(f"SELECT count(*) FROM {name}") == 5101
            seen = 0
            async with conn.transaction():
                async for _ in conn.cursor(f"SELECT * FROM {name}", prefetch=500):
                    seen += 1
            assert seen == 5101
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
            await conn.close()

    run(main)


def test_pool_concurrent_queries():
    async def main():
        async with asyncpg.create_pool(DSN, min_size=2, max_size=5, timeout=10) as pool:

            async def one(i):
                async with pool.acquire() as conn:
                    return await conn.fetchval("SELECT $1::int FROM pg_sleep(0.1)", i)

            start = time.monotonic()
            results = await asyncio.gather(*(one(i) for i in range(20)))
            elapsed = time.monotonic() - start
            assert results == list(range(20))
            # 20 x 0.1 s on 5 connections: about 0.4 s, not 2 s.
            assert elapsed < 1.6, elapsed
            assert pool.get_size() <= 5
            # Cancelling a query mid-flight (asyncpg sends a cancel request).
            async with pool.acquire() as conn:
                with pytest.raises(asyncio.TimeoutError):
                    await conn.execute("SELECT pg_sleep(10)", timeout=0.2)
                assert await conn.fetchval("SELECT 1") == 1

    run(main)


def test_listen_notify():
    async def main():
        channel = "ch_" + uuid.uuid4().hex[:8]
        received = asyncio.Queue()
        listener = await asyncpg.connect(DSN, timeout=10)
        sender = await asyncpg.connect(DSN, timeout=10)
        try:
            await listener.add_listener(
                channel, lambda conn, pid, ch, payload: received.put_nowait(payload)
            )
            for i in range(10):
                await sender.execute("SELECT pg_notify($1, $2)", channel, f"n{i}")
            got = [await asyncio.wait_for(received.get(), 5) for _ in range(10)]
            assert got == [f"n{i}" for i in range(10)]
        finally:
            await listener.close()
            await sender.close()

    run(main)


def test_unix_socket_connection():
    """The same server over its Unix socket (loop.create_unix_connection)."""
    socket_dir = os.environ.get("TOKIOLOOP_PG_SOCKET_DIR")
    if not socket_dir:
        pytest.skip("TOKIOLOOP_PG_SOCKET_DIR is not set")
    port = DSN.rsplit(":", 1)[1].split("/", 1)[0]

    async def main():
        conn = await asyncpg.connect(
            host=socket_dir, port=int(port), user="postgres", database="postgres", timeout=10
        )
        try:
            assert await conn.fetchval("SELECT inet_client_addr() IS NULL")  # not TCP
            rows = await conn.fetch("SELECT g FROM generate_series(1, 5000) g")
            assert [r[0] for r in rows] == list(range(1, 5001))
            assert_running_tokioloop()
        finally:
            await conn.close()

    run(main)
