"""tokioloop's TLS protocol (Python 3.11+): asyncio's own ``SSLProtocol`` with
the per-record data paths of the ``WRAPPED`` state in native code.

``SSLProtocol`` subclasses ``asyncio.sslproto.SSLProtocol`` with the native
``SSLProtocolCore`` (src/ssl_protocol.rs) first in its MRO. The core provides
``get_buffer``/``buffer_updated`` (ciphertext in, plaintext to the app
protocol) and ``_tl_write`` (the app transport's ``write``); every other
method, and every call made outside the ``WRAPPED`` state or in an unusual
situation (paused reading, a ``BufferedProtocol`` app, a write backlog, a
custom ``SSLContext.sslobject_class``), is asyncio's Python code, which also
owns all the state. TLS itself is the user's ``ssl.SSLContext`` through
``SSLObject`` and ``MemoryBIO`` (``sslcontext.wrap_bio``), as in asyncio.

Used by ``_make_ssl_transport`` (``create_connection``/``create_server``
with ``ssl=``, streams) and ``start_tls`` on Python 3.11+. Python 3.10's
``sslproto`` is a different, older design and is left as it is there.
"""

from __future__ import annotations

from asyncio import sslproto

from ._tokioloop import SSLProtocolCore


class _SSLProtocolTransport(sslproto._SSLProtocolTransport):
    """asyncio's app-facing TLS transport; ``write`` is the native core's.

    ``write`` is bound per instance to the protocol's native ``_tl_write``
    (no Python frame per call). The reference points the same way as
    ``_ssl_protocol`` does, so no new reference cycle is made."""

    def __init__(self, loop, ssl_protocol):
        super().__init__(loop, ssl_protocol)
        self.write = ssl_protocol._tl_write

    def close(self):
        super().close()
        if self._ssl_protocol is None:
            # A second close() dropped the protocol: asyncio's write (and
            # its AttributeError) from now on.
            self.__dict__.pop("write", None)


class SSLProtocol(SSLProtocolCore, sslproto.SSLProtocol):
    """``asyncio.sslproto.SSLProtocol`` with native ``WRAPPED``-state data
    paths.

    The attributes both halves use on every record (``_state``,
    ``_sslobj``, the BIOs, the buffers, the flow-control flags and marks, ...)
    are ``__slots__`` rather than instance-dict entries: reading, setting and
    deleting them behaves as for plain attributes (``AttributeError`` while
    unset), but the native core reads them at their offsets in the object
    and Python code through CPython's member descriptors. Every other
    attribute still lives in ``__dict__``."""

    __slots__ = SSLProtocolCore._tl_slots

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tl_init()

    def _get_app_transport(self):
        # asyncio's, building our app transport class.
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport = _SSLProtocolTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport


__all__ = ["SSLProtocol"]
