"""`eccache bench transfer`: put/get MB/s of one entry through each transport vs a raw loopback socket.

Every number comes from this run: the socket baseline moves the same bytes between two threads over
127.0.0.1 into a preallocated buffer, the best a one-host TCP copy can do. Beside it, the anchors (see
`eccache.bench.anchors`): vLLM's reference ECExampleConnector (a safetensors file per item, on /dev/shm and
on disk, the disk one through the page cache) and Mooncake Store through a local mooncake_master.
"""

from __future__ import annotations

import argparse
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import numpy as np

from eccache.bench import anchors
from eccache.bench.common import add_common_flags, emit, median, redis_for_bench, server_for_bench, timed
from eccache.client import Client
from eccache.server.config import parse_size
from eccache.transport import mooncake

QWEN25_NBYTES = 1369 * 3584 * 2  # Qwen2.5-VL-7B, 1024² image, bf16
# --all-sizes: name -> bf16 shape of one encoder output (Qwen3-VL-8B: 4096 hidden x (1 + 3 deepstack) levels)
PRESETS: dict[str, tuple[int, ...]] = {
    "64KiB": (8, 4096),
    "Qwen2.5-VL-7B 1024²": (1369, 3584),
    "Qwen3-VL-8B 1024²": (1024, 16384),
    "Qwen3-VL-8B 1080p": (2040, 16384),
}
SHAPES: dict[int, tuple[int, ...]] = {int(np.prod(shape)) * 2: shape for shape in PRESETS.values()}
SOCKET = "socket_MBps"


def socket_mbps(nbytes: int, repeat: int) -> float:
    """Loopback TCP: one sender thread, one receiver thread into a reused buffer."""
    payload = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    sink = np.empty(nbytes, dtype=np.uint8)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ready = threading.Semaphore(0)
    done = threading.Semaphore(0)

    def receiver() -> None:
        conn, _ = listener.accept()
        view = memoryview(sink)
        with conn:
            for _ in range(repeat + 2):
                ready.release()
                got = 0
                while got < nbytes:
                    got += conn.recv_into(view[got:], nbytes - got)
                done.release()

    thread = threading.Thread(target=receiver, daemon=True)
    thread.start()
    sender = socket.create_connection(("127.0.0.1", port))

    def one() -> None:
        ready.acquire()
        sender.sendall(memoryview(payload))
        done.acquire()

    samples = timed(one, repeat)
    sender.close()
    listener.close()
    thread.join(5)
    return nbytes / median(samples) / 1e6


def transport_mbps(address: str, transport: str, nbytes: int, repeat: int) -> dict[str, float]:
    """eccache client against a local server: put of a new entry; get into a preallocated array through an
    acquired lease (read_into); get into a new array (client.get)."""
    array = np.random.default_rng(1).integers(0, 255, nbytes, dtype=np.uint8).view(np.uint8)
    namespace = "bench"
    with Client(address, transport=transport, staging_bytes=nbytes) as client:
        ids = [uuid.uuid4().hex for _ in range(repeat + 2)]
        pending = iter(ids)
        put_s = timed(lambda: client.put(namespace, next(pending), array), repeat)
        out = np.empty(nbytes, dtype=np.uint8)
        [acquired] = client.acquire(namespace, [ids[-1]], lease_ms=600_000)

        def get() -> None:
            if not client.read_into(acquired, out):
                raise RuntimeError("bench read failed")

        get_s = timed(get, repeat)
        client.release([acquired])
        get_alloc_s = timed(lambda: client.get(namespace, ids[-1]), repeat)
    return {"put_MBps": nbytes / median(put_s) / 1e6, "get_MBps": nbytes / median(get_s) / 1e6,
            "get_new_array_MBps": nbytes / median(get_alloc_s) / 1e6}


