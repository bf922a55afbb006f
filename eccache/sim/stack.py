"""The local EPD deployment: eccache (embedded default), encoder and PD instances, two proxies.

Both proxies front the same instances. ``proxy_cache`` runs with ``--eccache`` (warm images skip the
encoder); ``proxy_nocache`` runs without it, so every image goes through an encoder (the instances still
hand embeddings to PD through eccache, as an EC connector would: only the cross-request reuse is off).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from eccache.sim.procs import ProcessGroup

MODEL = "tiny"
NAMESPACE = "ns-eccache-sim"


def mooncake_available() -> bool:
    """True when the Mooncake Transfer Engine imports here (else the stack runs the inline transport)."""
    try:
        if importlib.util.find_spec("mooncake") is None:
            return False
        from mooncake.engine import TransferEngine  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a missing libibverbs
        return False
    return True


def vllm_available() -> bool:
    """True when ``import vllm`` would find a package (not imported here: it is slow)."""
    return importlib.util.find_spec("vllm") is not None


@dataclass(eq=False)
class Stack:
    """A running deployment; ``close()`` (or the context manager) stops every process it started."""

    backend: str                                   # "mock" or "vllm"
    transport: str
    eccache: str = ""
    encoders: list[str] = field(default_factory=list)
    pds: list[str] = field(default_factory=list)
    proxy_cache: str = ""
    proxy_nocache: str = ""
    startup_s: float = 0.0
    group: ProcessGroup = field(default_factory=ProcessGroup)
    extra_stops: list[Any] = field(default_factory=list)  # objects with .stop() (real vLLM servers)
    scratch: str | None = None
    stopped_cleanly: bool | None = None

    def close(self) -> None:
        """Stop the proxies, then the instances, then eccache: SIGTERM, wait, SIGKILL as a last resort."""
        clean = True
        proxies = [c for c in self.group.children if c.name.startswith("proxy")]
        rest = [c for c in self.group.children if not c.name.startswith("proxy")]
        for part in (proxies, rest):
            sub = ProcessGroup()
            sub.children = part
            clean = sub.stop() and clean
        self.group.children.clear()
        for server in reversed(self.extra_stops):
            with contextlib.suppress(Exception):
                server.stop()
        self.extra_stops.clear()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None
        self.stopped_cleanly = clean

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "transport": self.transport, "eccache": self.eccache,
                "encoders": len(self.encoders), "pds": len(self.pds), "startup_s": round(self.startup_s, 2)}


def _start_eccache(stack: Stack, pool_size: str, deadline: float) -> None:
    args = [sys.executable, "-m", "eccache.cli", "serve", "--host", "127.0.0.1", "--port", "0", "--pool-size",
            pool_size, "--transport", stack.transport, "--log-level", "WARNING"]  # no --redis-url: embedded
    stack.eccache = stack.group.start("eccache", args, "eccache listening on ").wait_ready(deadline)


def _start_proxies(stack: Stack, deadline: float) -> None:
    common = [sys.executable, "-m", "proxy", "--host", "127.0.0.1", "--port", "0", "--encode", *stack.encoders,
              "--pd", *stack.pds, "--probe-interval", "5", "--log-level", "WARNING"]
    cached = stack.group.start("proxy-cache", [*common, "--eccache", stack.eccache], "eccache proxy listening on")
    plain = stack.group.start("proxy-nocache", common, "eccache proxy listening on")
    stack.proxy_cache = "http://" + cached.wait_ready(deadline)
    stack.proxy_nocache = "http://" + plain.wait_ready(deadline)


@contextlib.contextmanager
def _starting(stack: Stack) -> Iterator[None]:
    """Times the start-up of ``stack``; a start that fails stops whatever it had started."""
    t0 = time.monotonic()
    try:
        yield
    except BaseException:
        stack.close()
        raise
    stack.startup_s = time.monotonic() - t0


def start_mock_stack(*, encoders: int = 2, pds: int = 2, pool_size: str = "512MiB",
                     transport: str | None = None, start_timeout_s: float = 60.0) -> Stack:
    """eccache serve + ``encoders`` mock encoders + ``pds`` mock PDs + both proxies, on free loopback ports."""
    deadline = time.monotonic() + start_timeout_s
    stack = Stack("mock", transport or ("mooncake" if mooncake_available() else "inline"))
    with _starting(stack):
        _start_eccache(stack, pool_size, deadline)
        mocks = []
        for role, count in (("encode", encoders), ("pd", pds)):
            for i in range(count):
                args = [sys.executable, "-m", "proxy.mock_vllm", "--role", role, "--port", "0", "--eccache",
                        stack.eccache, "--namespace", NAMESPACE, "--model", MODEL]
                mocks.append((role, stack.group.start(f"{role}-{i}", args, "listening on")))
        for role, child in mocks:  # started together, awaited together
            (stack.encoders if role == "encode" else stack.pds).append("http://" + child.wait_ready(deadline))
        _start_proxies(stack, deadline)
    return stack


def start_vllm_stack(*, pool_size: str = "512MiB", transport: str | None = None,
                     start_timeout_s: float = 300.0) -> Stack:
    """The same deployment with one real vLLM encoder (ec_producer) and one PD (ec_consumer) on the CPU.

    Uses the tiny random Qwen2-VL builder and the server launcher of ``tests/connector/vllm_support``.
    """
    from tests.connector.vllm_support.servers import VllmServer, ec_config
    from tests.connector.vllm_support.tiny_model import build_tiny_qwen2vl

    deadline = time.monotonic() + start_timeout_s
    stack = Stack("vllm", transport or ("mooncake" if mooncake_available() else "inline"))
    stack.scratch = tempfile.mkdtemp(prefix="eccache-demo-vllm-")
    with _starting(stack):
        _start_eccache(stack, pool_size, deadline)
        model = build_tiny_qwen2vl(os.path.join(stack.scratch, "model"))
        extra = {"server": stack.eccache, "transport": stack.transport, "timeout_ms": 2000}
        encoder = VllmServer("encoder", model, stack.scratch, ec_transfer_config=ec_config("ec_producer", extra),
                             extra_args=("--no-enable-prefix-caching",))
        stack.extra_stops.append(encoder)
        pd = VllmServer("pd", model, stack.scratch, ec_transfer_config=ec_config("ec_consumer", extra))
        stack.extra_stops.append(pd)
        encoder.wait_healthy(deadline)
        pd.wait_healthy(deadline)
        stack.encoders.append(encoder.url)
        stack.pds.append(pd.url)
        _start_proxies(stack, deadline)
    return stack
