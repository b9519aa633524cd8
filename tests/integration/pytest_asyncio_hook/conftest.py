"""pytest-asyncio >= 1.4's own mechanism: the ``pytest_asyncio_loop_factories``
hook.  In this directory only, every asyncio test runs on tokioloop.

``optionalhook`` keeps pytest happy when pytest-asyncio is absent or older
than 1.4 (the hook then does not exist; the tests skip themselves).
"""

from __future__ import annotations

import pytest
import tokioloop


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(config, item):
    return {"tokioloop": tokioloop.new_event_loop}
