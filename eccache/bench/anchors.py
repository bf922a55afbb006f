"""Anchors for `eccache bench transfer`: the paths eccache is compared with, measured in the same run.

- vLLM's reference `ECExampleConnector`: one safetensors file per item. `save_caches` calls
  `safetensors.torch.save_file({"ec_cache": t.cpu()}, <dir>/<mm_hash>/encoder_cache.safetensors)` (creating
  the folder), `start_load_caches` calls `safetensors.torch.load_file(path, device=...)["ec_cache"]` into a
  fresh tensor. Measured on /dev/shm (tmpfs) and on a disk directory; nothing is fsynced and the page cache
  cannot be dropped without root, so the disk row writes into and reads from the page cache.
- Mooncake Store: a local `mooncake_master` (loopback only), one `mooncake_client` process that owns the
  memory segment (as an eccache server owns its pool), and an in-process `MooncakeDistributedStore` with no
  segment of its own, so every put/get crosses the Transfer Engine over loopback TCP, as eccache's does.
  put = `put_from` of a registered buffer under a new key; get = `get_into` a registered buffer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from eccache.bench.common import median, timed
from eccache.launch import free_port

EC_EXAMPLE_FILENAME = "encoder_cache.safetensors"  # what ECExampleConnector names each item's file
PAGE_CACHE_NOTE = ("disk rows write into and read back from the page cache (no fsync; dropping the cache needs "
                   "root), so they show the page-cache path, not the device")


def mbps(nbytes: int, samples: list[float]) -> float:
    """MB/s (10^6 bytes per second) of the median sample."""
    return nbytes / median(samples) / 1e6


# ---------------------------------------------------------------------------------------------- ECExample


def _tensor_for(nbytes: int, shape: tuple[int, ...] | None) -> Any:
    """A CPU tensor of nbytes: bf16 in `shape` when given (an encoder output), else flat bf16 or uint8."""
    import torch

    if shape is not None and int(np.prod(shape)) * 2 == nbytes:
        return torch.randn(shape, dtype=torch.float32).to(torch.bfloat16)
    if nbytes % 2 == 0:
        return torch.randn(nbytes // 2, dtype=torch.float32).to(torch.bfloat16)
    return torch.randint(0, 255, (nbytes,), dtype=torch.uint8)


def _safetensors_io() -> tuple[Callable[[Any, str], None], Callable[[str], Any], Any]:
    """(save, load, make_array) with torch when importable (what vLLM uses), else the numpy variant."""
    try:
        import safetensors.torch as st_torch

        def save(t: Any, path: str) -> None:
            st_torch.save_file({"ec_cache": t}, path)

        def load(path: str) -> Any:
            return st_torch.load_file(path, device="cpu")["ec_cache"]

        return save, load, _tensor_for
    except ImportError:
        import safetensors.numpy as st_numpy

        def save_np(a: Any, path: str) -> None:
            st_numpy.save_file({"ec_cache": a}, path)

        def load_np(path: str) -> Any:
            return st_numpy.load_file(path)["ec_cache"]

        def make_np(nbytes: int, shape: tuple[int, ...] | None) -> Any:
            return np.random.default_rng(2).integers(0, 255, nbytes, dtype=np.uint8)

        return save_np, load_np, make_np


def _empty_like(item: Any) -> Any:
    if isinstance(item, np.ndarray):
        return np.empty_like(item)
    import torch

    return torch.empty_like(item)


def _copy_into(out: Any, src: Any) -> None:
    if isinstance(out, np.ndarray):
        np.copyto(out, src)
    else:
        out.copy_(src)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool((a.view(-1)[:4096] == b.view(-1)[:4096]).all()) and bool(a.view(-1)[-1] == b.view(-1)[-1])


def ec_example_available() -> str | None:
    """None when safetensors imports, else the reason."""
    try:
        import safetensors  # noqa: F401
    except ImportError as exc:
        return f"unavailable: safetensors not installed ({exc})"
    return None


def ec_example_mbps(root: str, nbytes: int, repeat: int, shape: tuple[int, ...] | None = None) -> dict[str, float]:
    """Put/get MB/s of ECExampleConnector's file-per-item path under `root`.

    put: makedirs(<root>/<new hash>) + save_file of the item (as `save_caches`). get: load_file of one saved
    item (as `start_load_caches`) and a copy of it into a preallocated tensor: on CPU, load_file returns
    mmap-backed tensors whose pages are read only when touched (timing load_file alone measures ~0 bytes
    moved); on a GPU worker load_file copies them to the device, which this copy stands in for.
    """
    save, load, make = _safetensors_io()
    item = make(nbytes, shape)
    base = tempfile.mkdtemp(prefix="eccache-bench-ec-", dir=root)
    try:
        paths: list[str] = []

        def put() -> None:
            folder = os.path.join(base, uuid.uuid4().hex)
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, EC_EXAMPLE_FILENAME)
            save(item, path)
            paths.append(path)

        put_s = timed(put, repeat)
        last = paths[-1]
        out = _empty_like(item)
        get_s = timed(lambda: _copy_into(out, load(last)), repeat)
        if not _equal(out, item):
            raise RuntimeError("safetensors round trip returned different bytes")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"put_MBps": mbps(nbytes, put_s), "get_MBps": mbps(nbytes, get_s)}


def filesystem_of(path: str) -> str:
    """The mount type of the filesystem holding path (e.g. 'tmpfs', 'ext4'), from /proc/mounts."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            inside = len(fields) >= 3 and (path == fields[1] or path.startswith(fields[1].rstrip("/") + "/"))
            if inside and len(fields[1]) >= len(best):
                best, kind = fields[1], fields[2]
    return kind


