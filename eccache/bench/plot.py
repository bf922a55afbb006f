"""Bar charts of benchmark results for the README (matplotlib, headless)."""

from __future__ import annotations

from typing import Any

SOCKET_PATH = "raw loopback socket"


def _human(nbytes: int) -> str:
    """64 KiB, 9.8 MB, 67 MB: the unit a reader of the README expects."""
    if nbytes < 1 << 20:
        return f"{nbytes / 1024:.0f} KiB"
    return f"{nbytes / 1e6:.1f} MB"


def transfer_series(result: dict[str, Any]) -> tuple[list[int], dict[str, dict[int, tuple[float, float]]]]:
    """(sizes, {path: {size: (put MB/s, get MB/s)}}) from `eccache bench transfer --json` output."""
    from eccache.bench.transfer import SOCKET, anchor_pairs

    sizes: list[int] = []
    series: dict[str, dict[int, tuple[float, float]]] = {}
    for row in result.get("sizes", [result]):
        n = int(row["size_bytes"])
        sizes.append(n)
        sock = float(row["baselines"][SOCKET])
        series.setdefault(SOCKET_PATH, {})[n] = (sock, sock)
        for name, r in row["transports"].items():
            series.setdefault(f"eccache {name}", {})[n] = (r["put_MBps"], r["get_MBps"])
        for path, r in anchor_pairs(row["baselines"]):
            series.setdefault(path, {})[n] = (r["put_MBps"], r["get_MBps"])
    return sizes, series


def plot_transfer(result: dict[str, Any], path: str) -> str:
    """Write a PNG: a put panel above a get panel, grouped bars (one per path) per entry size, log MB/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, series = transfer_series(result)
    width = 0.8 / max(1, len(series))
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 2.2 * len(sizes) + 3), 8), sharex=True)
    for which, ax in enumerate(axes):
        for i, (name, by_size) in enumerate(series.items()):
            xs = [k + i * width - 0.4 + width / 2 for k, n in enumerate(sizes) if n in by_size]
            ys = [by_size[n][which] for n in sizes if n in by_size]
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks(range(len(sizes)), [_human(n) for n in sizes])
        ax.set_yscale("log")
        ax.set_title(("put" if which == 0 else "get") + " MB/s (higher is better)")
        ax.set_ylabel("MB/s")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[1].set_xlabel("entry size")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.suptitle("eccache bench transfer (one host, loopback)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pairs(title: str, unit: str, groups: dict[str, tuple[float, float]], labels: tuple[str, str],
               path: str) -> str:
    """Write a PNG of grouped bars: per group, eccache's value beside its same-run baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(names)), 4))
    ax.bar([x - 0.2 for x in xs], [groups[n][0] for n in names], width=0.4, label=labels[0])
    ax.bar([x + 0.2 for x in xs], [groups[n][1] for n in names], width=0.4, label=labels[1])
    ax.set_xticks(list(xs), names)
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
