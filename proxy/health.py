"""Active health probes: ``GET <instance>/health`` for every instance, every ``probe_interval_s``.

A failed probe (connection error, timeout, non-200) counts towards ejection (``eject_after`` in a row);
an ejected instance keeps being probed and is readmitted after ``readmit_after`` good probes. Request
failures count too (``ProxyCore.attempt``). The loop runs as one task owned by the app.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from proxy.balancer import Instance, RolePool
from proxy.errors import UpstreamError
from proxy.pipeline import ProxyCore

log = logging.getLogger(__name__)


async def probe_instance(core: ProxyCore, pool: RolePool, inst: Instance) -> bool:
    """Probe one instance now and update its health; returns whether it answered 200."""
    try:
        status, _ = await core.backends.get(inst.url, "/health", timeout_s=core.config.timeouts.probe_s)
        ok = status == 200
    except UpstreamError:
        ok = False
    if ok:
        if pool.record_success(inst):
            core.metrics.readmissions.labels(pool.role.value).inc()
            log.info("readmitted %s %s", pool.role.value, inst.url)
    elif pool.record_failure(inst):
        core.metrics.ejections.labels(pool.role.value).inc()
        log.warning("ejected %s %s", pool.role.value, inst.url)
    return ok


async def probe_all(core: ProxyCore) -> dict[str, list[dict[str, Any]]]:
    """Probe every instance concurrently; returns a report per role."""
    jobs = [(pool, inst) for pool in core.balancer.pools.values() for inst in pool.instances()]
    results = await asyncio.gather(*(probe_instance(core, pool, inst) for pool, inst in jobs))
    report: dict[str, list[dict[str, Any]]] = {}
    for (pool, inst), ok in zip(jobs, results, strict=True):
        report.setdefault(pool.role.value, []).append({
            "url": inst.url, "reachable": ok, "healthy": inst.healthy,
            "active_tokens": inst.active_tokens, "active_requests": inst.active_requests,
        })
    return report


async def probe_loop(core: ProxyCore) -> None:
    """Probe forever (cancelled at shutdown)."""
    while True:
        try:
            await probe_all(core)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a probe round must never end the loop
            log.exception("health probe round failed")
        await asyncio.sleep(core.config.probe_interval_s)
