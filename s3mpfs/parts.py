"""Parts of a streamed upload: how big part N is, the mount-wide budget of parts in flight
(PartBudget), and the ranges an object is copied in (copy_ranges).

Part sizes. S3 allows at most 10,000 parts per upload, each 5 MiB..5 GiB (all but the last).
Fixed 8 MiB parts stop a streamed file at 78.1 GiB (mountpoint-s3 users hit this:
awslabs/mountpoint-s3 #451, #1396). We do not know a streamed file's size in advance, so the
part size grows with the part number instead, like goofys' tiers (internal/file.go): the parts
are split into ten equal tiers and each tier doubles the size of the previous one.

With the default 8 MiB and 10,000 parts: 1,000 parts each of 8, 16, 32, ... 4,096 MiB, so
files up to 7.8 GiB are unchanged, a 100 GiB file ends on 64 MiB parts, a 1 TiB file on 1 GiB
parts, and the ceiling is 8,184,000 MiB = 7.8 TiB. With --max-parts (stores that allow fewer
parts) the tiers shrink with it: 1,000 parts reach 799 GiB. The memory a file being written
holds grows with its part size (see README: memory).
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable

import trio

from s3mpfs.config import MAX_PART_SIZE, MiB
from s3mpfs.errors import FsError

log = logging.getLogger(__name__)

TIERS = 10
MAX_OBJECT_SIZE = 5 * 1024**4  # S3's largest object: 5 TiB


def part_size(number: int, base: int, max_parts: int) -> int:
    """Size of part `number` (1-based) for a first part of `base` bytes."""
    tier_len = max(1, max_parts // TIERS)
    tier = min((number - 1) // tier_len, TIERS - 1)
    return min(base << tier, MAX_PART_SIZE)


@functools.lru_cache(maxsize=16)
def capacity(base: int, max_parts: int) -> int:
    """The largest object the schedule can stream (all parts full)."""
    return sum(part_size(n, base, max_parts) for n in range(1, max_parts + 1))


def max_file_size(base: int, max_parts: int) -> int:
    """The largest file a write or truncate may make: S3's object limit (5 TiB) or what the
    part tiers reach, whichever is smaller. Anything larger is EFBIG at once."""
    return min(MAX_OBJECT_SIZE, capacity(base, max_parts))


def check_file_size(key: str, size: int, max_size: int) -> None:
    """EFBIG before anything changes when a write or truncate would pass max_file_size."""
    if size > max_size:
        log.error("%s: file too large: a size of %d bytes is refused (EFBIG); the largest "
                  "file this mount can store is %d bytes (S3's 5 TiB object limit, or what the "
                  "part tiers reach with --max-parts)", key, size, max_size)
        raise FsError(errno.EFBIG, f"{size} bytes is above the largest file, {max_size}")


class PartBudget:
    """Global limit on parts queued or in flight, in units of the base part size, plus a free
    list of part buffers.

    A part weighs ceil(size / base) units, capped at the whole budget, so a grown part larger
    than the budget can still go, alone. Units are gathered by one acquirer at a time: two big
    parts can never each hold half and wait for each other.

    Reusing buffers matters: bytearray(8 MiB) zero-fills and faults in 2048 pages, measurable
    per part at 200 MB/s; a reused buffer is already resident. At most `keep_bytes` stay free.

    A freed buffer may carry a tag (an uploaded part's identity): until it is reused, its owner
    can reclaim it to rewrite that part (upload.py). Free buffers are reused oldest first, so
    the most recent parts stay longest, and a taker may spare tags it still wants (a writer
    spares its own newest parts); when more than keep_bytes are free the oldest go. Sparing
    never costs memory beyond `max_buffers` buffers in all: past that the oldest spared one
    is reused anyway.
    """

    def __init__(self, max_parts: int, keep_bytes: int = 64 * MiB,
                 max_buffers: int | None = None) -> None:
        self.max_parts = max_parts
        self._slots = trio.Semaphore(max_parts)
        self._gather = trio.Lock()
        self._free: dict[int, list[tuple[bytearray, object]]] = {}  # oldest first
        self._keep_bytes = keep_bytes
        self._max_buffers = max_buffers
        self.buffers = 0  # part buffers made and not dropped
        self.in_flight = 0

    def take_buffer(self, size: int, spare: Callable[[object], bool] | None = None
                    ) -> bytearray:
        free = self._free.get(size, [])
        for i, (buf, tag) in enumerate(free):
            if tag is None or spare is None or not spare(tag):
                del free[i]
                return buf
        if free and self._max_buffers is not None and self.buffers >= self._max_buffers:
            return free.pop(0)[0]  # sparing may not cost more memory than this
        self.buffers += 1
        return bytearray(size)

    def give_buffer(self, buf: bytearray, tag: object = None) -> None:
        self._free.setdefault(len(buf), []).append((buf, tag))
        while sum(size * len(bufs) for size, bufs in self._free.items()) > self._keep_bytes:
            del max(self._free.values(), key=len)[0]
            self.buffers -= 1

    def reclaim(self, tag: object) -> bytearray | None:
        """The free buffer given with `tag`, taken back, if it was not reused since."""
        for free in self._free.values():
            for i, (buf, held) in enumerate(free):
                if held is not None and held == tag:
                    del free[i]
                    return buf
        return None

    async def acquire(self, weight: int = 1) -> int:
        weight = max(1, min(weight, self.max_parts))
        async with self._gather:
            for _ in range(weight):
                await self._slots.acquire()
        self.in_flight += 1
        return weight

    def try_acquire(self) -> bool:
        """One unit now, or False (memory that may be had or done without: a held file's
        buffer, holds.py); give it back with give_back(). Not counted as a part in flight."""
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            return False
        return True

    def give_back(self) -> None:
        self._slots.release()

    def release(self, weight: int = 1) -> None:
        self.in_flight -= 1
        for _ in range(weight):
            self._slots.release()

    def try_hold(self, weight: int) -> bool:
        """Take `weight` units now or not at all (never waits): memory held until a commit,
        such as an edited block of a stored object (edits.py). Returned with unhold()."""
        if weight > self.max_parts or self._gather.locked() or self._slots.value < weight:
            return False
        for _ in range(weight):
            self._slots.acquire_nowait()
        return True

    def unhold(self, weight: int) -> None:
        for _ in range(weight):
            self._slots.release()


def copy_ranges(length: int) -> list[tuple[int, int]]:
    """Split [0, length) into ranges UploadPartCopy accepts: each <= 5 GiB and, as non-last
    parts, >= 5 MiB. Equal splits keep every range above 5 MiB whenever length is."""
    if length <= 0:
        return []
    count = -(-length // MAX_PART_SIZE)
    step = -(-length // count)
    return [(start, min(start + step, length)) for start in range(0, length, step)]
