"""Messages between the scheduler-side and worker-side connectors, and the vLLM stats object.

`ECCacheConnectorMetadata` goes scheduler → worker once per step (built by `build_connector_meta`);
`ECCacheWorkerMetadata` goes worker → scheduler (failed loads, counter deltas), aggregated across ranks.
Both are plain picklable dataclasses: vLLM may move them between processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm.distributed.ec_transfer.ec_connector.base import ECConnectorMetadata

try:  # vLLM >= 0.30
    from vllm.distributed.ec_transfer.ec_connector.base import ECConnectorWorkerMetadata
except ImportError:  # pragma: no cover - older vLLM
    ECConnectorWorkerMetadata = object  # type: ignore[assignment,misc]

try:
    from vllm.distributed.ec_transfer.ec_connector.metrics import ECConnectorStats
except ImportError:  # pragma: no cover - older vLLM

    @dataclass
    class ECConnectorStats:  # type: ignore[no-redef]
        data: dict[str, Any] = field(default_factory=dict)


from eccache.types import Acquired


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One embedding the worker must place into its encoder cache this step.

    Attributes:
        identifier: vLLM's multimodal identifier (the encoder cache key).
        acquired: the entry under the read lease the scheduler took (location, shape, dtype, checksum).
        num_embeds: rows vLLM expects (the scheduler's count of encoder embeddings for the item).
    """

    identifier: str
    acquired: Acquired
    num_embeds: int


@dataclass
class ECCacheConnectorMetadata(ECConnectorMetadata):
    """Scheduler → worker: what to load this step; on producers, what to (re)publish and its metadata.

    `publish` names items of this step's requests: the worker publishes those already in its encoder
    cache (vLLM does not re-encode them, so `save_caches` never fires); the server answers "exists"
    without moving bytes when the entry is still there.
    """

    namespace: str = ""
    loads: list[LoadSpec] = field(default_factory=list)
    save_metadata: dict[str, bytes] = field(default_factory=dict)
    publish: list[str] = field(default_factory=list)


@dataclass
class ECCacheWorkerMetadata(ECConnectorWorkerMetadata):
    """Worker → scheduler: identifiers whose load failed, and the worker's counter deltas."""

    failed_loads: set[str] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)

    def aggregate(self, other: Any) -> ECCacheWorkerMetadata:
        if not isinstance(other, ECCacheWorkerMetadata):
            return self
        counters = dict(self.counters)
        for name, n in other.counters.items():
            counters[name] = counters.get(name, 0) + n
        return ECCacheWorkerMetadata(self.failed_loads | other.failed_loads, counters)


@dataclass
class ECCacheStats(ECConnectorStats):
    """Counter deltas over one stats interval; `data` maps counter name → increment."""

    def reset(self) -> None:
        self.data = {}

    def aggregate(self, other: ECConnectorStats) -> ECCacheStats:
        merged = dict(self.data)
        for name, n in (other.data or {}).items():
            merged[name] = merged.get(name, 0) + n
        return ECCacheStats(data=merged)

    def reduce(self) -> dict[str, int | float]:
        return {name: int(n) for name, n in sorted(self.data.items())}

    def is_empty(self) -> bool:
        return not any(self.data.values())
