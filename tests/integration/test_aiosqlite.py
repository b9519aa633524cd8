"""aiosqlite on tokioloop, beside stock asyncio.

aiosqlite runs each connection's SQLite calls on a thread of its own and
hands every result back with ``call_soon_threadsafe`` on the future's loop:
a worker thread waking the loop once per statement, with many statements in
flight from several tasks. Every scenario returns its observations; the
tokioloop run must match the stock one.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

aiosqlite = pytest.importorskip("aiosqlite")

from integration_support import run

KINDS = ("asyncio", "tokioloop")


async def queries(path):
    seen = {}
    async with aiosqlite.connect(path) as db:
        await db.execute("create table t (a integer primary key, b text)")
        await db.executemany("insert into t values (?, ?)", [(i, str(i)) for i in range(1000)])
        await db.commit()
        async with db.execute("select sum(a), count(*) from t") as cursor:
            seen["sum"] = await cursor.fetchone()
        seen["rows"] = [
            row async for row in await db.execute("select b from t where a < 3 order by a")
        ]
        try:
            await db.execute("select * from missing")
        except aiosqlite.OperationalError as error:
            seen["error"] = str(error)

        # Many statements in flight from several tasks on one connection
        # (its thread runs them one at a time, in the order they came).
        async def lookup(i):
            async with db.execute("select b from t where a = ?", (i,)) as cursor:
                return (await cursor.fetchone())[0]

        seen["gathered"] = await asyncio.gather(*(lookup(i) for i in range(300)))
        # A task cancelled while its statement waits leaves the connection usable.
        count_up = (
            "with recursive c(x) as (select 1 union all select x + 1 from c where x < 200000)"
            " select count(*) from c"
        )
        slow = asyncio.ensure_future(db.execute(count_up))
        await asyncio.sleep(0)
        slow.cancel()
        try:
            await slow
        except asyncio.CancelledError:
            seen["cancelled"] = True
        seen["after"] = await (await db.execute("select count(*) from t")).fetchone()

    # A second connection on the same file sees the committed rows.
    async with aiosqlite.connect(path) as other:
        seen["other"] = await (await other.execute("select max(a) from t")).fetchone()
    return seen


def test_statements_from_a_worker_thread():
    results = {}
    for kind in KINDS:
        with tempfile.TemporaryDirectory(prefix="tlsqlite-", dir="/tmp") as directory:
            results[kind] = run(queries, os.path.join(directory, "db.sqlite"), kind=kind)
    expected = {
        "sum": (499500, 1000),
        "rows": [("0",), ("1",), ("2",)],
        "error": "no such table: missing",
        "gathered": [str(i) for i in range(300)],
        "cancelled": True,
        "after": (1000,),
        "other": (999,),
    }
    assert results["asyncio"] == expected
    assert results["tokioloop"] == expected
