"""Starting and stopping local processes: redis-server and eccache servers.

Used by the test fixtures, the benchmarks and the demo, which all "start what they need
themselves". Everything binds to 127.0.0.1 and is torn down by `stop()` (or the context manager).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisProcess:
    """A throwaway redis-server on a free loopback port, no persistence."""

    def __init__(self, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self._dir = tempfile.mkdtemp(prefix="eccache-redis-")
        self._binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self._dir, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop(kill=True)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServerProcess:
    """`eccache serve` in a subprocess; `.address` is its host:port once it printed its ready line."""

    def __init__(self, *, pool_size: str = "256MiB", redis_url: str | None = None, transport: str = "mooncake",
                 port: int = 0, extra: Sequence[str] = (), env: dict[str, str] | None = None,
                 start_timeout_s: float = 30.0) -> None:
        self.args = [sys.executable, "-m", "eccache.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                     "--pool-size", pool_size, "--transport", transport, "--log-level", "WARNING", *extra]
        if redis_url:
            self.args += ["--redis-url", redis_url]
        self.env = {**os.environ, "MC_LOG_LEVEL": "ERROR", **(env or {})}
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.log: list[str] = []
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env)
        self.address = self._wait_ready(self.proc)
        # keep draining both pipes so a chatty server never blocks on a full pipe
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        if "--port" in self.args and self.args[self.args.index("--port") + 1] == "0":
            self.args[self.args.index("--port") + 1] = self.address.rsplit(":", 1)[1]  # restarts keep the port

    def _wait_ready(self, proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                if proc.poll() is not None:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise RuntimeError(f"eccache serve exited with {proc.returncode}: {err[-2000:]}")
                continue
            if line.startswith("eccache listening on "):
                return line.split()[-1]
        proc.kill()
        raise RuntimeError("eccache serve did not become ready")

    def _drain(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        for line in stream:
            if len(self.log) < 10_000:
                self.log.append(line)

    def stop(self, kill: bool = False, timeout_s: float = 15.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def restart(self, kill: bool = True) -> None:
        self.stop(kill=kill)
        self.start()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
