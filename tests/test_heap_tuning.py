"""Creating a loop raises glibc's mmap/trim thresholds once (see
src/heap_tuning.rs): a 512 KiB block is then carved from the heap instead of
being mmapped, as it would be in a fresh process. Each case runs in a fresh
interpreter, whose thresholds are still glibc's start-up ones."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="glibc's dynamic mmap threshold (mallinfo2 is glibc 2.33+)",
)

_PROBE = textwrap.dedent(
    """
    import ctypes, sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def mmapped_by_a_512k_block():
        before = libc.mallinfo2().hblks
        block = libc.malloc(512 * 1024)
        mapped = libc.mallinfo2().hblks - before
        libc.free(block)
        return mapped

    import asyncio
    import tokioloop
    if sys.argv[1] == "tokioloop":
        tokioloop.new_event_loop().close()
    else:
        asyncio.new_event_loop().close()
    print(mmapped_by_a_512k_block())
    """
)


@pytest.mark.parametrize(("kind", "mapped"), [("asyncio", "1"), ("tokioloop", "0")])
def test_a_loop_raises_the_mmap_threshold(kind, mapped):
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, kind], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == mapped
