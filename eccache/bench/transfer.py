"""`eccache bench transfer`: put/get MB/s of one entry through each transport vs a raw loopback socket.

Every number comes from this run: the socket baseline moves the same bytes between two threads over
127.0.0.1 into a preallocated buffer, the best a one-host TCP copy can do.
"""

from __future__ import annotations

import argparse
import socket
import threading
import uuid
from typing import Any

import numpy as np

from eccache.bench.common import add_common_flags, emit, median, redis_for_bench, server_for_bench, timed
from eccache.client import Client
from eccache.server.config import parse_size
from eccache.transport import mooncake

QWEN25_NBYTES = 1369 * 3584 * 2  # Qwen2.5-VL-7B, 1024² image, bf16


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


def run(sizes: list[int], repeat: int, redis_url: str | None, transports: list[str]) -> dict[str, Any]:
    pool = f"{max(sizes) * (repeat + 4) + (64 << 20)}"
    rows = []
    with redis_for_bench(redis_url) as url, server_for_bench(url, pool) as address:
        for nbytes in sizes:
            row: dict[str, Any] = {"size_bytes": nbytes, "transports": {},
                                   "baselines": {"socket_MBps": socket_mbps(nbytes, repeat)}}
            for name in transports:
                row["transports"][name] = transport_mbps(address, name, nbytes, repeat)
            sock = row["baselines"]["socket_MBps"]
            row["ratios_vs_socket"] = {n: {k: v / sock for k, v in r.items()} for n, r in row["transports"].items()}
            rows.append(row)
    return {**rows[0], "sizes": rows} if len(rows) > 1 else rows[0]


def table(result: dict[str, Any]) -> str:
    lines = [f"{'size':>12} {'path':<22} {'put MB/s':>10} {'get MB/s':>10} {'get/socket':>10}"]
    for row in result.get("sizes", [result]):
        sock = row["baselines"]["socket_MBps"]
        lines.append(f"{row['size_bytes']:>12} {'raw loopback socket':<22} {sock:>10.0f} {sock:>10.0f} {1:>10.2f}")
        for name, r in row["transports"].items():
            lines.append(f"{row['size_bytes']:>12} {name:<22} {r['put_MBps']:>10.0f} {r['get_MBps']:>10.0f} "
                         f"{r['get_MBps'] / sock:>10.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eccache bench transfer", description=__doc__)
    add_common_flags(p)
    p.add_argument("--sizes", nargs="+", default=[str(QWEN25_NBYTES)],
                   help="entry sizes, e.g. 64KiB 9812992 34MB 67MB (default: 9.8 MB, Qwen2.5-VL 1024² bf16)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--transports", nargs="+", default=None, choices=["mooncake", "inline"])
    args = p.parse_args(argv)
    transports = args.transports or (["mooncake", "inline"] if mooncake.available() else ["inline"])
    result = run([parse_size(s) for s in args.sizes], args.repeat, args.redis_url, transports)
    emit(result, args.json, table)
    return 0
