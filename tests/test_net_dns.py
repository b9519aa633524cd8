"""loop.getaddrinfo / loop.getnameinfo against the socket module (differential).

Only the local resolver is involved: numeric hosts, ``localhost`` (from
/etc/hosts) and the ``.invalid`` TLD, which must fail without real DNS traffic
(RFC 6761); each call is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from net_support import HAS_IPV6, run

HOSTS = [
    "127.0.0.1",
    "localhost",
    pytest.param("::1", marks=pytest.mark.skipif(not HAS_IPV6, reason="::1 is not available")),
]
PORTS = [80, "80", "http", 0, None, 65535]


def _norm(infos):
    # AddressFamily/SocketKind enums compare equal to their ints; keep tuples.
    return [tuple(i) for i in infos]


def _outcome(call):
    """``("ok", result)`` or ``("err", exception type, errno)`` for ``call()``."""
    try:
        return ("ok", call())
    except Exception as e:  # noqa: BLE001 - compared with what the socket module does
        return ("err", type(e), getattr(e, "errno", None))


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("port", PORTS)
def test_getaddrinfo_matches_socket(loop, host, port):
    expected = socket.getaddrinfo(host, port)
    got = run(loop, loop.getaddrinfo(host, port))
    assert isinstance(got, list)
    assert _norm(got) == _norm(expected)
    assert got  # non-empty


@pytest.mark.parametrize(
    "kw",
    [
        {"type": socket.SOCK_STREAM},
        {"type": socket.SOCK_DGRAM},
        {"family": socket.AF_INET},
        {"family": socket.AF_INET, "type": socket.SOCK_STREAM, "proto": socket.IPPROTO_TCP},
        {"flags": socket.AI_NUMERICHOST},
        {"flags": socket.AI_CANONNAME},
        {"flags": socket.AI_NUMERICSERV},
    ],
    ids=lambda kw: ",".join(f"{k}={int(v)}" for k, v in kw.items()),
)
def test_getaddrinfo_keywords(loop, kw):
    expected = socket.getaddrinfo("127.0.0.1", 8080, **kw)
    got = run(loop, loop.getaddrinfo("127.0.0.1", 8080, **kw))
    assert _norm(got) == _norm(expected)


def test_getaddrinfo_result_types(loop):
    got = run(loop, loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
    assert len(got) == 1
    family, type_, proto, canon, addr = got[0]
    assert family == socket.AF_INET and isinstance(family, socket.AddressFamily)
    assert type_ == socket.SOCK_STREAM and isinstance(type_, socket.SocketKind)
    assert proto == socket.IPPROTO_TCP
    assert canon == ""
    assert addr == ("127.0.0.1", 80)


def test_getaddrinfo_passive_none_host(loop):
    flags = socket.AI_PASSIVE
    expected = socket.getaddrinfo(None, 0, socket.AF_INET, socket.SOCK_STREAM, 0, flags)
    got = run(
        loop,
        loop.getaddrinfo(None, 0, family=socket.AF_INET, type=socket.SOCK_STREAM, flags=flags),
    )
    assert _norm(got) == _norm(expected)
    assert got[0][4] == ("0.0.0.0", 0)


def test_getaddrinfo_bytes_host(loop):
    expected = socket.getaddrinfo(b"127.0.0.1", 80)
    assert _norm(run(loop, loop.getaddrinfo(b"127.0.0.1", 80))) == _norm(expected)


@pytest.mark.parametrize(
    "host,port,kw",
    [
        ("localhost", 80, {"flags": socket.AI_NUMERICHOST}),
        ("127.0.0.1", "no-such-service-xyz", {}),
        ("127.0.0.1", 80, {"family": 12345}),
    ],
    ids=["numerichost_rejects_name", "unknown_service", "bad_family_value"],
)
def test_getaddrinfo_gaierror_like_socket(loop, host, port, kw):
    expected = _outcome(lambda: socket.getaddrinfo(host, port, **kw))
    assert expected[:2] == ("err", socket.gaierror)
    assert _outcome(lambda: run(loop, loop.getaddrinfo(host, port, **kw))) == expected


def test_getaddrinfo_nonexistent_host(loop):
    with pytest.raises(socket.gaierror) as info:
        run(loop, loop.getaddrinfo("nonexistent.invalid", 80))
    assert info.value.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None))


@pytest.mark.parametrize("port", [-1, 70000])
def test_getaddrinfo_port_out_of_range_like_socket(loop, port):
    expected = _outcome(lambda: _norm(socket.getaddrinfo("127.0.0.1", port)))
    assert _outcome(lambda: _norm(run(loop, loop.getaddrinfo("127.0.0.1", port)))) == expected


@pytest.mark.parametrize(
    "host,port,exc",
    [
        (123, 80, TypeError),
        (["127.0.0.1"], 80, TypeError),
        ("127.0.0.1", 1.5, OSError),
        ("127.0.0.1", b"80", None),
    ],
)
def test_getaddrinfo_wrong_types(loop, host, port, exc):
    try:
        expected = _norm(socket.getaddrinfo(host, port))
    except Exception as e:  # noqa: BLE001
        assert exc is not None and isinstance(e, exc)
        with pytest.raises(type(e)):
            run(loop, loop.getaddrinfo(host, port))
    else:
        assert exc is None
        assert _norm(run(loop, loop.getaddrinfo(host, port))) == expected


@pytest.mark.parametrize(
    "sockaddr",
    [
        ("127.0.0.1", 80),
        ("127.0.0.1", 0),
        ("127.0.0.1", 12345),
        pytest.param(
            ("::1", 443, 0, 0),
            marks=pytest.mark.skipif(not HAS_IPV6, reason="::1 is not available"),
        ),
    ],
)
@pytest.mark.parametrize(
    "flags",
    [
        0,
        socket.NI_NUMERICHOST | socket.NI_NUMERICSERV,
        socket.NI_NUMERICSERV,
        socket.NI_DGRAM,
    ],
)
def test_getnameinfo_matches_socket(loop, sockaddr, flags):
    expected = socket.getnameinfo(sockaddr, flags)
    got = run(loop, loop.getnameinfo(sockaddr, flags))
    assert got == expected
    assert isinstance(got, tuple) and len(got) == 2


def test_getnameinfo_default_flags(loop):
    assert run(loop, loop.getnameinfo(("127.0.0.1", 80))) == socket.getnameinfo(
        ("127.0.0.1", 80), 0
    )


@pytest.mark.parametrize(
    "sockaddr,flags",
    [
        ("127.0.0.1", 0),
        (("127.0.0.1",), 0),
        (("127.0.0.1", "80"), 0),
        (("127.0.0.1", 80, 0, 0, 0), 0),
        (("127.0.0.1", 80), "0"),
    ],
)
def test_getnameinfo_wrong_types(loop, sockaddr, flags):
    with pytest.raises(Exception) as ref:
        socket.getnameinfo(sockaddr, flags)
    with pytest.raises(type(ref.value)):
        run(loop, loop.getnameinfo(sockaddr, flags))


def test_getnameinfo_namereqd_failure(loop):
    # Whatever the local resolver says for 127.0.0.1 with NI_NAMEREQD (a name
    # from /etc/hosts, or EAI_NONAME), the loop must say the same.
    addr = ("127.0.0.1", 80)
    flags = socket.NI_NUMERICHOST | socket.NI_NAMEREQD
    expected = _outcome(lambda: socket.getnameinfo(addr, flags))
    assert expected[0] == "ok" or expected[1] is socket.gaierror
    assert _outcome(lambda: run(loop, loop.getnameinfo(addr, flags))) == expected


def test_getaddrinfo_concurrent(loop):
    async def main():
        coros = [loop.getaddrinfo("127.0.0.1", p, type=socket.SOCK_STREAM) for p in range(1, 41)]
        return await asyncio.gather(*coros)

    results = run(loop, main())
    assert [r[0][4] for r in results] == [("127.0.0.1", p) for p in range(1, 41)]


def test_numeric_hosts_skip_the_executor_on_tokioloop():
    """tokioloop resolves numeric hosts in-process (no thread hop); names
    still go through the executor, as on asyncio."""
    import concurrent.futures

    import tokioloop

    class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
        calls = 0

        def submit(self, *args, **kwargs):
            CountingExecutor.calls += 1
            return super().submit(*args, **kwargs)

    loop = tokioloop.new_event_loop()
    executor = CountingExecutor(max_workers=1)
    loop.set_default_executor(executor)
    try:
        got = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
        assert got == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        assert CountingExecutor.calls == 0
        loop.run_until_complete(loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM))
        assert CountingExecutor.calls == 1
        # getnameinfo with numeric host and service needs no lookup either.
        numeric = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        addr = ("127.0.0.1", 80)
        assert loop.run_until_complete(loop.getnameinfo(addr, numeric)) == socket.getnameinfo(
            addr, numeric
        )
        assert CountingExecutor.calls == 1
        loop.run_until_complete(loop.getnameinfo(addr, socket.NI_NUMERICSERV))
        assert CountingExecutor.calls == 2
    finally:
        loop.close()
        executor.shutdown(wait=True)
