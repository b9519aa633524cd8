"""TLS material for the TLS tests: a throw-away CA with a server and a client
certificate, a second CA nobody trusts (for "bad certificate" cases), and
helpers that build ``ssl.SSLContext`` objects from them.

The certificates are generated in the test run (never checked in) with the
``trustme`` package when it is importable, otherwise with the ``openssl``
command-line tool.  Test modules get them through the session-scoped ``tls``
fixture (import ``tls_fixture`` to make it available).
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile

import pytest

try:  # pragma: no cover - depends on the environment
    import trustme
except ImportError:  # pragma: no cover
    trustme = None

#: Names and addresses the server certificate is valid for.
SERVER_HOSTNAME = "localhost"
SNI_NAME = "server.test"
SERVER_IDS = (SERVER_HOSTNAME, SNI_NAME, "127.0.0.1", "::1")
#: Subject common name of the client certificate (mutual TLS).
CLIENT_NAME = "client.test"


class TlsMaterial:
    """Paths of the PEM files of one generated PKI, and context builders."""

    def __init__(self, directory: str):
        self.dir = directory
        p = lambda name: os.path.join(directory, name)
        self.ca = p("ca.pem")  # trusted by default
        self.server_cert, self.server_key = p("server.pem"), p("server.key")
        self.client_cert, self.client_key = p("client.pem"), p("client.key")
        self.other_ca = p("other-ca.pem")  # trusted by nobody
        # A leaf (valid for SERVER_IDS and usable as a client cert) signed by
        # the untrusted CA.
        self.rogue_cert, self.rogue_key = p("rogue.pem"), p("rogue.key")

    # -- contexts --------------------------------------------------------

    def server_context(
        self,
        *,
        client_cert: str = "none",
        alpn=None,
        sni_callback=None,
        rogue: bool = False,
        max_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A server-side context.

        ``client_cert``: ``"none"`` (not asked), ``"required"`` (mutual TLS,
        issued by the trusted CA).  ``rogue`` serves the certificate of the
        untrusted CA.
        """
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if rogue:
            ctx.load_cert_chain(self.rogue_cert, self.rogue_key)
        else:
            ctx.load_cert_chain(self.server_cert, self.server_key)
        if client_cert == "required":
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca)
        elif client_cert != "none":
            raise AssertionError(client_cert)
        if alpn is not None:
            ctx.set_alpn_protocols(alpn)
        if sni_callback is not None:
            ctx.sni_callback = sni_callback
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx

    def client_context(
        self,
        *,
        cert: str = "none",
        trust: str = "ca",
        alpn=None,
        max_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A client-side context that verifies the server.

        ``cert``: ``"none"``, ``"client"`` (issued by the trusted CA) or
        ``"rogue"`` (issued by the untrusted CA).  ``trust``: ``"ca"`` (the
        CA that issued the server certificate) or ``"other"`` (a CA that did
        not, so verification fails).
        """
        cafile = {"ca": self.ca, "other": self.other_ca}[trust]
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        if cert == "client":
            ctx.load_cert_chain(self.client_cert, self.client_key)
        elif cert == "rogue":
            ctx.load_cert_chain(self.rogue_cert, self.rogue_key)
        elif cert != "none":
            raise AssertionError(cert)
        if alpn is not None:
            ctx.set_alpn_protocols(alpn)
        if max_version is not None:
            ctx.maximum_version = max_version
        return ctx


# --------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------


def _generate_trustme(m: TlsMaterial) -> None:
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(m.ca)
    other.cert_pem.write_to_path(m.other_ca)

    def leaf(issuer, ids, cert_path, key_path, common_name=None):
        cert = issuer.issue_cert(*ids, common_name=common_name)
        cert.private_key_pem.write_to_path(key_path)
        with open(cert_path, "wb") as f:
            f.writelines(blob.bytes() for blob in cert.cert_chain_pems)

    leaf(ca, SERVER_IDS, m.server_cert, m.server_key)
    leaf(ca, (CLIENT_NAME,), m.client_cert, m.client_key, common_name=CLIENT_NAME)
    leaf(other, SERVER_IDS, m.rogue_cert, m.rogue_key)


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _generate_openssl(m: TlsMaterial) -> None:  # pragma: no cover - fallback
    d = m.dir
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")

    def make_ca(name):
        _openssl(
            "req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/O=tokioloop tests/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
            cwd=d,
        )  # fmt: skip

    def make_leaf(ca_name, name, cn, sans):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(
                f"subjectAltName={sans}\n"
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid,issuer\n"
            )
        _openssl(
            "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/O=tokioloop tests/CN={cn}", cwd=d,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca_name}.pem",
            "-CAkey", f"{ca_name}.key", "-CAcreateserial", "-days", "2",
            "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=d,
        )  # fmt: skip

    def san(ids):
        out = []
        for i in ids:
            out.append(f"IP:{i}" if (":" in i or i[0].isdigit()) else f"DNS:{i}")
        return ",".join(out)

    make_ca("ca")
    make_ca("other-ca")
    make_leaf("ca", "server", SERVER_HOSTNAME, san(SERVER_IDS))
    make_leaf("ca", "client", CLIENT_NAME, san((CLIENT_NAME,)))
    make_leaf("other-ca", "rogue", SERVER_HOSTNAME, san(SERVER_IDS))


def generate(directory: str) -> TlsMaterial:
    """Generate a fresh PKI into ``directory`` (which must exist)."""
    m = TlsMaterial(directory)
    if trustme is not None:
        _generate_trustme(m)
    elif shutil.which("openssl"):  # pragma: no cover
        _generate_openssl(m)
    else:  # pragma: no cover
        raise RuntimeError("TLS tests need the 'trustme' package or the openssl tool")
    # Sanity check: the material loads and the chain verifies.
    m.server_context()
    m.client_context(cert="client")
    return m


@pytest.fixture(scope="session", name="tls")
def tls_fixture():
    """Fixture ``tls``: a :class:`TlsMaterial` shared by the whole session."""
    d = tempfile.mkdtemp(prefix="tltls-", dir="/tmp")
    try:
        yield generate(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
