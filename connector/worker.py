"""Worker side of ECCacheConnector: places scheduled embeddings into vLLM's encoder cache (consumer)
and publishes computed ones in the background (producer).

Loads (`start_load_caches`, before the forward pass): each `LoadSpec` the scheduler sent is taken from
the process-local handoff (bytes the scheduler already read and verified) or read through the
scheduler's read lease into a reusable host staging buffer (checksum verified by the client), checked
against the expected shape, and copied to the worker's device in the model dtype. A load that still
fails is counted, reported to the scheduler (which fails the request) and replaced by zeros so the
engine keeps running. (A vLLM without the worker → scheduler channel, see `connector.compat`, cannot
fail the request: the failure is logged as an error and the request runs on the zeros. On one host the
worker normally takes the bytes the scheduler verified, so mostly a worker that reads over the network can
meet such a failure.)

Saves (`save_caches`, right after the encoder ran): on one tensor-parallel rank, the output is copied
device → host without waiting for it, and queued for a publisher thread. The queue is bounded in bytes;
when full the save is skipped and counted: publication never blocks encoding. Saves of a key already
READY or PENDING are answered by the server without moving bytes.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import torch

from connector import compat
from connector.client_pool import ClientPool
from connector.config import ConnectorConfig
from connector.handoff import Handoff, read_segment
from connector.metadata import ECCacheConnectorMetadata, ECCacheWorkerMetadata, LoadSpec
from connector.state import ByteBudget, Counters
from connector.tensors import entry_is_well_formed, torch_dtype, view_as_entry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _SaveJob:
    identifier: str
    host: torch.Tensor
    ready: Any  # an accelerator event to wait on before reading `host`, or None
    nbytes: int
    metadata: bytes


def _put(namespace: str, job: _SaveJob, client: Any) -> Any:
    return client.put(namespace, job.identifier, job.host, job.metadata)


def _tensor_parallel_rank() -> int:
    try:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

        return int(get_tensor_model_parallel_rank())
    except Exception:  # noqa: BLE001 - not initialised (tests, single process)
        return 0


class ECCacheWorker:
    """Worker-side state and logic; owned by the `ECCacheConnector` facade in each worker process."""

    def __init__(
        self,
        config: ConnectorConfig,
        namespace: str,
        *,
        is_producer: bool,
        is_consumer: bool,
        pool: ClientPool,
        counters: Counters,
        handoff: Handoff | None,
        device: torch.device,
        model_dtype: torch.dtype,
    ) -> None:
        self._config = config
        self.namespace = namespace
        self._is_producer = is_producer
        self._is_consumer = is_consumer
        self._pool = pool
        self.counters = counters
        self._handoff = handoff
        self._device = device
        self._dtype = model_dtype
        self._staging: torch.Tensor | None = None
        self._failed_loads: set[str] = set()
        self._budget = ByteBudget(config.save_queue_bytes)
        self._queue: queue.SimpleQueue[_SaveJob | None] = queue.SimpleQueue()
        self._publisher: threading.Thread | None = None
        self._saves_rank = _tensor_parallel_rank() == 0
        self._closed = False

    @property
    def save_queue(self) -> ByteBudget:
        return self._budget

    # ----------------------------------------------------------------- loads

    def start_load_caches(self, encoder_cache: dict[str, torch.Tensor], metadata: Any) -> None:
        """Loads every scheduled item into `encoder_cache`; never raises for a cache failure."""
        if not isinstance(metadata, ECCacheConnectorMetadata):
            return
        for spec in metadata.loads:
            if spec.identifier in encoder_cache:
                continue
            tensor = self._load_one(spec)
            if tensor is None:
                self.counters.add("load_failures")
                self._report_failed_load(spec.identifier)
                encoder_cache[spec.identifier] = self._placeholder(spec)
                continue
            encoder_cache[spec.identifier] = tensor
            self.counters.add("loads")

    def _report_failed_load(self, identifier: str) -> None:
        if compat.HAS_WORKER_META:
            self._failed_loads.add(identifier)  # the scheduler fails the requests holding it
            return
        # nothing would ever collect it: say so loudly instead
        logger.error("eccache: loading %s failed and this vLLM has no worker -> scheduler channel to fail "
                     "its request; it runs on a zero embedding", identifier)

    def _load_one(self, spec: LoadSpec) -> torch.Tensor | None:
        info = spec.acquired.info
        if not entry_is_well_formed(info) or info.shape[0] != spec.num_embeds:
            logger.warning("eccache: entry %s has shape %s, vLLM expects %d rows", spec.identifier,
                           info.shape, spec.num_embeds)
            return None
        host = None
        if self._handoff is not None:
            host = self._handoff.take((self.namespace, spec.identifier))
        if host is None:
            shared = read_segment(spec.acquired.lease_id, info.nbytes)  # verified by the scheduler
            if shared is not None:
                host = view_as_entry(shared, info)
        staged = host is None
        if host is None:
            buffer = self._staging_for(info.nbytes)
            ok, corrupt = self._pool.read_into(spec.acquired, buffer)
            if not ok:
                if corrupt:
                    self.counters.add("checksum_failures")
                return None
            host = view_as_entry(buffer, info)
        if tuple(host.shape) != tuple(info.shape):
            return None
        out = host.to(device=self._device, dtype=self._dtype)
        if staged and out.data_ptr() == host.data_ptr():
            out = out.clone()  # the staging buffer is reused by the next load
        return out

    def _staging_for(self, nbytes: int) -> torch.Tensor:
        if nbytes > self._config.staging_bytes:
            return torch.empty(nbytes, dtype=torch.uint8)
        if self._staging is None:
            pin = self._device.type == "cuda" and torch.cuda.is_available()
            self._staging = torch.empty(self._config.staging_bytes, dtype=torch.uint8, pin_memory=pin)
            register = getattr(self._pool.client(), "register_buffer", None)
            if callable(register):
                try:
                    register(self._staging)
                except Exception:  # noqa: BLE001 - unregistered memory still works, slower
                    logger.debug("eccache: registering the staging buffer failed", exc_info=True)
        return self._staging[:nbytes]

    def _placeholder(self, spec: LoadSpec) -> torch.Tensor:
        width = spec.acquired.info.shape[-1] if spec.acquired.info.shape else 1
        return torch.zeros((spec.num_embeds, width), dtype=self._dtype, device=self._device)

    def build_worker_meta(self) -> ECCacheWorkerMetadata | None:
        failed, self._failed_loads = self._failed_loads, set()
        delta = self.counters.take_delta()
        if not failed and not delta:
            return None
        return ECCacheWorkerMetadata(failed_loads=failed, counters=delta)

    # ----------------------------------------------------------------- saves

    def start_save_caches(self, encoder_cache: dict[str, torch.Tensor], metadata: Any) -> None:
        """Before the encoder runs: publishes this step's items that vLLM already holds (not re-encoded)."""
        for identifier in getattr(metadata, "publish", None) or ():
            if identifier in encoder_cache:
                self.save_caches(encoder_cache, identifier, metadata)

    def save_caches(self, encoder_cache: dict[str, torch.Tensor], mm_hash: str, metadata: Any) -> None:
        """Queues `encoder_cache[mm_hash]` for publication; returns without waiting for the network."""
        if not self._is_producer or not self._saves_rank or self._closed:
            return
        tensor = encoder_cache.get(mm_hash)
        if tensor is None:
            return
        if tensor.dim() != 2:
            tensor = tensor.reshape(-1, tensor.shape[-1])
        if torch_dtype(str(tensor.dtype)) is None:
            logger.warning("eccache: not saving %s of dtype %s", mm_hash, tensor.dtype)
            return
        nbytes = tensor.numel() * tensor.element_size()
        if not self._budget.try_reserve(nbytes):
            self.counters.add("saves_skipped")
            return
        ready = None
        if tensor.device.type == "cpu":
            host = tensor.detach()  # vLLM never writes an encoder output in place
        else:
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor.detach(), non_blocking=True)
            module = getattr(torch, tensor.device.type)
            ready = module.Event()
            ready.record()
        save_metadata = getattr(metadata, "save_metadata", None) or {}
        self._queue.put(_SaveJob(mm_hash, host, ready, nbytes, save_metadata.get(mm_hash, b"")))
        self._ensure_publisher()

    def _ensure_publisher(self) -> None:
        if self._publisher is None:
            self._publisher = threading.Thread(target=self._publish_loop, name="eccache-publish", daemon=True)
            self._publisher.start()

    def _publish_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                if job.ready is not None:
                    job.ready.synchronize()
                raw = self._pool.call(functools.partial(_put, self.namespace, job))
                outcome = str(getattr(raw, "value", raw))
                self.counters.add("saves" if outcome == "stored" else "saves_existing")
            except Exception as exc:  # noqa: BLE001 - a failed publication only costs a future miss
                logger.warning("eccache: publishing %s failed: %s", job.identifier, exc)
                self.counters.add("save_errors")
            finally:
                self._budget.release(job.nbytes)

    def wait_for_saves(self, timeout_s: float = 10.0) -> bool:
        """Blocks until the save queue is empty (tests, shutdown). True if it drained in time."""
        import time

        deadline = time.monotonic() + timeout_s
        while self._budget.used and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._budget.used == 0

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._publisher is not None:
            self.wait_for_saves(timeout_s=5.0)
            self._queue.put(None)
            self._publisher.join(timeout=5.0)
