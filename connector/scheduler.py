"""Scheduler side of ECCacheConnector: decides, without network calls in the scheduling loop, which
multimodal items are loaded from eccache.

Lifecycle of one item on a consumer:
1. `ensure_cache_available(request)` (called by vLLM before it schedules the request) submits the
   request's unresolved identifiers as ONE batch to a background resolver thread and defers the request
   while that batch is in flight (at most `timeout_ms`; then the items count as misses).
2. The resolver acquires read leases on the present entries (one Acquire call), reads each entry once
   and verifies its checksum, and records the result (hit with its lease, or miss) in a bounded TTL cache.
   A corrupt entry is dropped by the client and becomes a miss, so the request is encoded locally.
3. `has_cache_item` answers from that cache. `update_state_after_alloc` moves the lease to the request
   and queues a `LoadSpec`; `build_connector_meta` hands the queued loads to the worker.
4. Leases are released when the request finishes (or when an unused resolution expires); the server
   expires them on its own if this process dies.
A miss for an item whose request carries no media (metadata-only `image_embeds`) cannot be encoded:
the request is reported by `take_unavailable_requests` and vLLM fails it before any output (a vLLM
without that hook keeps it deferred, re-looking the item up, until it appears or the request is aborted).
On a producer, `update_state_after_alloc` records each item's placeholder metadata (e.g.
`image_grid_thw`) for the worker to store with the entry, and `request_finished` returns it as
`ec_transfer_params` (one entry per identifier: `metadata` and `item_indices`, whatever vLLM's helper
adds besides). Where vLLM declares no placeholder metadata (`connector.compat`), none is stored.
A request's leases are also released when it shows up in `SchedulerOutput.finished_req_ids`: vLLM
versions that never call `request_finished` on an EC connector would otherwise leak them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from connector import compat
from connector.client_pool import ClientPool
from connector.config import ConnectorConfig
from connector.handoff import Handoff, SharedSegments
from connector.metadata import ECCacheConnectorMetadata, ECCacheWorkerMetadata, LoadSpec
from connector.state import Counters, LeaseBook, ResultCache
from connector.tensors import entry_is_well_formed, view_as_entry
from eccache.placeholders import pack_placeholders
from eccache.types import Acquired

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the resolver found for one identifier: a verified entry under a read lease, or a miss.

    `resolved_at` (wall clock, like `Request.arrival_time`): a miss is only trusted by requests that
    arrived before it was found, so a request retried after the entry was (re)published looks again.
    """

    identifier: str
    acquired: Acquired | None
    resolved_at: float = 0.0

    def usable_for(self, arrival_time: float) -> bool:
        return self.acquired is not None or self.resolved_at >= arrival_time