def ec_example_rows(nbytes: int, repeat: int, disk_dir: str) -> dict[str, Any]:
    """ECExampleConnector's safetensors-per-item path on /dev/shm and on disk, as baseline keys."""
    reason = anchors.ec_example_available()
    if reason:
        return {"ec_example": reason}
    out: dict[str, Any] = {}
    for name, root in (("shm", "/dev/shm"), ("disk", disk_dir)):
        try:
            row = anchors.ec_example_mbps(root, nbytes, repeat, SHAPES.get(nbytes))
        except Exception as exc:  # a full or missing filesystem
            out[f"ec_example_{name}"] = f"unavailable: {exc}"
            continue
        out[f"ec_example_{name}_put_MBps"] = row["put_MBps"]
        out[f"ec_example_{name}_get_MBps"] = row["get_MBps"]
    return out


def store_rows(store: anchors.MooncakeStoreBench | str, nbytes: int, repeat: int) -> dict[str, Any]:
    """Mooncake Store put/get as baseline keys, or the reason it is missing."""
    if isinstance(store, str):
        return {"mooncake_store": store}
    try:
        row = store.mbps(nbytes, repeat)
    except Exception as exc:
        return {"mooncake_store": f"unavailable: {exc}"}
    return {"mooncake_store_put_MBps": row["put_MBps"], "mooncake_store_get_MBps": row["get_MBps"]}


def anchor_pairs(baselines: dict[str, Any]) -> Iterator[tuple[str, dict[str, float]]]:
    """(path, {put_MBps, get_MBps}) for every measured anchor in a row's baselines."""
    for key, value in baselines.items():
        if key.endswith("_put_MBps") and isinstance(value, float | int):
            path = key[: -len("_put_MBps")]
            get = baselines.get(f"{path}_get_MBps")
            if isinstance(get, float | int):
                yield path, {"put_MBps": float(value), "get_MBps": float(get)}


