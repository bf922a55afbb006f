"""An in-process stand-in for eccache (tests and demos without a cache server).

``MemoryStore`` has the sync ``Client`` calls the mock instances use (put/get/set_alias/resolve_alias/
lookup_entries); ``AsyncMemoryBackend`` exposes it with the ``AsyncClient`` calls the proxy uses. Not a
cache: no eviction, no leases; ``fail`` makes every call raise (eccache down).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class MemEntry:
    identifier: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    metadata: bytes


@dataclass(eq=False)
class MemoryStore:
    fail: bool = False
    _entries: dict[tuple[str, str], tuple[np.ndarray, bytes]] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    lookups: int = 0

    def _check(self) -> None:
        if self.fail:
            raise ConnectionError("memory store down")

    def put(self, namespace: str, identifier: str, array: np.ndarray, metadata: bytes = b"") -> str:
        self._check()
        with self._lock:
            if (namespace, identifier) in self._entries:
                return "exists"
            self._entries[(namespace, identifier)] = (np.array(array, copy=True), metadata)
            return "stored"

    def get(self, namespace: str, identifier: str) -> np.ndarray | None:
        self._check()
        with self._lock:
            found = self._entries.get((namespace, identifier))
        return None if found is None else found[0].copy()

    def delete(self, namespace: str, ids: list[str]) -> int:
        with self._lock:
            return sum(1 for i in ids if self._entries.pop((namespace, i), None) is not None)

    def lookup_entries(self, namespace: str, ids: list[str]) -> list[MemEntry | None]:
        self._check()
        self.lookups += 1
        out: list[MemEntry | None] = []
        with self._lock:
            for ident in ids:
                found = self._entries.get((namespace, ident))
                if found is None:
                    out.append(None)
                else:
                    arr, meta = found
                    out.append(MemEntry(ident, tuple(arr.shape), str(arr.dtype), arr.nbytes, meta))
        return out

    def set_alias(self, alias: str, namespace: str) -> None:
        self._check()
        self._aliases[alias] = namespace

    def resolve_alias(self, alias: str) -> str | None:
        self._check()
        return self._aliases.get(alias)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        pass


@dataclass(eq=False)
class AsyncMemoryBackend:
    store: MemoryStore
    delay_s: float = 0.0

    async def lookup_entries(self, namespace: str, ids: list[str], *, raise_errors: bool = False) -> list[Any]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self.store.lookup_entries(namespace, ids)

    async def resolve_alias(self, alias: str) -> str | None:
        return self.store.resolve_alias(alias)

    async def close(self) -> None:
        pass
