from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eccache.pool.allocator import BestFitAllocator, OutOfSpace

K = 4096


def test_best_fit_takes_the_smallest_hole_that_fits() -> None:
    a = BestFitAllocator(100 * K)
    blocks = [a.allocate(n * K) for n in (10, 5, 10, 3, 10)]
    a.free(blocks[0].offset)  # hole of 10
    a.free(blocks[3].offset)  # hole of 3
    assert a.allocate(3 * K).offset == blocks[3].offset
    assert a.allocate(8 * K).offset == blocks[0].offset  # not the big tail


def test_freeing_neighbours_coalesces_into_one_block() -> None:
    a = BestFitAllocator(64 * K)
    blocks = [a.allocate(16 * K) for _ in range(4)]
    with pytest.raises(OutOfSpace):
        a.allocate(K)
    for b in (blocks[1], blocks[3], blocks[0], blocks[2]):
        a.free(b.offset)
    assert a.free_blocks == 1 and a.largest_free == 64 * K and a.used_bytes == 0


def test_sizes_round_up_to_alignment_and_double_free_is_refused() -> None:
    a = BestFitAllocator(8 * K)
    b = a.allocate(1)
    assert b.size == K and a.used_bytes == K
    a.free(b.offset)
    with pytest.raises(KeyError):
        a.free(b.offset)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 40 * K)), min_size=1, max_size=200))
def test_accounting_holds_under_random_churn(ops: list[tuple[bool, int]]) -> None:
    a = BestFitAllocator(1024 * K)
    live: list[int] = []
    for alloc, size in ops:
        if alloc or not live:
            try:
                live.append(a.allocate(size).offset)
            except OutOfSpace:
                assert a.largest_free < a.rounded(size)
        else:
            a.free(live.pop(random.randrange(len(live))))
        assert a.used_bytes + a.free_bytes == a.capacity
        spans = sorted((off, size) for off, size in a.allocated().items())
        assert all(o1 + s1 <= o2 for (o1, s1), (o2, _) in zip(spans, spans[1:]))  # no overlap
    for off in live:
        a.free(off)
    assert a.free_blocks == 1 and a.largest_free == a.capacity


def test_steady_state_churn_of_few_sizes_rarely_fails_for_fragmentation() -> None:
    """A model's few embedding sizes churned at 75% fill: a request that fits in the free bytes
    almost always finds one block (fragmentation failures < 2%)."""
    rng = random.Random(7)
    sizes = [2400 * K, 8300 * K, 16400 * K]  # ~9.8 MB, ~34 MB, ~67 MB classes
    a = BestFitAllocator(1 << 30)
    live: list[int] = []
    attempts = fragmented = 0
    for _ in range(20000):
        if a.used_bytes > 0.75 * a.capacity and live:
            a.free(live.pop(rng.randrange(len(live))))
            continue
        size = rng.choice(sizes)
        attempts += 1
        try:
            live.append(a.allocate(size).offset)
        except OutOfSpace:
            fragmented += a.free_bytes >= a.rounded(size)
            a.free(live.pop(rng.randrange(len(live))))
    assert attempts > 5000
    assert fragmented / attempts < 0.02