def default_disk_dir() -> str:
    """A directory on a real disk: the first of /var/tmp, the temp dir, the cwd that is not tmpfs."""
    for candidate in ("/var/tmp", tempfile.gettempdir(), os.getcwd()):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK) and filesystem_of(candidate) != "tmpfs":
            return candidate
    return tempfile.gettempdir()


# ------------------------------------------------------------------------------------------ Mooncake Store


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait_port(proc: subprocess.Popen[bytes], port: int, what: str, log: str, timeout_s: float = 15.0) -> None:
    """Until `port` accepts connections; raises with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        if _port_open(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s: {_tail(log)}")


def _tail(path: str, nchars: int = 400) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return " ".join(f.read()[-nchars:].split())
    return ""


def _binary(name: str) -> str:
    """A Mooncake binary: on PATH, else inside the installed `mooncake` package."""
    found = shutil.which(name)
    if found:
        return found
    import mooncake

    path = os.path.join(os.path.dirname(mooncake.__file__), name)
    if os.access(path, os.X_OK):
        return path
    raise FileNotFoundError(f"{name} not found (pip install mooncake-transfer-engine-non-cuda)")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class MooncakeStoreBench:
    """A running master + segment owner and a connected in-process store client."""

    store: Any
    segment_bytes: int
    note: str

    def mbps(self, nbytes: int, repeat: int) -> dict[str, float]:
        """put_from a registered buffer under a new key each time; get_into a registered buffer."""
        src = np.random.default_rng(3).integers(0, 255, nbytes, dtype=np.uint8)
        dst = np.empty(nbytes, dtype=np.uint8)
        for array in (src, dst):
            _check(self.store.register_buffer(array.ctypes.data, nbytes), "register_buffer")
        try:
            keys: list[str] = []

            def put() -> None:
                key = f"bench-{uuid.uuid4().hex}"
                _check(self.store.put_from(key, src.ctypes.data, nbytes), "put_from")
                keys.append(key)

            put_s = timed(put, repeat)
            last = keys[-1]

            def get() -> None:
                got = self.store.get_into(last, dst.ctypes.data, nbytes)
                if got != nbytes:
                    raise RuntimeError(f"mooncake store get_into returned {got}, expected {nbytes}")

            get_s = timed(get, repeat)
            if not np.array_equal(src[:4096], dst[:4096]):
                raise RuntimeError("mooncake store returned different bytes")
        finally:
            for array in (src, dst):
                self.store.unregister_buffer(array.ctypes.data)
            self.store.remove_all(True)
        return {"put_MBps": mbps(nbytes, put_s), "get_MBps": mbps(nbytes, get_s)}


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"mooncake store {what} returned {rc}")


def _spawn(args: list[str], log: str) -> subprocess.Popen[bytes]:
    """Start args with stdout and stderr into the file `log` (the child keeps its own descriptor)."""
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "MC_LOG_LEVEL": "ERROR"})


def _start_master(logdir: str) -> tuple[subprocess.Popen[bytes], int]:
    rpc_port, metrics_port = free_port(), free_port()
    log = os.path.join(logdir, "master.log")
    proc = _spawn([_binary("mooncake_master"), f"--rpc_port={rpc_port}", "--rpc_address=127.0.0.1",
                   f"--metrics_port={metrics_port}", "--metrics_host=127.0.0.1",
                   "--enable_http_metadata_server=false"], log)
    _wait_port(proc, rpc_port, "mooncake_master", log)
    return proc, rpc_port


def _start_owner(logdir: str, master_port: int, segment_bytes: int) -> subprocess.Popen[bytes]:
    port = free_port()
    log = os.path.join(logdir, "owner.log")
    proc = _spawn([_binary("mooncake_client"), "--host=127.0.0.1", f"--port={port}",
                   f"--global_segment_size={segment_bytes}", "--local_buffer_size=0",
                   f"--master_server_address=127.0.0.1:{master_port}", "--metadata_server=P2PHANDSHAKE",
                   "--protocol=tcp"], log)
    _wait_port(proc, port, "mooncake_client (segment owner)", log)
    return proc


def _connect(master_port: int, local_buffer_bytes: int) -> Any:
    """An in-process store client with no segment of its own. The master port is checked first: setup()
    blocks ~90 s when no master answers."""
    from mooncake.store import MooncakeDistributedStore

    if not _port_open(master_port):
        raise RuntimeError(f"no mooncake_master on 127.0.0.1:{master_port}")
    store = MooncakeDistributedStore()
    _check(store.setup("127.0.0.1", "P2PHANDSHAKE", 0, local_buffer_bytes, "tcp", "", f"127.0.0.1:{master_port}"),
           "setup")
    return store


def _wait_segment(store: Any, timeout_s: float = 15.0) -> None:
    """Until the owner's segment is mounted: a 4 KiB probe put succeeds."""
    probe = np.zeros(4096, dtype=np.uint8)
    deadline = time.monotonic() + timeout_s
    rc = -1
    while time.monotonic() < deadline:
        rc = store.put(f"probe-{uuid.uuid4().hex}", probe)
        if rc == 0:
            store.remove_all(True)
            return
        time.sleep(0.1)
    raise RuntimeError(f"no segment mounted after {timeout_s:.0f}s (probe put returned {rc})")


