"""The short soak CI runs: load from client processes on two servers sharing a real Redis, with every
fault of `eccache chaos` injected while it runs. One soak, one named test per promise."""

from __future__ import annotations

import pytest

from eccache.chaos.faults import FAULTS
from eccache.chaos.soak import SoakConfig, SoakReport, run, table
from tests.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.mooncake, pytest.mark.slow]

FAULT_TITLES = {
    "dead-writer": "writer SIGKILLed between reserve and commit",
    "dead-reader": "reader SIGKILLed while holding leases",
    "paused-writer": "paused writer past its lease cannot commit",
    "server-kill": "eccache server SIGKILLed mid-transfer and restarted",
    "redis-pause": "redis unreachable for a while",
    "redis-restart": "redis restarted (index lost)",
    "redis-flush": "redis flushed",
    "pool-pressure": "full pool under write pressure",
}


@pytest.fixture(scope="module")
def report() -> SoakReport:
    from eccache.launch import redis_server_binary
    from eccache.transport import mooncake

    require(redis_server_binary() is not None, "redis-server is not installed")
    require(mooncake.available(), "mooncake transfer engine not installed")
    result = run(SoakConfig(duration_s=45, clients=3, pool_size="512MiB"))
    print(table(result.as_dict()))
    return result


def test_every_fault_is_injected(report: SoakReport) -> None:
    assert [f.name for f in report.faults] == [FAULT_TITLES[name] for name in FAULTS]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_survived(report: SoakReport, fault: str) -> None:
    [result] = [f for f in report.faults if f.name == FAULT_TITLES[fault]]
    assert result.held, result.detail


def test_load_was_real_and_no_read_was_corrupted(report: SoakReport) -> None:
    t = report.tally
    assert t.ops > 200 and t.outcomes["get:hit"] > 20 and t.verified_bytes > 50e6
    assert t.corrupted_reads == 0 and t.outcomes["get:corrupted"] == 0
    assert not [k for k in t.outcomes if k.split(":", 1)[1].startswith("UNEXPECTED")]


def test_pool_accounting_balances_and_no_slot_leaks(report: SoakReport) -> None:
    for audit in report.audits:
        assert audit.used_bytes == audit.indexed_bytes, audit
        assert audit.slots == audit.indexed_entries, audit


def test_both_servers_serve_at_the_end(report: SoakReport) -> None:
    assert report.serving_at_end and report.passed


def test_hostile_grpc_inputs_during_the_soak_all_get_precise_statuses(report: SoakReport) -> None:
    tried, precise = report.hostile["grpc"]
    assert tried >= 600 and precise == tried
