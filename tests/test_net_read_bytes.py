"""The `bytes` objects a stream transport hands to `data_received`.

tokioloop copies small reads into a `bytes` it recycles once the protocol
has let go of the previous one (`src/spare_bytes.rs`). These tests pin down
that this is invisible: an object the protocol keeps (in a list, as a dict
key, through a memoryview) never changes, and every object given has the
length, contents and hash of a new one. Each runs on both loops.
"""

from __future__ import annotations

import asyncio
import socket

from net_support import run

# Sizes that make a recycled object hold less than it can (down to half),
# less than half (a new object), more (a new object), and the same again;
# then messages that take more than one read.
SIZES = [1000, 1000, 900, 700, 500, 480, 1000, 200, 1500, 1400, 800, 799, 10, 3000] * 4 + [
    16384,
    16385,
    40000,
    1000,
    12000,
    1000,
]


def message(i, size):
    return bytes((i * 7 + j) % 251 for j in range(size))


class Recorder(asyncio.Protocol):
    """Acks each whole message and records what every read looked like."""

    def __init__(self, keep):
        self.keep = keep
        self.kept = []
        self.views = []
        self.keys = {}
        self.reads = []
        self.pending = 0
        self.expected = iter(SIZES)

    def connection_made(self, transport):
        self.transport = transport
        self.pending = next(self.expected)

    def data_received(self, data):
        copy = bytes(memoryview(data))
        # Length, contents and hash as a new object's, at the time of the call.
        self.reads.append((len(data) == len(copy), data == copy, hash(data) == hash(copy), copy))
        n = len(self.reads)
        if self.keep == "list" and n % 2:
            self.kept.append((data, copy))
        elif self.keep == "view" and n % 3 == 0:
            self.views.append((memoryview(data), copy))
        elif self.keep == "key" and n % 2:
            self.keys[data] = copy
        self.pending -= len(data)
        if self.pending == 0:
            self.transport.write(b"k")
            self.pending = next(self.expected, 0)


async def exchange(loop, keep):
    recorder = Recorder(keep)
    server = await loop.create_server(lambda: recorder, "127.0.0.1", 0)
    client = socket.socket()
    client.setblocking(False)
    try:
        await loop.sock_connect(client, server.sockets[0].getsockname())
        for i, size in enumerate(SIZES):
            await loop.sock_sendall(client, message(i, size))
            assert await loop.sock_recv(client, 1) == b"k"
    finally:
        client.close()
        server.close()
        await server.wait_closed()
    return recorder


def check(recorder):
    assert all(same_len and same and same_hash for same_len, same, same_hash, _ in recorder.reads)
    received = b"".join(copy for *_, copy in recorder.reads)
    assert received == b"".join(message(i, size) for i, size in enumerate(SIZES))


def test_dropped_objects_look_new(loop):
    check(run(loop, exchange(loop, keep=None)))


def test_objects_kept_in_a_list_never_change(loop):
    recorder = run(loop, exchange(loop, keep="list"))
    check(recorder)
    assert recorder.kept
    assert all(data == copy and len(data) == len(copy) for data, copy in recorder.kept)


def test_objects_kept_through_a_memoryview_never_change(loop):
    recorder = run(loop, exchange(loop, keep="view"))
    check(recorder)
    assert recorder.views
    assert all(view.tobytes() == copy for view, copy in recorder.views)


def test_objects_kept_as_dict_keys_stay_found(loop):
    recorder = run(loop, exchange(loop, keep="key"))
    check(recorder)
    assert recorder.keys
    # A changed key (contents or cached hash) would no longer be found.
    assert all(recorder.keys[bytes(memoryview(copy))] == copy for copy in recorder.keys.values())
    assert all(key == copy for key, copy in recorder.keys.items())
