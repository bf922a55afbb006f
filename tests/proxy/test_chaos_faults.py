"""The proxy part of ``eccache chaos``: seeded hostile inputs, and the four faults (slow: ~30 s)."""

from __future__ import annotations

import pytest

from eccache.chaos.proxy_faults import hostile_inputs, run_proxy_faults


def test_hostile_inputs_are_all_answered_precisely() -> None:
    tried, precise = hostile_inputs(150)
    print(f"\nhostile inputs: {tried} tried, {precise} answered precisely")
    assert tried == precise == 150


@pytest.mark.slow
def test_proxy_faults_all_hold_within_forty_seconds() -> None:
    import time

    t0 = time.monotonic()
    results = run_proxy_faults(10.0)
    elapsed = time.monotonic() - t0
    for r in results:
        print(f"\n{'held' if r.held else 'BROKEN'}: {r.name}: {r.detail}")
    assert [r.name for r in results] == ["proxy: instance killed mid-stream", "proxy: slow instance (timeouts)",
                                         "proxy: instance flapping (eject/readmit)", "proxy: eccache down (all-miss)"]
    assert all(r.held for r in results), [r for r in results if not r.held]
    assert elapsed < 45
