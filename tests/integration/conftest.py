"""Real frameworks on tokioloop (``tests/integration``).

Each test module starts with ``pytest.importorskip`` for the frameworks it
drives, so a plain ``pytest tests`` without ``tests/integration/requirements.txt``
installed skips these modules instead of failing.  tokioloop itself is
imported without a fallback: if it is missing or broken these tests error.

The database tests need servers: ``scripts/services.sh`` starts PostgreSQL
and Redis and prints ``TOKIOLOOP_PG_DSN`` / ``TOKIOLOOP_REDIS_URL``;
those tests skip when the variable is unset.
"""

from __future__ import annotations

import importlib.metadata

import pytest
import tokioloop  # noqa: F401  (fail loudly, never skip, when tokioloop is broken)

FRAMEWORKS = (
    "pytest-asyncio",
    "fastapi",
    "starlette",
    "uvicorn",
    "httptools",
    "aiohttp",
    "httpx",
    "websockets",
    "anyio",
    "asyncpg",
    "redis",
    "trustme",
)


def pytest_report_header(config):
    versions = []
    for name in FRAMEWORKS:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (missing)")
    return "integration frameworks: " + ", ".join(versions)


@pytest.fixture(autouse=True)
def _server_log_on_failure(request):
    """After a test that used a child-process ``server``, print the end of its
    log: pytest shows it (as captured teardown output) only if the test failed."""
    yield
    if "server" in request.fixturenames:
        server = request.getfixturevalue("server")
        output = getattr(server, "output", None)
        if output is not None:
            print(f"---- server log ({request.node.name}), last 4000 characters ----")
            print(output()[-4000:])
