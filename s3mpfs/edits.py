"""In-place edits of the base object: the bytes [0, length) an upload stands on (an existing
object opened without O_TRUNC, or this upload's own last commit).

The base is cut into blocks of the part size P: [0, P), [P, 2P), ..., and the last block runs
to the end, so every block is P..2P-1 bytes (never under S3's 5 MiB part minimum). A write
into the base fetches its block once (one ranged GET, If-Match the base's ETag, so a replaced
object is never spliced), patches it in memory and keeps it until the commit. At the commit
the base becomes the new upload's first parts, in order: each run of untouched blocks is copied
server side (UploadPartCopy pinned by ETag, split in ranges of at most 5 GiB), each touched
block is uploaded from memory.

Part numbers: the base is planned only at the commit, but parts written after it stream while
the file is written, so the base reserves the numbers 1..reserved_parts() and later parts start
after them. S3 completes an upload from ascending part numbers with gaps, so unused reserved
numbers cost nothing. With t edited blocks the base needs at most t blocks + t + 1 copy runs
(each split at 5 GiB), so the reservation is bounded by the memory limit, not by the size.

Memory: an edited block weighs ceil(size / P) units of the PartBudget (the mount's
--memory-limit for parts, shared with parts in flight). When the budget has no room now, the
edit fails with ENOSPC (never waits: the memory is only given back at the commit, which the
same writer would have to reach first), logged once; the caller aborts the upload, so nothing
is replaced.
"""

from __future__ import annotations

import errno
import logging

from s3mpfs.config import MAX_PART_SIZE
from s3mpfs.errors import FsError
from s3mpfs.parts import PartBudget, copy_ranges
from s3mpfs.store.base import ObjectStore

log = logging.getLogger(__name__)


def reserved_parts(length: int, block: int, max_blocks: int) -> int:
    """Part numbers a base of `length` bytes may need with at most `max_blocks` edited."""
    if length <= 0:
        return 0
    blocks = max(1, length // block)
    runs = 2 * max_blocks + 1 + -(-length // MAX_PART_SIZE)
    return min(blocks, runs)


# One part of the planned base: (start, end, bytes to upload, or None: copy server side).
Piece = tuple[int, int, bytearray | None]


class BaseEdits:
    """The edited blocks of one upload's base. The base's length and ETag are the caller's
    (they change only at a commit, which releases every block first)."""

    def __init__(self, store: ObjectStore, block: int, budget: PartBudget) -> None:
        self.store = store
        self.block = block
        self.budget = budget
        self._blocks: dict[int, bytearray] = {}  # block index -> its (patched) bytes

    def _span(self, index: int, length: int) -> tuple[int, int]:
        start = index * self.block
        last = max(1, length // self.block) - 1
        return start, (length if index == last else start + self.block)

    def _weight(self, buf: bytearray) -> int:
        return -(-len(buf) // self.block)

    async def patch(self, key: str, etag: str | None, length: int, offset: int,
                    data: memoryview) -> None:
        """Write `data` at `offset`, inside the base [0, length) of object `key` at `etag`.
        Raises FsError (ENOSPC) when the memory limit has no room for another block, or the
        fetch's StoreError (a replaced object: PreconditionFailed)."""
        end = offset + len(data)
        assert offset >= 0 and end <= length
        index = min(offset // self.block, max(1, length // self.block) - 1)
        while offset < end:
            start, stop = self._span(index, length)
            buf = self._blocks.get(index)
            if buf is None:
                buf = self._blocks[index] = await self._load(key, etag, start, stop)
            n = min(end, stop) - offset
            buf[offset - start:offset - start + n] = data[:n]
            data, offset, index = data[n:], offset + n, index + 1

    async def _load(self, key: str, etag: str | None, start: int, stop: int) -> bytearray:
        weight = -(-(stop - start) // self.block)
        if not self.budget.try_hold(weight):
            held = sum(len(buf) for buf in self._blocks.values())
            log.error("%s: in-place edit at offset %d needs another %d MiB block in memory "
                      "until the commit, and the memory limit for parts is in use (this file "
                      "holds %d MiB of edited blocks): ENOSPC, the upload is aborted and the "
                      "stored object is kept; raise --memory-limit or edit less between closes",
                      key, start, (stop - start) >> 20, held >> 20)
            raise FsError(errno.ENOSPC, "in-place edit exceeds the memory limit")
        try:
            return bytearray(await self.store.get_range(key, start, stop, if_match=etag))
        except BaseException:
            self.budget.unhold(weight)
            raise

    def plan(self, length: int) -> list[Piece]:
        """The base [0, length) as parts, in order: copy runs of untouched blocks (at most
        5 GiB each), edited blocks."""
        pieces: list[Piece] = []
        run_start = 0
        for index in sorted(self._blocks):
            start, stop = self._span(index, length)
            pieces += [(run_start + a, run_start + b, None)
                       for a, b in copy_ranges(start - run_start)]
            pieces.append((start, stop, self._blocks[index]))
            run_start = stop
        return pieces + [(run_start + a, run_start + b, None)
                         for a, b in copy_ranges(length - run_start)]

    def regions(self) -> list[tuple[int, memoryview]]:
        """Edited blocks held in memory, as (file offset, bytes): what a read of the base
        must take from here rather than from the stored object."""
        return [(i * self.block, memoryview(buf)) for i, buf in sorted(self._blocks.items())]

    @property
    def held(self) -> int:
        return sum(len(buf) for buf in self._blocks.values())

    def release(self) -> None:
        for buf in self._blocks.values():
            self.budget.unhold(self._weight(buf))
        self._blocks.clear()
