"""Process-local handoff of verified embeddings from the scheduler side to the worker side.

When vLLM runs the scheduler and the (single) worker in one process, the scheduler's resolver has
already read and checksum-verified an entry's bytes before scheduling; the worker takes that host
tensor instead of reading it again (`Handoff`). With workers in other processes on the same host the
verified bytes go through a shared-memory segment named after the read lease (`SharedSegments`,
`read_segment`); a worker that finds neither reads through the lease. Both are bounded in bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from multiprocessing import shared_memory

import numpy as np
import torch


class Handoff:
    """(namespace, identifier) → host tensor, at most `capacity_bytes` in total."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._items: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    def put(self, key: tuple[str, str], tensor: torch.Tensor) -> bool:
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes > self.capacity_bytes:
            return False
        with self._lock:
            self._pop_locked(key)
            while self._items and self._nbytes + nbytes > self.capacity_bytes:
                _, old = self._items.popitem(last=False)
                self._nbytes -= old.numel() * old.element_size()
            self._items[key] = tensor
            self._nbytes += nbytes
        return True

    def take(self, key: tuple[str, str]) -> torch.Tensor | None:
        with self._lock:
            return self._pop_locked(key)

    def discard(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._pop_locked(key)

    def _pop_locked(self, key: tuple[str, str]) -> torch.Tensor | None:
        tensor = self._items.pop(key, None)
        if tensor is not None:
            self._nbytes -= tensor.numel() * tensor.element_size()
        return tensor

    @property
    def nbytes(self) -> int:
        return self._nbytes


_REGISTRY: dict[str, Handoff] = {}
_REGISTRY_LOCK = threading.Lock()


def handoff_for(engine_key: str, capacity_bytes: int) -> Handoff:
    """The handoff shared by the two connector sides of one engine in this process."""
    with _REGISTRY_LOCK:
        handoff = _REGISTRY.get(engine_key)
        if handoff is None:
            handoff = _REGISTRY[engine_key] = Handoff(capacity_bytes)
        return handoff


# ---------------------------------------------------------------------------------------------------------
# Across processes on one host: the scheduler verifies an entry into a named shared-memory segment and the
# worker (vLLM's multiprocess executor) copies it from there instead of reading the network again. The
# segment is named after the read lease, so no extra field travels in the metadata; a worker on another
# host (or after the segment was dropped) finds nothing and reads through the lease as before.


_SHM_DIR = "/dev/shm"


def segment_name(lease_id: str) -> str:
    return "ecc_" + hashlib.sha1(lease_id.encode()).hexdigest()[:24]


class SharedSegments:
    """Scheduler side: segments per read lease, at most `capacity_bytes` alive; unlinked on `drop`."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._segments: dict[str, shared_memory.SharedMemory] = {}
        self._nbytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def create(self, lease_id: str, nbytes: int) -> np.ndarray | None:
        """A writable uint8 array backed by a new segment for `lease_id`; None when over capacity or failed."""
        with self._lock:
            if lease_id in self._segments or self._nbytes + nbytes > self.capacity_bytes:
                return None
            try:
                segment = shared_memory.SharedMemory(name=segment_name(lease_id), create=True, size=nbytes)
            except (OSError, ValueError):
                return None
            self._segments[lease_id] = segment
            self._nbytes += nbytes
        return np.ndarray((nbytes,), dtype=np.uint8, buffer=segment.buf)

    def drop(self, lease_id: str) -> None:
        with self._lock:
            segment = self._segments.pop(lease_id, None)
            if segment is None:
                return
            self._nbytes -= segment.size
        _unlink_quietly(segment)

    def clear(self) -> None:
        with self._lock:
            segments = list(self._segments.values())
            self._segments.clear()
            self._nbytes = 0
        for segment in segments:
            _unlink_quietly(segment)


def _unlink_quietly(segment: shared_memory.SharedMemory) -> None:
    with contextlib.suppress(FileNotFoundError, OSError):
        segment.unlink()
    with contextlib.suppress(BufferError, OSError):
        segment.close()


def read_segment(lease_id: str, nbytes: int) -> torch.Tensor | None:
    """Worker side: a private copy of the segment of `lease_id`, or None if there is none on this host.

    Reads the segment as a file (POSIX shared memory lives in /dev/shm on Linux) rather than mapping
    it: no resource-tracker registration, which vLLM's processes share with the scheduler's.
    """
    path = os.path.join(_SHM_DIR, segment_name(lease_id))
    try:
        with open(path, "rb", buffering=0) as f:
            out = torch.empty(nbytes, dtype=torch.uint8)
            view = out.numpy().data.cast("B")
            got = 0
            while got < nbytes:
                n = f.readinto(view[got:])
                if not n:
                    return None
                got += n
            return out
    except OSError:
        return None
