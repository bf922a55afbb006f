"""Fixtures of the proxy tests (helpers live in tests/proxy/helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def ec_address(request: pytest.FixtureRequest) -> str:
    """The real eccache server of the root conftest ("host:port")."""
    try:
        return str(request.getfixturevalue("eccache_server"))
    except pytest.FixtureLookupError:
        pytest.skip("eccache_server fixture not available")