def ratios(row: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every transport's and anchor's MB/s divided by the socket baseline of the same row."""
    sock = row["baselines"][SOCKET]
    out = {n: {k: v / sock for k, v in r.items()} for n, r in row["transports"].items()}
    out.update({path: {k: v / sock for k, v in r.items()} for path, r in anchor_pairs(row["baselines"])})
    return out


def open_store(stack: ExitStack, enabled: bool, segment_bytes: int) -> anchors.MooncakeStoreBench | str:
    """A running Mooncake Store for the whole run, or 'unavailable: <reason>'."""
    if not enabled:
        return "skipped (--no-mooncake-store)"
    reason = anchors.mooncake_store_available()
    if reason:
        return reason
    try:
        return stack.enter_context(anchors.mooncake_store(segment_bytes, local_buffer_bytes=16 << 20))
    except Exception as exc:
        return f"unavailable: {exc}"


def notes(store: anchors.MooncakeStoreBench | str, disk_dir: str) -> dict[str, str]:
    """What each row measures, for readers of the JSON."""
    out = {
        "socket": "one sender and one receiver thread over 127.0.0.1 into a reused buffer",
        "transports": "eccache client vs a local eccache server: put = client.put of a new entry; get = read_into "
                      "a preallocated array under a lease; get_new_array = client.get",
        "ec_example": "vLLM ECExampleConnector: save_file per item into <dir>/<hash>/encoder_cache.safetensors; "
                      "get = load_file + copy into a preallocated tensor; shm = /dev/shm, disk = "
                      f"{disk_dir} ({anchors.filesystem_of(disk_dir)}); " + anchors.PAGE_CACHE_NOTE,
    }
    if not isinstance(store, str):
        out["mooncake_store"] = store.note
    return out


def measure_size(address: str, nbytes: int, repeat: int, transports: list[str], ec_example: bool,
                 disk_dir: str, store: anchors.MooncakeStoreBench | str) -> dict[str, Any]:
    """One row: the socket baseline, every transport, and the anchors, for entries of nbytes."""
    row: dict[str, Any] = {"size_bytes": nbytes, "transports": {}, "baselines": {SOCKET: socket_mbps(nbytes, repeat)}}
    for name in transports:
        row["transports"][name] = transport_mbps(address, name, nbytes, repeat)
    if ec_example:
        row["baselines"].update(ec_example_rows(nbytes, repeat, disk_dir))
    row["baselines"].update(store_rows(store, nbytes, repeat))
    row["ratios_vs_socket"] = ratios(row)
    return row


def run(sizes: list[int], repeat: int, redis_url: str | None, transports: list[str], *, ec_example: bool = True,
        mooncake_store: bool = True, disk_dir: str | None = None) -> dict[str, Any]:
    """Every size's row; the top level repeats the first size's row and `sizes` holds them all."""
    room = max(sizes) * (repeat + 4) + (64 << 20)
    disk = disk_dir or anchors.default_disk_dir()
    rows = []
    with ExitStack() as stack:
        url = stack.enter_context(redis_for_bench(redis_url))
        address = stack.enter_context(server_for_bench(url, str(room)))
        store = open_store(stack, mooncake_store, room)
        for nbytes in sizes:
            rows.append(measure_size(address, nbytes, repeat, transports, ec_example, disk, store))
        run_notes = notes(store, disk)
    return {**rows[0], "sizes": rows, "notes": run_notes}


def _cells(nbytes: int, path: str, put: float, get: float, sock: float) -> str:
    return (f"{nbytes:>12} {path:<22} {put:>10.0f} {get:>10.0f} {put / sock:>10.2f} {get / sock:>10.2f}")


def table(result: dict[str, Any]) -> str:
    """One line per (size, path) with MB/s and both ratios to the socket baseline of the same size."""
    lines = [f"{'size':>12} {'path':<22} {'put MB/s':>10} {'get MB/s':>10} {'put/socket':>10} {'get/socket':>10}"]
    for row in result.get("sizes", [result]):
        n, sock = row["size_bytes"], row["baselines"][SOCKET]
        lines.append(_cells(n, "raw loopback socket", sock, sock, sock))
        for name, r in row["transports"].items():
            lines.append(_cells(n, f"eccache {name}", r["put_MBps"], r["get_MBps"], sock))
        for path, r in anchor_pairs(row["baselines"]):
            lines.append(_cells(n, path, r["put_MBps"], r["get_MBps"], sock))
        for key, value in row["baselines"].items():
            if isinstance(value, str):
                lines.append(f"{n:>12} {key:<22} {value}")
    lines += [f"note {k}: {v}" for k, v in result.get("notes", {}).items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="eccache bench transfer", description=__doc__)
    add_common_flags(p)
    p.add_argument("--sizes", nargs="+", default=[str(QWEN25_NBYTES)],
                   help="entry sizes, e.g. 64KiB 9812992 34MB 67MB (default: 9.8 MB, Qwen2.5-VL 1024² bf16)")
    p.add_argument("--all-sizes", action="store_true",
                   help="64 KiB, 9.8 MB (bf16 [1369,3584]), 34 MB (Qwen3-VL-8B 1024², [1024,16384]) and "
                        "67 MB (Qwen3-VL-8B 1080p, [2040,16384]); overrides --sizes")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--transports", nargs="+", default=None, choices=["mooncake", "inline"])
    p.add_argument("--no-ec-example", action="store_true", help="skip the ECExampleConnector rows")
    p.add_argument("--no-mooncake-store", action="store_true", help="skip the Mooncake Store rows")
    p.add_argument("--disk-dir", default=None, help="directory for the on-disk ECExampleConnector rows "
                                                     "(default: /var/tmp or the first non-tmpfs temp dir)")
    p.add_argument("--plot", metavar="FILE.png", default=None, help="also write a bar chart of MB/s per path")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    transports = args.transports or (["mooncake", "inline"] if mooncake.available() else ["inline"])
    sizes = sorted({int(np.prod(s)) * 2 for s in PRESETS.values()}) if args.all_sizes else \
        [parse_size(s) for s in args.sizes]
    result = run(sizes, args.repeat, args.redis_url, transports, ec_example=not args.no_ec_example,
                 mooncake_store=not args.no_mooncake_store, disk_dir=args.disk_dir)
    if args.plot:
        from eccache.bench.plot import plot_transfer

        result["plot"] = plot_transfer(result, args.plot)
    emit(result, args.json, table)
    return 0
