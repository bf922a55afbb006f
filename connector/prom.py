"""Prometheus counters of ECCacheConnector, registered by vLLM through `build_prom_metrics`.

vLLM's metrics logger calls `observe` with the counter deltas the scheduler-side connector reported
(`ECCacheStats.data`, worker counters included); each becomes `vllm:eccache_<name>_total`.
"""

from __future__ import annotations

from typing import Any

from connector.state import COUNTER_NAMES

try:
    from vllm.distributed.ec_transfer.ec_connector.metrics import ECConnectorPromMetrics
except ImportError:  # older vLLM: no EC metrics (nothing calls build_prom_metrics); keep the class usable

    class ECConnectorPromMetrics:  # type: ignore[no-redef]
        """The part of vLLM's base class that `ECCachePromMetrics` relies on."""

        def __init__(self, vllm_config: Any, metric_types: dict[type, type], labelnames: list[str],
                     per_engine_labelvalues: dict[int, list[object]]) -> None:
            from prometheus_client import Counter

            self._counter_cls = metric_types[Counter]
            self._labelnames = labelnames
            self.per_engine_labelvalues = per_engine_labelvalues


class ECCachePromMetrics(ECConnectorPromMetrics):
    def __init__(
        self,
        vllm_config: Any,
        metric_types: dict[type, type],
        labelnames: list[str],
        per_engine_labelvalues: dict[int, list[object]],
    ) -> None:
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        self._counters: dict[str, dict[int, Any]] = {}
        for name in COUNTER_NAMES:
            counter = self._counter_cls(
                name=f"vllm:eccache_{name}",
                documentation=f"ECCacheConnector: {name.replace('_', ' ')}",
                labelnames=labelnames,
            )
            self._counters[name] = {
                idx: counter.labels(*values) for idx, values in per_engine_labelvalues.items()
            }

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0) -> None:
        for name, value in transfer_stats_data.items():
            per_engine = self._counters.get(name)
            if per_engine is not None and engine_idx in per_engine and value:
                per_engine[engine_idx].inc(value)