@contextlib.contextmanager
def mooncake_store(segment_bytes: int, local_buffer_bytes: int = 16 << 20) -> Iterator[MooncakeStoreBench]:
    """Master, segment owner and client for the duration of the block; all bound to 127.0.0.1."""
    logdir = tempfile.mkdtemp(prefix="eccache-bench-mooncake-")
    procs: list[subprocess.Popen[bytes]] = []
    store = None
    try:
        master, master_port = _start_master(logdir)
        procs.append(master)
        procs.append(_start_owner(logdir, master_port, segment_bytes))
        store = _connect(master_port, local_buffer_bytes)
        _wait_segment(store)
        note = ("master + segment-owner process (mooncake_client) + in-process client without a segment: "
                "put_from/get_into registered buffers over the Transfer Engine, TCP on 127.0.0.1")
        yield MooncakeStoreBench(store, segment_bytes, note)
    finally:
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(logdir, ignore_errors=True)


def mooncake_store_available() -> str | None:
    """None when the store module and binaries are there, else 'unavailable: <reason>'."""
    try:
        from mooncake.store import MooncakeDistributedStore  # noqa: F401

        _binary("mooncake_master")
        _binary("mooncake_client")
    except Exception as exc:  # ImportError, a missing libibverbs, a missing binary
        return f"unavailable: {exc}"
    return None
