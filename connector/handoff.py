"""Process-local handoff of verified embeddings from the scheduler side to the worker side.

When vLLM runs the scheduler and the (single) worker in one process, the scheduler's resolver has
already read and checksum-verified an entry's bytes before scheduling; the worker takes that host
tensor instead of reading it again. With workers in other processes nothing is ever found here and the
worker reads through its own lease. Bounded in bytes; the oldest entries are dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

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
