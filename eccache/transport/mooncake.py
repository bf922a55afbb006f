"""Mooncake Transfer Engine: one-sided reads and writes into remote pools (TCP here, RDMA in production).

Tuned as measured on these machines (see DESIGN.md, "Data-plane facts"): transfers are submitted
asynchronously and polled with a short sleep (the synchronous calls spin a core), TCP connections are
pooled, slices are 1 MiB, and the client copies through one registered staging buffer that it reuses.
The engine's RPC and data ports listen on all interfaces without authentication: keep cache nodes on
a trusted network.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from eccache.errors import TransportError
from eccache.transport.base import Transport
from eccache.types import Location

_TUNING = {"MC_TCP_ENABLE_CONNECTION_POOL": "1", "MC_TCP_SLICE_SIZE": str(1 << 20), "MC_LOG_LEVEL": "ERROR"}
# read by the engine's native library when it loads, so set before the first import of mooncake
for _name, _value in _TUNING.items():
    os.environ.setdefault(_name, _value)
_POLL_S = 20e-6
_MAX_POLL_S = 2e-4


def available() -> bool:
    try:
        from mooncake.engine import TransferEngine  # noqa: F401
    except Exception:
        return False
    return True


class Engine:
    """A Transfer Engine with integer returns turned into exceptions."""

    def __init__(self, host: str = "127.0.0.1", protocol: str = "tcp", device: str = "") -> None:
        try:
            from mooncake.engine import TransferEngine
        except Exception as exc:  # ImportError, or a missing libibverbs
            raise TransportError(f"mooncake transfer engine unavailable: {exc}") from exc
        self._te = TransferEngine()
        rc = self._te.initialize(host, "P2PHANDSHAKE", protocol, device)
        if rc != 0:
            raise TransportError(f"mooncake initialize({host}, {protocol}) returned {rc}")
        self.session = f"{host}:{self._te.get_rpc_port()}"
        self._registered: set[int] = set()

    def register(self, address: int, nbytes: int) -> None:
        rc = self._te.register_memory(address, nbytes)
        if rc != 0:
            raise TransportError(f"mooncake register_memory({nbytes} bytes) returned {rc}")
        self._registered.add(address)

    def unregister(self, address: int) -> None:
        if address in self._registered:
            self._registered.discard(address)
            self._te.unregister_memory(address)

    def transfer(self, session: str, local: int, remote: int, nbytes: int, *, write: bool,
                 timeout_s: float = 30.0) -> None:
        """One-sided copy; returns when complete. Raises TransportError (buffer state then unknown)."""
        submit = self._te.batch_transfer_async_write if write else self._te.batch_transfer_async_read
        batch = submit(session, [local], [remote], [nbytes])
        if batch == 0 or batch < 0:
            raise TransportError(f"mooncake submit to {session} failed ({batch})")
        deadline = time.monotonic() + timeout_s
        sleep = _POLL_S
        while True:
            status = self._te.transfer_check_status(batch)
            if status == 1:
                return
            if status < 0:
                raise TransportError(f"mooncake transfer with {session} failed ({status})")
            if time.monotonic() > deadline:
                raise TransportError(f"mooncake transfer with {session} timed out after {timeout_s}s")
            time.sleep(sleep)
            sleep = min(sleep * 2, _MAX_POLL_S)

    def close(self) -> None:
        for address in list(self._registered):
            self.unregister(address)


class MooncakeTransport(Transport):
    """Client side of Mooncake transfers.

    Over TCP, registering memory is only bookkeeping (measured: microseconds), so the caller's own
    buffer is registered for the duration of one transfer and no copy is made. Over RDMA, registration
    pins pages and costs milliseconds, so bytes go through one registered staging buffer that is reused.
    """

    name = "mooncake"

    def __init__(self, host: str = "127.0.0.1", protocol: str = "tcp", staging_bytes: int = 0) -> None:
        self._engine = Engine(host, protocol)
        self._zero_copy = protocol == "tcp"
        self._lock = threading.Lock()
        self._staging = np.empty(0, dtype=np.uint8)
        if staging_bytes and not self._zero_copy:
            self._ensure_staging(staging_bytes)

    def _ensure_staging(self, nbytes: int) -> np.ndarray:
        if self._staging.nbytes < nbytes:
            if self._staging.nbytes:
                self._engine.unregister(int(self._staging.ctypes.data))
            self._staging = np.empty(max(nbytes, 2 * self._staging.nbytes), dtype=np.uint8)
            self._engine.register(int(self._staging.ctypes.data), self._staging.nbytes)
        return self._staging

    def _check(self, location: Location) -> None:
        if not location.te_session:
            raise TransportError(f"pool {location.pool_id} offers no mooncake session")

    def _direct(self, buffer: np.ndarray, location: Location, write: bool) -> bool:
        """Transfers straight from/to buffer; False when it cannot be registered (then stage)."""
        address = int(buffer.ctypes.data)
        try:
            self._engine.register(address, buffer.nbytes)
        except TransportError:
            return False
        try:
            self._engine.transfer(location.te_session, address, location.address, location.nbytes, write=write)
        finally:
            self._engine.unregister(address)
        return True

    def write(self, namespace: str, identifier: str, lease_id: str, location: Location,
              data: memoryview) -> None:
        self._check(location)
        source = np.frombuffer(data, dtype=np.uint8)
        with self._lock:
            if self._zero_copy and self._direct(source, location, write=True):
                return
            staging = self._ensure_staging(location.nbytes)
            np.copyto(staging[:location.nbytes], source)
            self._engine.transfer(location.te_session, int(staging.ctypes.data), location.address,
                                  location.nbytes, write=True)

    def read_into(self, namespace: str, identifier: str, lease_id: str, location: Location,
                  out: memoryview) -> None:
        self._check(location)
        target = np.frombuffer(out, dtype=np.uint8)
        with self._lock:
            if self._zero_copy and self._direct(target, location, write=False):
                return
            staging = self._ensure_staging(location.nbytes)
            self._engine.transfer(location.te_session, int(staging.ctypes.data), location.address,
                                  location.nbytes, write=False)
            np.copyto(target, staging[:location.nbytes])

    def close(self) -> None:
        self._engine.close()
