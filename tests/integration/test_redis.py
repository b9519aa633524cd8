"""redis-py's asyncio client (``redis.asyncio``) against a real Redis, on
tokioloop.

Needs ``TOKIOLOOP_REDIS_URL`` (``scripts/services.sh start`` prints it);
skips when it is unset.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio")

from integration_support import assert_running_tokioloop, run

URL = os.environ.get("TOKIOLOOP_REDIS_URL")
pytestmark = pytest.mark.skipif(
    not URL, reason="TOKIOLOOP_REDIS_URL is not set (start Redis with scripts/services.sh)"
)


def key(name):
    return f"tokioloop:{uuid.uuid4().hex[:8]}:{name}"


@pytest.mark.parametrize("protocol", [2, 3], ids=["RESP2", "RESP3"])
def test_commands(protocol):
    async def main():
        r = redis_asyncio.from_url(URL, protocol=protocol, socket_timeout=10)
        try:
            k = key("str")
            assert await r.ping()
            assert await r.set(k, "v", ex=60)
            assert await r.get(k) == b"v"
            assert await r.incr(key("n")) == 1
            h = key("hash")
            await r.hset(h, mapping={"a": "1", "b": "2"})
            assert await r.hgetall(h) == {b"a": b"1", b"b": b"2"}
            big = os.urandom(2 << 20)  # 2 MiB value, several reads and writes
            kb = key("big")
            await r.set(kb, big)
            assert await r.get(kb) == big
            await r.delete(k, h, kb)
            assert_running_tokioloop()
        finally:
            await r.aclose()

    run(main)


def test_pipeline_and_transaction():
    async def main():
        r = redis_asyncio.from_url(URL, socket_timeout=10)
        try:
            counter = key("counter")
            async with r.pipeline(transaction=True) as pipe:
                for _ in range(100):
                    pipe.incr(counter)
                results = await pipe.execute()
            assert results == list(range(1, 101))
            # Optimistic locking with WATCH: a concurrent change aborts EXEC.
            async with r.pipeline(transaction=True) as pipe:
                await pipe.watch(counter)
                await r.set(counter, 0)  # changed by "someone else"
                pipe.multi()
                pipe.incr(counter)
                with pytest.raises(redis_asyncio.WatchError):
                    await pipe.execute()
            assert await r.get(counter) == b"0"
            await r.delete(counter)
        finally:
            await r.aclose()

    run(main)


def test_pool_concurrency_and_blocking_commands():
    async def main():
        pool = redis_asyncio.BlockingConnectionPool.from_url(URL, max_connections=5, timeout=10)
        r = redis_asyncio.Redis(connection_pool=pool)
        try:
            lst = key("list")

            async def consumer():
                return await r.blpop([lst], timeout=5)

            consumers = [asyncio.create_task(consumer()) for _ in range(3)]
            await asyncio.sleep(0.1)
            await r.rpush(lst, "a", "b", "c")
            got = sorted(v for _, v in await asyncio.gather(*consumers))
            assert got == [b"a", b"b", b"c"]

            async def work(i):
                k = key(f"w{i}")
                await r.set(k, i)
                value = int(await r.get(k))
                await r.delete(k)
                return value

            start = time.monotonic()
            assert await asyncio.gather(*(work(i) for i in range(200))) == list(range(200))
            assert time.monotonic() - start < 10
        finally:
            await r.aclose()
            await pool.aclose()

    run(main)


def test_pubsub():
    async def main():
        channel = key("chan")
        pub = redis_asyncio.from_url(URL, socket_timeout=10)
        sub = redis_asyncio.from_url(URL)
        pubsub = sub.pubsub()
        try:
            await pubsub.subscribe(channel)
            await pubsub.psubscribe(channel[:-4] + "*")
            confirmations = 0
            while confirmations < 2:
                msg = await pubsub.get_message(timeout=5)
                assert msg is not None, "no subscribe confirmation"
                confirmations += msg["type"] in ("subscribe", "psubscribe")
            for i in range(20):
                assert await pub.publish(channel, f"m{i}") == 2
            messages, pmessages = [], []
            while len(messages) + len(pmessages) < 40:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                assert msg is not None, "missing published messages"
                (messages if msg["type"] == "message" else pmessages).append(msg["data"])
            assert messages == [f"m{i}".encode() for i in range(20)]
            assert pmessages == messages
            # listen(): an async iterator fed by the loop.
            await pubsub.punsubscribe()
            await pub.publish(channel, "last")
            async for msg in pubsub.listen():
                if msg["type"] == "message":
                    assert msg["data"] == b"last"
                    break
            assert_running_tokioloop()
        finally:
            await pubsub.aclose()
            await sub.aclose()
            await pub.aclose()

    run(main)


def test_unix_socket_connection():
    """The same server over its Unix socket (loop.create_unix_connection)."""
    path = os.environ.get("TOKIOLOOP_REDIS_SOCKET")
    if not path:
        pytest.skip("TOKIOLOOP_REDIS_SOCKET is not set")

    async def main():
        r = redis_asyncio.Redis(unix_socket_path=path, socket_timeout=10)
        try:
            k = key("unix")
            value = os.urandom(1 << 20)
            await r.set(k, value)
            assert await r.get(k) == value
            counter = key("n")
            results = await asyncio.gather(*(r.incr(counter) for _ in range(50)))
            assert sorted(results) == list(range(1, 51))
            await r.delete(k, counter)
            assert_running_tokioloop()
        finally:
            await r.aclose()

    run(main)
