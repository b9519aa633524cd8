"""connect_read_pipe / connect_write_pipe (differential) on os.pipe(), a FIFO
and a pseudo-terminal: data, EOF, flow control, closing and aborting."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import random
import tty

import pytest
from loop_support import PY311
from net_support import HandlerRecorder, RecordingProtocol, run

MiB = 1024 * 1024
PIPE_KINDS = ["pipe", "fifo", "pty"]


@contextlib.contextmanager
def pipe_pair(kind: str, tmp_path):
    """``(read_file, write_file)``: unbuffered binary file objects for the two
    ends of a pipe of ``kind``. Data written to ``write_file`` comes out of
    ``read_file``; both are closed afterwards (if the test has not)."""
    if kind == "pipe":
        r, w = os.pipe()
    elif kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
        r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # reader first, or ENXIO
        w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    elif kind == "pty":
        # Written to the slave, read from the master; raw mode: no echo, no
        # newline translation, no signal characters.
        r, w = os.openpty()
        tty.setraw(w)
    else:
        raise AssertionError(kind)
    rf = open(r, "rb", buffering=0)  # noqa: SIM115 - closed in the finally below
    wf = open(w, "wb", buffering=0)  # noqa: SIM115
    try:
        yield rf, wf
    finally:
        rf.close()
        wf.close()


def _expected_read_end(kind):
    """What the reading side sees when the writing side closes: a pipe or a
    FIFO reports EOF; a pty master gets EIO (no eof_received)."""
    if kind == "pty":
        return ["made", "data", "lost"], errno.EIO
    return ["made", "data", "eof", "lost"], None


def _is_reading(tr, assumed=True):
    """``tr.is_reading()``; asyncio's read-pipe transport only has it since
    3.11 (before, it raises NotImplementedError), so assume ``assumed``."""
    return tr.is_reading() if PY311 else assumed


def _errno_of(exc):
    return None if exc is None else (type(exc), exc.errno)


class FlowProtocol(RecordingProtocol):
    """A write-pipe protocol that lets a coroutine wait while paused."""

    def __init__(self, loop):
        super().__init__(loop)
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self):
        super().pause_writing()
        self.writable.clear()

    def resume_writing(self):
        super().resume_writing()
        self.writable.set()


# --------------------------------------------------------------------------
# read pipes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PIPE_KINDS)
def test_read_pipe_data_then_eof(loop, tmp_path, kind):
    chunks = [b"first", b"second" * 100, random.Random(1).randbytes(3000)]

    async def main(rf, wf):
        calls = HandlerRecorder(loop)
        tr, proto = await loop.connect_read_pipe(lambda: RecordingProtocol(loop), rf)
        assert proto.transport is tr
        info = (tr.get_extra_info("pipe") is rf, _is_reading(tr), tr.is_closing())
        total = 0
        for c in chunks:
            wf.write(c)
            total += len(c)
            await proto.wait_for_data(total)
        wf.close()
        lost = await proto.lost
        await asyncio.sleep(0.01)
        return info, proto.data(), proto.kinds(), lost, tr.is_closing(), rf.closed, calls.contexts

    with pipe_pair(kind, tmp_path) as (rf, wf):
        info, data, kinds, lost, closing, rf_closed, contexts = run(loop, main(rf, wf))
    expected_kinds, expected_errno = _expected_read_end(kind)
    assert info == (True, True, False)
    assert data == b"".join(chunks)
    assert kinds == expected_kinds
    assert (lost is None) if expected_errno is None else (lost.errno == expected_errno)
    assert closing is True and rf_closed is True
    assert contexts == []  # EIO on a pty is not an error worth reporting


def test_read_pipe_pause_resume(loop):
    async def main(rf, wf):
        tr, proto = await loop.connect_read_pipe(lambda: RecordingProtocol(loop), rf)
        wf.write(b"one")
        await proto.wait_for_data(3)
        tr.pause_reading()
        paused_state = _is_reading(tr, False)
        wf.write(b"two")
        await asyncio.sleep(0.05)
        during_pause = proto.data()
        tr.resume_reading()
        resumed_state = _is_reading(tr, True)
        await proto.wait_for_data(6)
        tr.close()
        await proto.lost
        return paused_state, during_pause, resumed_state, proto.data(), proto.kinds()

    r, w = os.pipe()
    with open(r, "rb", buffering=0) as rf, open(w, "wb", buffering=0) as wf:
        got = run(loop, main(rf, wf))
    assert got == (False, b"one", True, b"onetwo", ["made", "data", "lost"])


@pytest.mark.parametrize("kind", PIPE_KINDS)
def test_read_pipe_close(loop, tmp_path, kind):
    """close() (and a second close()) ends the transport with
    connection_lost(None), no eof_received, and closes the pipe."""

    async def main(rf, wf):
        tr, proto = await loop.connect_read_pipe(lambda: RecordingProtocol(loop), rf)
        wf.write(b"data")
        await proto.wait_for_data(4)
        tr.close()
        closing = tr.is_closing(), _is_reading(tr, False)
        tr.close()
        lost = await proto.lost
        await asyncio.sleep(0.01)
        return closing, lost, proto.kinds(), rf.closed

    with pipe_pair(kind, tmp_path) as (rf, wf):
        got = run(loop, main(rf, wf))
    assert got == ((True, False), None, ["made", "data", "lost"], True)


def test_read_pipe_handover_order(loop):
    """A second read pipe whose data is already waiting, then the first
    closed (AsyncSSH's `redirect_stdin` does this): the new pipe's data
    arrives before the old one's connection_lost, as on the stock loop,
    which selects in the iteration where the old one is closed."""
    events = []

    class Recorder(asyncio.Protocol):
        def __init__(self, name):
            self.name = name

        def data_received(self, data):
            events.append((self.name, data))

        def connection_lost(self, exc):
            events.append((self.name, "lost"))

    async def main():
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        os.write(w1, b"one")
        os.write(w2, b"two")
        first, _ = await loop.connect_read_pipe(lambda: Recorder("first"), os.fdopen(r1, "rb", 0))
        while not events:
            await asyncio.sleep(0.001)
        await loop.connect_read_pipe(lambda: Recorder("second"), os.fdopen(r2, "rb", 0))
        first.close()
        while len(events) < 3:
            await asyncio.sleep(0.001)
        os.close(w1)
        os.close(w2)
        return events[:3]

    assert run(loop, main()) == [("first", b"one"), ("second", b"two"), ("first", "lost")]


# --------------------------------------------------------------------------
# write pipes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PIPE_KINDS)
def test_write_pipe_to_read_pipe(loop, tmp_path, kind):
    """A write-pipe transport feeds a read-pipe transport on the same loop,
    with flow control on the writing side; the writer then closes."""
    size = MiB if kind != "pty" else 256 * 1024
    data = random.Random(2).randbytes(size)

    async def main(rf, wf):
        _rtr, rproto = await loop.connect_read_pipe(lambda: RecordingProtocol(loop), rf)
        wtr, wproto = await loop.connect_write_pipe(lambda: FlowProtocol(loop), wf)
        info = (wtr.get_extra_info("pipe") is wf, wtr.can_write_eof(), wtr.is_closing())
        for i in range(0, size, 32 * 1024):
            await wproto.writable.wait()
            wtr.write(data[i : i + 32 * 1024])
        await rproto.wait_for_data(size)
        wtr.close()
        wlost = await wproto.lost
        rlost = await rproto.lost
        return info, rproto.data(), wlost, rproto.kinds(), rlost, wf.closed

    with pipe_pair(kind, tmp_path) as (rf, wf):
        info, received, wlost, rkinds, rlost, wf_closed = run(loop, main(rf, wf), 20)
    expected_kinds, expected_errno = _expected_read_end(kind)
    assert info == (True, True, False)
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
    assert wlost is None and wf_closed
    assert rkinds == expected_kinds
    assert _errno_of(rlost) == (None if expected_errno is None else (OSError, expected_errno))


def test_write_pipe_flow_control_slow_reader(loop):
    """4 MiB written at once into a pipe whose reader is slow: pause_writing
    is called at once, resume_writing once the buffer drains, and every byte
    arrives."""
    total = 4 * MiB
    data = random.Random(3).randbytes(total)

    async def main(rf, wf):
        rtr, rproto = await loop.connect_read_pipe(lambda: RecordingProtocol(loop), rf)
        rtr.pause_reading()  # slow reader: does not read at first
        wtr, wproto = await loop.connect_write_pipe(lambda: FlowProtocol(loop), wf)
        wtr.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
        limits = wtr.get_write_buffer_limits()
        wtr.write(data)
        after_write = (wproto.kinds(), wtr.get_write_buffer_size() > 0)
        await asyncio.sleep(0.05)
        still_paused = not wproto.writable.is_set()
        # The reader reads in bursts, pausing in between.
        while len(rproto.data()) < total:
            rtr.resume_reading()
            await asyncio.sleep(0.002)
            rtr.pause_reading()
            await asyncio.sleep(0.002)
        rtr.resume_reading()
        await wproto.writable.wait()
        buffered_at_end = wtr.get_write_buffer_size()
        wtr.write_eof()
        await wproto.lost
        await rproto.lost
        return limits, after_write, still_paused, buffered_at_end, wproto, rproto

    r, w = os.pipe()
    with open(r, "rb", buffering=0) as rf, open(w, "wb", buffering=0) as wf:
        limits, after_write, still_paused, buffered, wproto, rproto = run(loop, main(rf, wf), 20)
    assert limits == (64 * 1024, 256 * 1024)
    assert after_write == (["made", "pause"], True)
    assert still_paused
    assert buffered == 0
    pauses = [e for e in wproto.events if e[0] == "pause"]
    resumes = [e for e in wproto.events if e[0] == "resume"]
    assert len(pauses) == len(resumes) == 1
    assert pauses[0][1] > 256 * 1024 and resumes[0][1] <= 64 * 1024
    assert wproto.kinds() == ["made", "pause", "resume", "lost"]
    assert rproto.kinds() == ["made", "data", "eof", "lost"]
    assert hashlib.sha256(rproto.data()).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("buffered", [False, True], ids=["empty", "buffered"])
@pytest.mark.parametrize("kind", ["pipe", "fifo"])
def test_write_pipe_reader_goes_away(loop, tmp_path, kind, buffered):
    """The read end is closed: the write-pipe transport notices on its own
    (asyncio watches the write end for readability) and reports
    connection_lost(None) with nothing buffered, BrokenPipeError otherwise."""

    async def main(rf, wf):
        calls = HandlerRecorder(loop)
        wtr, wproto = await loop.connect_write_pipe(lambda: FlowProtocol(loop), wf)
        if buffered:
            wtr.write(b"x" * MiB)  # the pipe holds 64 KiB; the rest is buffered
            assert wtr.get_write_buffer_size() > 0
        rf.close()
        lost = await wproto.lost
        return type(lost), wtr.is_closing(), wtr.get_write_buffer_size(), calls.contexts

    with pipe_pair(kind, tmp_path) as (rf, wf):
        got = run(loop, main(rf, wf))
    assert got == (BrokenPipeError if buffered else type(None), True, 0, [])


def test_write_pipe_write_after_reader_gone(loop):
    """Writing after the pipe broke is silently dropped, as asyncio does."""

    async def main(rf, wf):
        wtr, wproto = await loop.connect_write_pipe(lambda: FlowProtocol(loop), wf)
        rf.close()
        await wproto.lost
        wtr.write(b"ignored")
        wtr.write(b"still ignored")
        return wtr.get_write_buffer_size(), wtr.is_closing()

    r, w = os.pipe()
    with open(r, "rb", buffering=0) as rf, open(w, "wb", buffering=0) as wf:
        assert run(loop, main(rf, wf)) == (0, True)


@pytest.mark.parametrize("how", ["abort", "close"])
def test_write_pipe_abort_vs_close(loop, how):
    """close() flushes the buffer before closing, abort() discards it."""
    data = random.Random(4).randbytes(MiB)

    async def main(rf, wf):
        rtr, rproto = await loop.connect_read_pipe(lambda: RecordingProtocol(loop), rf)
        rtr.pause_reading()
        wtr, wproto = await loop.connect_write_pipe(lambda: FlowProtocol(loop), wf)
        wtr.write(data)
        buffered = wtr.get_write_buffer_size()
        getattr(wtr, how)()
        wtr.write(b"after close: dropped")
        rtr.resume_reading()
        wlost = await wproto.lost
        await rproto.lost
        return buffered, wlost, wtr.get_write_buffer_size(), rproto.data(), rproto.kinds()

    r, w = os.pipe()
    with open(r, "rb", buffering=0) as rf, open(w, "wb", buffering=0) as wf:
        buffered, wlost, left, received, rkinds = run(loop, main(rf, wf))
    assert buffered > 0 and wlost is None and left == 0
    assert rkinds == ["made", "data", "eof", "lost"]
    if how == "close":
        assert received == data
    else:
        # What the kernel already took arrives; the buffered rest does not.
        assert received == data[: len(data) - buffered]


def test_write_pipe_write_eof_on_pty(loop):
    """write_eof() on a pty slave closes it; the master sees EIO."""

    async def main(rf, wf):
        _rtr, rproto = await loop.connect_read_pipe(lambda: RecordingProtocol(loop), rf)
        wtr, wproto = await loop.connect_write_pipe(lambda: FlowProtocol(loop), wf)
        wtr.write(b"over the pty")
        await rproto.wait_for_data(12)
        wtr.write_eof()
        return await wproto.lost, _errno_of(await rproto.lost), rproto.data()

    master, slave = os.openpty()
    tty.setraw(slave)
    with open(master, "rb", buffering=0) as rf, open(slave, "wb", buffering=0) as wf:
        assert run(loop, main(rf, wf)) == (None, (OSError, errno.EIO), b"over the pty")


# --------------------------------------------------------------------------
# what is not a pipe
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["connect_read_pipe", "connect_write_pipe"])
def test_regular_file_rejected(loop, tmp_path, method):
    path = tmp_path / "regular"
    path.write_bytes(b"not a pipe")

    async def main(f):
        protos = []

        def factory():
            protos.append(RecordingProtocol(loop))
            return protos[-1]

        try:
            await getattr(loop, method)(factory, f)
        except ValueError:
            await asyncio.sleep(0.01)
            return "ValueError", [p.events for p in protos], f.closed
        return "no error", [p.events for p in protos], f.closed  # pragma: no cover

    with open(path, "rb" if method == "connect_read_pipe" else "ab", buffering=0) as f:
        # The protocol was built but never connected; the file is left to its owner.
        assert run(loop, main(f)) == ("ValueError", [[]], False)
