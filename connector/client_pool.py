"""The connector's eccache clients: one per process side, over the configured servers, with failover.

A client is created lazily on first use (so building a connector never blocks on the network) and
replaced by the next server's after a call raises. Read-path methods of `eccache.Client` already turn
failures into misses; the pool only decides which server to talk to.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from connector.config import ConnectorConfig

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _read_into(acquired: Any, out: Any, client: Any) -> bool:
    return bool(client.read_into(acquired, out))


def _client_kwargs(config: ConnectorConfig, client_cls: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"auth_token": config.auth_token, "transport": config.transport}
    try:
        params = inspect.signature(client_cls).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if "timeout_ms" in params:
        kwargs["timeout_ms"] = config.timeout_ms
    elif "timeout_s" in params:
        kwargs["timeout_s"] = config.timeout_ms / 1000.0
    if "staging_bytes" in params:
        kwargs["staging_bytes"] = config.staging_bytes
    return kwargs


class ClientPool:
    """Hands out one `eccache.Client` at a time, failing over across `config.servers`."""

    def __init__(self, config: ConnectorConfig, client_factory: Callable[..., Any] | None = None) -> None:
        self._config = config
        self._factory = client_factory
        self._index = 0
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return self._config.servers[self._index]

    def client(self) -> Any:
        """The current client, created on first use. Raises whatever the constructor raises."""
        with self._lock:
            if self._client is None:
                factory = self._factory
                if factory is None:
                    from eccache import Client

                    factory = Client
                self._client = factory(self.address, **_client_kwargs(self._config, factory))
            return self._client

    def call(self, fn: Callable[[Any], T]) -> T:
        """Runs `fn(client)`; on an exception moves to the next server and tries each server once more."""
        last: BaseException | None = None
        for _ in range(len(self._config.servers)):
            try:
                return fn(self.client())
            except Exception as exc:  # noqa: BLE001 - any failure moves to the next server
                last = exc
                logger.warning("eccache call to %s failed: %s", self.address, exc)
                self._fail_over()
        assert last is not None
        raise last

    def read_into(self, acquired: Any, out: Any) -> tuple[bool, bool]:
        """Reads an acquired entry into `out`, checksum verified; never raises.

        Returns:
            (ok, checksum_failed): checksum_failed tells a corrupt entry (which the client dropped) from
            other failures.
        """
        before = self.counters().get("checksum_failures", 0)
        try:
            ok = bool(self.call(functools.partial(_read_into, acquired, out)))
        except Exception as exc:  # noqa: BLE001 - a failed read is a miss
            logger.warning("eccache: reading %s failed: %s", acquired.info.identifier, exc)
            ok = False
        return ok, not ok and self.counters().get("checksum_failures", 0) > before

    def counters(self) -> dict[str, int]:
        client = self._client
        return dict(getattr(client, "counters", {}) or {}) if client is not None else {}

    def _fail_over(self) -> None:
        with self._lock:
            old, self._client = self._client, None
            self._index = (self._index + 1) % len(self._config.servers)
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()

    def close(self) -> None:
        with self._lock:
            old, self._client = self._client, None
        if old is not None:
            try:
                old.close()
            except Exception:  # noqa: BLE001
                logger.debug("closing eccache client failed", exc_info=True)
