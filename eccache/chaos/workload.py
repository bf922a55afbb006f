"""The soak workload (pure): which op next, which entry, and what its bytes must be.

An entry's content is a function of its identifier, so any reader anywhere can verify every byte it
gets without asking the writer: a wrong or misplaced byte is a corrupted read.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import xxhash

KIB, MB = 1024, 1_000_000
# (label, nbytes, weight): mostly small and Qwen2.5-VL-sized, sometimes Qwen3-VL 1024² and 1080p
SIZE_CLASSES: tuple[tuple[str, int, int], ...] = (
    ("64k", 64 * KIB, 40), ("1m", 1 << 20, 25), ("9m8", 1369 * 3584 * 2, 25), ("34m", 34 * MB, 7),
    ("67m", 67 * MB, 3))
OPS: tuple[tuple[str, int], ...] = (("put", 30), ("get", 40), ("lookup", 20), ("delete", 10))
KEYS_PER_CLASS = 16
NAMESPACE = "chaos"


def size_of(identifier: str) -> int:
    label = identifier.split("-", 1)[0]
    return next(n for name, n, _ in SIZE_CLASSES if name == label)


def content(identifier: str, nbytes: int | None = None) -> np.ndarray:
    """The bytes an entry must hold: position-dependent, seeded by the identifier."""
    nbytes = size_of(identifier) if nbytes is None else nbytes
    seed = np.uint64(xxhash.xxh64_intdigest(identifier.encode()))
    words = np.arange(-(-nbytes // 8), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + seed
    return words.view(np.uint8)[:nbytes]


def pick_op(rng: random.Random) -> str:
    return rng.choices([name for name, _ in OPS], weights=[w for _, w in OPS])[0]


def pick_identifier(rng: random.Random) -> str:
    label = rng.choices([c[0] for c in SIZE_CLASSES], weights=[c[2] for c in SIZE_CLASSES])[0]
    return f"{label}-{rng.randrange(KEYS_PER_CLASS)}"


@dataclass
class Tally:
    """What one worker saw; merged across workers for the report."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: Counter[str] = field(default_factory=Counter)  # "put:stored", "get:hit", "put:RESOURCE_EXHAUSTED"
    corrupted_reads: int = 0
    verified_bytes: int = 0

    def merge(self, other: Tally) -> None:
        for op, samples in other.latencies.items():
            self.latencies[op].extend(samples)
        self.outcomes.update(other.outcomes)
        self.corrupted_reads += other.corrupted_reads
        self.verified_bytes += other.verified_bytes

    @property
    def ops(self) -> int:
        return sum(len(s) for s in self.latencies.values())

    def errors(self) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k.split(":", 1)[1].isupper()}
