"""Best-fit allocator with immediate coalescing over one contiguous region (pure, no I/O).

Why best fit: embeddings come in many sizes (64 KiB .. 70 MB) but a deployment reuses a few of them
(one model, a few image resolutions). Best fit, address-ordered on ties, with neighbours merged the
moment a block is freed, is the policy with the least fragmentation measured on real workloads
(Johnstone & Wilson, "The memory fragmentation problem: solved?", 1998): a freed hole is refilled by
an entry of the same size, and small entries do not split big holes while an exact-ish hole exists.
Sizes are rounded up to `align` (4 KiB), so equal shapes map to equal blocks and holes match exactly.
All operations are O(log n) in the number of free blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from sortedcontainers import SortedList


class OutOfSpace(Exception):
    """No free block is large enough (the pool may evict and retry)."""


@dataclass(frozen=True, slots=True)
class Block:
    offset: int
    size: int


class BestFitAllocator:
    """Allocates aligned blocks of a region [0, capacity)."""

    def __init__(self, capacity: int, align: int = 4096) -> None:
        if capacity <= 0 or align <= 0 or align & (align - 1):
            raise ValueError("capacity must be positive and align a power of two")
        self.capacity = capacity - capacity % align
        self.align = align
        self._by_size: SortedList[tuple[int, int]] = SortedList()  # (size, offset)
        self._free_at: dict[int, int] = {}  # offset -> size, for free blocks
        self._free_end: dict[int, int] = {}  # end offset -> start offset, for free blocks
        self._used: dict[int, int] = {}  # offset -> size, for allocated blocks
        self._used_bytes = 0
        if self.capacity:
            self._add_free(0, self.capacity)

    # ---- queries ------------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        return self._used_bytes

    @property
    def free_bytes(self) -> int:
        return self.capacity - self.used_bytes

    @property
    def largest_free(self) -> int:
        return self._by_size[-1][0] if self._by_size else 0

    @property
    def free_blocks(self) -> int:
        return len(self._by_size)

    def rounded(self, nbytes: int) -> int:
        return max(self.align, -(-nbytes // self.align) * self.align)

    def allocated(self) -> dict[int, int]:
        return dict(self._used)

    # ---- changes ------------------------------------------------------------------------------
    def allocate(self, nbytes: int) -> Block:
        """Returns the smallest free block that fits (lowest address on ties), split to size."""
        size = self.rounded(nbytes)
        i = self._by_size.bisect_left((size, -1))
        if i == len(self._by_size):
            raise OutOfSpace(f"no free block of {size} bytes (largest {self.largest_free})")
        block_size, offset = self._by_size[i]
        self._remove_free(offset, block_size)
        if block_size > size:
            self._add_free(offset + size, block_size - size)
        self._used[offset] = size
        self._used_bytes += size
        return Block(offset, size)

    def free(self, offset: int) -> int:
        """Frees the block at offset, merging it with free neighbours. Returns its size."""
        size = self._used.pop(offset, None)
        if size is None:
            raise KeyError(f"offset {offset} is not allocated")
        self._used_bytes -= size
        start, end = offset, offset + size
        before = self._free_end.get(start)
        if before is not None:
            self._remove_free(before, start - before)
            start = before
        after = self._free_at.get(end)
        if after is not None:
            self._remove_free(end, after)
            end += after
        self._add_free(start, end - start)
        return size

    def _add_free(self, offset: int, size: int) -> None:
        self._by_size.add((size, offset))
        self._free_at[offset] = size
        self._free_end[offset + size] = offset

    def _remove_free(self, offset: int, size: int) -> None:
        self._by_size.remove((size, offset))
        del self._free_at[offset]
        del self._free_end[offset + size]
