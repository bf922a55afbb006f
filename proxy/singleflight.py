"""Single flight for cold items: concurrent requests for one key share one computation (asyncio only).

A request ``claim``s its keys: keys nobody is computing become its own (it must ``resolve`` each exactly
once, normally from a ``finally``), keys in flight come back as futures to await. Results are shared by
value; a failed computation resolves to the caller's failure value (e.g. None), never raises into waiters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self.joined = 0  # number of keys that joined another request's flight

    def claim(self, keys: Iterable[K]) -> tuple[list[K], dict[K, asyncio.Future[V]]]:
        """Split ``keys`` into (keys this caller now owns, futures of keys already in flight)."""
        loop = asyncio.get_running_loop()
        owned: list[K] = []
        waiting: dict[K, asyncio.Future[V]] = {}
        for key in keys:
            fut = self._inflight.get(key)
            if fut is not None:
                waiting[key] = fut
                self.joined += 1
            elif key not in owned:
                self._inflight[key] = loop.create_future()
                owned.append(key)
        return owned, waiting

    def resolve(self, key: K, value: V) -> None:
        """Publish the result of an owned key and end its flight (no-op if already resolved)."""
        fut = self._inflight.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(value)

    def in_flight(self) -> int:
        return len(self._inflight)