class ECCacheScheduler:
    """Scheduler-side state and logic; owned by the `ECCacheConnector` facade in the scheduler process."""

    def __init__(
        self,
        vllm_config: Any,
        config: ConnectorConfig,
        namespace: str,
        *,
        is_producer: bool,
        is_consumer: bool,
        pool: ClientPool,
        counters: Counters,
        handoff: Handoff | None,
        segments: SharedSegments | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._vllm_config = vllm_config
        self._config = config
        self.namespace = namespace
        self._is_producer = is_producer
        self._is_consumer = is_consumer
        self._pool = pool
        self.counters = counters
        self._handoff = handoff
        self._segments = segments
        self._clock = clock
        self._lock = threading.Lock()  # guards _results and _inflight (the resolver thread writes them)
        self._results: ResultCache[str, Resolution] = ResultCache(
            config.result_cache_entries, config.result_ttl_ms / 1000.0, clock
        )
        self._inflight: dict[str, float] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eccache-resolve")
        self._releaser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eccache-release")
        self._leases: LeaseBook[Acquired] = LeaseBook()
        self._loads: dict[str, LoadSpec] = {}
        self._save_metadata: dict[str, bytes] = {}
        self._publish: dict[str, None] = {}  # ordered set
        self._seen_requests: dict[str, None] = {}
        self._unavailable: set[str] = set()
        self._metadata_resolver: Any = None
        self._verify_buffer: torch.Tensor | None = None  # resolver thread only
        self._closed = False

    # ----------------------------------------------------------------- resolution (consumer)

    def ensure_cache_available(self, request: Any, num_computed_tokens: int) -> bool:
        """True when every item the request still needs is resolved; False defers the request.

        Runs inside the scheduling loop: it only submits work and reads local state.
        """
        if self._is_producer and request.request_id not in self._seen_requests:
            self._seen_requests[request.request_id] = None
            for feature in request.mm_features or ():
                self._publish[feature.identifier] = None
                self._save_metadata.setdefault(feature.identifier, self._metadata_bytes(feature))
        if not self._is_consumer or self._closed:
            return True
        needed = self._needed_features(request, num_computed_tokens)
        if not needed:
            return True
        now = self._clock()
        arrival = float(getattr(request, "arrival_time", 0.0) or 0.0)
        to_submit: list[str] = []
        waiting = False
        with self._lock:
            for feature in needed:
                identifier = feature.identifier
                if self._leases.holds(request.request_id, identifier):
                    continue  # allocated in an earlier step (chunked prefill): already loaded
                resolution = self._results.get(identifier)
                if resolution is not None and resolution.usable_for(arrival):
                    continue
                started = self._inflight.get(identifier)
                if started is None:
                    self._inflight[identifier] = now
                    to_submit.append(identifier)
                    waiting = True
                elif (now - started) * 1000.0 >= self._config.timeout_ms:
                    # Too slow: a miss for now; a late answer still lands in the cache.
                    self._results.put(identifier, Resolution(identifier, None, time.time()))
                    self.counters.add("lookup_errors")
                else:
                    waiting = True
        if to_submit:
            self._executor.submit(self._resolve, list(dict.fromkeys(to_submit)))
        if waiting:
            return False
        # All resolved: an item that is missing and cannot be encoded here fails the request.
        for feature in needed:
            if self._leases.holds(request.request_id, feature.identifier):
                continue
            if not self.has_cache_item(feature.identifier) and self._is_metadata_only(feature):
                self._mark_unavailable(request.request_id, feature.identifier)
                return False
        return True

    def _mark_unavailable(self, request_id: str, identifier: str) -> None:
        """Records (once) a request that needs an item neither cached nor encodable here."""
        if request_id in self._unavailable:
            return
        self._unavailable.add(request_id)
        self.counters.add("unavailable_requests")
        if compat.HAS_UNAVAILABLE_HOOK:
            logger.warning("eccache: request %s needs %s, which is not cached and carries no media; "
                           "failing it", request_id, identifier)
        else:  # vLLM cannot fail it: it stays deferred until the item is published or it is aborted
            logger.warning("eccache: request %s needs %s, which is not cached and carries no media; this "
                           "vLLM cannot fail it (no take_unavailable_requests), so it waits", request_id,
                           identifier)

    def has_cache_item(self, identifier: str) -> bool:
        """Whether `identifier` was resolved as present and verified. Local state only."""
        if not self._is_consumer:
            return False
        with self._lock:
            resolution = self._results.get(identifier)
        return resolution is not None and resolution.acquired is not None

    def resolve_now(self, identifiers: Sequence[str]) -> None:
        """Resolves synchronously (for vLLM versions without `ensure_cache_available`, and tests)."""
        with self._lock:
            todo = [i for i in identifiers if self._results.get(i) is None]
            for i in todo:
                self._inflight[i] = self._clock()
        if todo:
            self._resolve(list(dict.fromkeys(todo)))

    def _resolve(self, identifiers: list[str]) -> None:
        """Resolver thread: one Acquire for the batch, then a verifying read of each present entry."""
        self.counters.add("lookups", len(identifiers))
        # a miss is as old as the lookup, not its answer: a request that arrived while the lookup was in
        # flight may have been sent after the entry was published, so it must not trust this miss
        looked_at = time.time()
        try:
            acquired: list[Acquired | None] = self._pool.call(
                lambda c: c.acquire(self.namespace, identifiers, lease_ms=self._config.lease_ms)
            )
        except Exception as exc:  # noqa: BLE001 - failure is a miss
            logger.warning("eccache: resolving %d items failed: %s", len(identifiers), exc)
            self.counters.add("lookup_errors", len(identifiers))
            acquired = [None] * len(identifiers)
        results: list[Resolution] = []
        for identifier, acq in zip(identifiers, acquired):
            if acq is not None and not self._verify(acq):
                self._release([acq])
                acq = None
            self.counters.add("hits" if acq is not None else "misses")
            results.append(Resolution(identifier, acq, looked_at))
        with self._lock:
            for resolution in results:
                self._inflight.pop(resolution.identifier, None)
                if self._closed:
                    dropped = [resolution]
                else:
                    dropped = self._results.put(resolution.identifier, resolution)
                self._release([d.acquired for d in dropped if d.acquired is not None])

    def _verify(self, acq: Acquired) -> bool:
        """Reads the entry once and checks shape, dtype and checksum; hands the bytes to the worker."""
        if not entry_is_well_formed(acq.info):
            logger.warning("eccache: entry %s has an unusable layout %s %s", acq.info.identifier,
                           acq.info.shape, acq.info.dtype)
            return False
        nbytes = acq.info.nbytes
        shared = self._segments.create(acq.lease_id, nbytes) if self._segments is not None else None
        if shared is not None:  # the worker of another process copies it from there
            buffer: Any = shared
        elif self._handoff is None and nbytes <= self._config.staging_bytes:
            # verify only: a reused buffer (fresh memory costs page faults on every read)
            if self._verify_buffer is None or self._verify_buffer.numel() < nbytes:
                self._verify_buffer = torch.empty(max(nbytes, 1 << 20), dtype=torch.uint8)
            buffer = self._verify_buffer[:nbytes]
        else:  # handed to the worker: the tensor becomes the encoder cache entry itself
            buffer = torch.empty(nbytes, dtype=torch.uint8)
        ok, corrupt = self._pool.read_into(acq, buffer)
        if ok and self._handoff is not None:
            self._handoff.put((self.namespace, acq.info.identifier), view_as_entry(buffer, acq.info))
        del buffer, shared
        if not ok:
            if self._segments is not None:
                self._segments.drop(acq.lease_id)
            if corrupt:
                self.counters.add("checksum_failures")
            return False
        return True

    # ----------------------------------------------------------------- allocation and metadata

    def update_state_after_alloc(self, request: Any, index: int) -> None:
        feature = request.mm_features[index]
        identifier = feature.identifier
        if self._is_consumer:
            with self._lock:
                resolution = self._results.get(identifier)
                if resolution is not None and resolution.acquired is not None:
                    self._results.pop(identifier)  # the lease now belongs to the request
                else:
                    resolution = None
            if resolution is not None and resolution.acquired is not None:
                replaced = self._leases.add(request.request_id, identifier, resolution.acquired)
                if replaced is not None:
                    self._release([replaced])
                self._loads[identifier] = LoadSpec(
                    identifier, resolution.acquired, int(request.get_num_encoder_embeds(index))
                )
                return
        if self._is_producer and identifier not in self._save_metadata:
            self._save_metadata[identifier] = self._metadata_bytes(feature)

    def build_connector_meta(self, scheduler_output: Any) -> ECCacheConnectorMetadata:
        # idempotent after request_finished; the only cleanup where vLLM never calls request_finished
        for request_id in getattr(scheduler_output, "finished_req_ids", None) or ():
            self._forget_request(request_id)
        self.expire()
        meta = ECCacheConnectorMetadata(
            namespace=self.namespace, loads=list(self._loads.values()), save_metadata=self._save_metadata,
            publish=list(self._publish),
        )
        self._loads = {}
        self._save_metadata = {}
        self._publish = {}
        return meta

    def update_connector_output(self, connector_output: Any) -> None:
        meta = getattr(connector_output, "ec_connector_worker_meta", None)
        if not isinstance(meta, ECCacheWorkerMetadata):
            return
        self.counters.merge(meta.counters)
        if meta.failed_loads:
            failed = self._leases.requests_holding(meta.failed_loads)
            self.counters.add("unavailable_requests", len(failed - self._unavailable))
            self._unavailable |= failed

    def take_unavailable_requests(self) -> set[str]:
        taken, self._unavailable = self._unavailable, set()
        return taken

    def request_finished(self, request: Any) -> tuple[bool, dict[str, Any] | None]:
        self._forget_request(request.request_id, [f.identifier for f in request.mm_features or ()])
        if not self._is_producer or not request.mm_features:
            return False, None
        items = self._placeholder_metadata(request.mm_features)
        return False, items or None

    def _forget_request(self, request_id: str, identifiers: Sequence[str] = ()) -> None:
        """Releases a finished request's leases and drops its state; a second call does nothing."""
        leases = self._leases.take_request(request_id)
        self._release(leases)
        if self._handoff is not None and self._is_consumer:
            for identifier in {*identifiers, *(lease.info.identifier for lease in leases)}:
                self._handoff.discard((self.namespace, identifier))
        self._unavailable.discard(request_id)
        self._seen_requests.pop(request_id, None)

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _needed_features(request: Any, num_computed_tokens: int) -> list[Any]:
        features = []
        for feature in request.mm_features or ():
            position = feature.mm_position
            if position.offset + position.length > num_computed_tokens:
                features.append(feature)
        return features

    def _resolver(self) -> Any:
        if self._metadata_resolver is None:
            self._metadata_resolver = compat.PlaceholderMetadataResolver(self._vllm_config.model_config)
        return self._metadata_resolver

    def _placeholder_metadata(self, features: Sequence[Any]) -> dict[str, dict[str, Any]]:
        """vLLM's `ec_transfer_params` entries for `features`; {} where vLLM declares no metadata."""
        if not compat.has_placeholder_metadata():
            return {}
        try:
            items = dict(compat.collect_ec_item_metadata(list(features), self._resolver()))
        except Exception:  # noqa: BLE001 - metadata is an optimisation for the proxy
            logger.debug("eccache: placeholder metadata unavailable", exc_info=True)
            return {}
        return _with_item_indices(items, features)

    def _metadata_bytes(self, feature: Any) -> bytes:
        """The item's placeholder metadata (e.g. `{"image_grid_thw": [1, 4, 4]}`) as stored with the entry."""
        metadata = self._placeholder_metadata([feature]).get(feature.identifier, {}).get("metadata", {})
        return pack_placeholders(metadata)

    def _is_metadata_only(self, feature: Any) -> bool:
        """True when the item carries only placeholder metadata (no media, no embedding).

        Always False where vLLM declares no placeholder metadata: its parser then rejects such items.
        """
        data = feature.data
        if data is None or not compat.has_placeholder_metadata():
            return False
        try:
            fields = self._resolver().fields_for(feature.modality)
        except Exception:  # noqa: BLE001
            return False
        return bool(fields) and set(data.keys()) <= set(fields)

    def _release(self, leases: Sequence[Acquired]) -> None:
        leases = [lease for lease in leases if lease is not None]
        if self._segments is not None:
            for lease in leases:
                self._segments.drop(lease.lease_id)
        if not leases or self._closed:
            return

        def release() -> None:
            try:
                self._pool.call(lambda c: c.release(leases))
            except Exception as exc:  # noqa: BLE001 - leases expire on their own
                logger.debug("eccache: releasing %d leases failed: %s", len(leases), exc)

        self._releaser.submit(release)

    def expire(self) -> None:
        """Releases the leases of resolutions that expired unused."""
        with self._lock:
            dead = self._results.expire()
        self._release([d.acquired for d in dead if d.acquired is not None])
        if self._handoff is not None:
            for resolution in dead:
                self._handoff.discard((self.namespace, resolution.identifier))

    def shutdown(self) -> None:
        if self._closed:
            return
        with self._lock:
            leftovers = [r.acquired for r in self._results.clear() if r.acquired is not None]
        leftovers += self._leases.take_all()
        self._release(leftovers)
        self._closed = True
        if self._segments is not None:
            self._segments.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._releaser.shutdown(wait=True)


def _with_item_indices(items: dict[str, dict[str, Any]], features: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Adds `item_indices` (positions of each identifier in `features`) where vLLM's helper has none.

    Newer vLLM reports them itself; older releases only `metadata`: the same shape on every version.
    """
    for identifier, entry in items.items():
        if isinstance(entry, dict) and "item_indices" not in entry:
            entry["item_indices"] = [i for i, f in enumerate(features) if f.identifier == identifier]
    return items
