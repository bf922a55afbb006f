"""What the installed vLLM offers the connector, detected from its classes and modules (never its version).

`ECConnectorBase`'s core (load, save, `has_cache_item`, `update_state_after_alloc`, `build_connector_meta`)
is stable across the supported releases; the hooks below came later and are used where present:

- `HAS_ENSURE_HOOK`: `ensure_cache_available` lets the scheduler defer a request while its items are
  resolved in the background; without it `has_cache_item` resolves synchronously.
- `HAS_UNAVAILABLE_HOOK`: `take_unavailable_requests` lets the connector fail a request whose item can
  be neither loaded nor encoded; without it such a request stays deferred.
- `HAS_WORKER_META`: the worker → scheduler channel (`build_connector_worker_meta`, carried in
  `ECConnectorOutput.ec_connector_worker_meta`): failed loads and worker counters reach the scheduler.
- `HAS_STATS_HOOKS`: `get_ec_connector_stats` / `build_prom_metrics`: counters reach vLLM's metrics.
- `collect_ec_item_metadata` / `PlaceholderMetadataResolver` (None when absent): the model's declaration
  of placeholder metadata (e.g. `image_grid_thw`). Without it vLLM cannot accept metadata-only items
  either, so the connector stores and reports no placeholder metadata there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vllm.distributed.ec_transfer.ec_connector.base import ECConnectorBase
from vllm.v1.outputs import ECConnectorOutput

__all__ = [
    "HAS_ENSURE_HOOK",
    "HAS_STATS_HOOKS",
    "HAS_UNAVAILABLE_HOOK",
    "HAS_WORKER_META",
    "PlaceholderMetadataResolver",
    "collect_ec_item_metadata",
    "has_placeholder_metadata",
]


def _output_fields() -> set[str]:
    if dataclasses.is_dataclass(ECConnectorOutput):
        return {f.name for f in dataclasses.fields(ECConnectorOutput)}
    return set()


HAS_ENSURE_HOOK: bool = hasattr(ECConnectorBase, "ensure_cache_available")
HAS_UNAVAILABLE_HOOK: bool = hasattr(ECConnectorBase, "take_unavailable_requests")
HAS_WORKER_META: bool = (hasattr(ECConnectorBase, "build_connector_worker_meta")
                         and "ec_connector_worker_meta" in _output_fields())
HAS_STATS_HOOKS: bool = (hasattr(ECConnectorBase, "get_ec_connector_stats")
                         and hasattr(ECConnectorBase, "build_prom_metrics"))

PlaceholderMetadataResolver: Any
collect_ec_item_metadata: Any
try:
    from vllm.distributed.ec_transfer.ec_connector.utils import (
        PlaceholderMetadataResolver,
        collect_ec_item_metadata,
    )
except ImportError:  # older vLLM: no placeholder metadata declaration
    PlaceholderMetadataResolver = None
    collect_ec_item_metadata = None


def has_placeholder_metadata() -> bool:
    """Whether vLLM declares placeholder metadata (and so accepts metadata-only items)."""
    return collect_ec_item_metadata is not None and PlaceholderMetadataResolver is not None
