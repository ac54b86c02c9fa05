"""An upload's state, in small holders, and what others see of it (upload.py streams).

State is the state machine of upload.py's docstring. The holders: the buffer being filled
(Filling), part 1 kept until completion (Part1), the multipart upload S3 knows (Multipart).
UploadViews is what reads while writing (readback.py) and `s3mpfs status` (xattrs.py) see of an
upload: the bytes it holds, how much S3 holds, and its unlinked-while-open mark.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from s3mpfs import checksums
from s3mpfs.checksums import Checksum
from s3mpfs.edits import BaseEdits
from s3mpfs.errors import StoreError, errno_for
from s3mpfs.parts import PartBudget


class State(enum.Enum):
    NEW = "new"
    DIRTY = "dirty"
    CLEAN = "clean"
    FAILED = "failed"
    DISCARDED = "discarded"  # unlinked while open: writes are accepted and dropped
    CLOSED = "closed"


def body_of(buf: bytearray | None, length: int) -> bytes | bytearray:
    """What boto3 accepts as a body without copying: the whole bytearray. boto3 refuses a
    memoryview, so a short (last) part is copied once; full parts never are."""
    if buf is None:
        return b""
    return buf if length == len(buf) else bytes(memoryview(buf)[:length])


@dataclass(frozen=True)
class Existing:
    """The object under the key when a file is opened without O_TRUNC."""

    etag: str
    size: int


@dataclass(eq=False)
class Filling:
    """The buffer being filled: bytes [start, start + length) of the file. Everything before
    `start` was handed to part tasks or is the base copied from the object. `buf` is None
    until the next write needs one (taken from the PartBudget's pool)."""

    start: int = 0
    buf: bytearray | None = None
    length: int = 0

    def body(self) -> bytes | bytearray:
        return body_of(self.buf, self.length)

    def hand_over(self) -> tuple[bytearray, int]:
        """The full buffer leaves for a part task; the next one starts where it ended."""
        buf, length = self.buf, self.length
        assert buf is not None
        self.buf, self.length = None, 0
        self.start += length
        return buf, length

    def release(self, budget: PartBudget) -> None:
        if self.buf is not None:
            budget.give_buffer(self.buf)
            self.buf, self.length = None, 0


@dataclass(eq=False)
class Part1:
    """Part 1 of a fresh upload, kept in memory until the upload completes: a rewrite (a
    header patched at offset 0 after the body) waits until it has been sent, lands here and
    is sent again at commit."""

    buf: bytearray
    length: int
    # Holds one of the file's `concurrency` slots until released, so a file never holds more
    # than `concurrency` part buffers besides the filling one (not with concurrency 1: its
    # only slot must come free).
    holds_slot: bool
    sent: trio.Event = field(default_factory=trio.Event)  # its first upload settled
    dirty: bool = False  # rewritten since: sent again at commit


@dataclass(eq=False)
class Multipart:
    """A multipart upload S3 knows about: from CreateMultipartUpload until it is completed
    or aborted (Upload._mp is None otherwise)."""

    upload_id: str
    parts: dict[int, str] = field(default_factory=dict)  # number -> ETag, acknowledged
    sums: dict[int, Checksum] = field(default_factory=dict)  # of the parts whose bytes we sent
    next_part: int = 1
    acked: int = 0  # bytes of the parts S3 acknowledged from part tasks (progress)

    spans: dict[int, tuple[int, int]] = field(default_factory=dict)  # number -> (start, length)

    def take_number(self) -> int:
        number = self.next_part
        self.next_part += 1
        return number


def failed_errno(error: BaseException | None) -> int:
    """The errno a call on an upload that failed with `error` gets: the store's (one table:
    errors.errno_for), EIO after anything else (EINVAL/EFBIG/an unmount, which were told
    to the call that caused them)."""
    return errno_for(error) if isinstance(error, StoreError) else errno.EIO


def held_regions(part1: Part1 | None, in_flight: Iterable[tuple[int, bytearray, int]],
          fill: Filling) -> list[tuple[int, memoryview]]:
    regions = [(start, memoryview(buf)[:length]) for start, buf, length in in_flight]
    if part1 is not None:
        regions.append((0, memoryview(part1.buf)[:part1.length]))
    if fill.buf is not None and fill.length:
        regions.append((fill.start, memoryview(fill.buf)[:fill.length]))
    return sorted(regions, key=lambda r: r[0])


async def part_checksum(algorithm: str, body: bytes | bytearray) -> Checksum | None:
    if algorithm == "off":
        return None
    if algorithm == "md5":  # ~400 MB/s: 20 ms per 8 MiB, off the event loop
        return await trio.to_thread.run_sync(checksums.compute, "md5", body)
    return checksums.compute(algorithm, body)  # CRCs: ~0.3 ms per 8 MiB


class UploadViews:
    """Upload's read-only views (the attributes are Upload's)."""

    state: State
    size: int
    committed_size: int
    etag: str | None
    detached: bool
    _base_len: int
    _fill: Filling
    _part1: Part1 | None
    _mp: Multipart | None
    _in_flight: dict[int, tuple[int, bytearray, int]]
    _edits: BaseEdits

    def held(self) -> list[tuple[int, memoryview]]:
        """The file's bytes this upload holds in memory, as (offset, bytes) regions in order:
        part 1 of a fresh upload (kept until completion), parts still in flight, the filling
        buffer, and the edited blocks of a stored base (edits.py). Bytes of parts S3 already
        acknowledged are not held: an incomplete multipart upload cannot be read back (the
        caller says so)."""
        return sorted(held_regions(self._part1, self._in_flight.values(), self._fill)
                      + self._edits.regions(), key=lambda r: r[0])

    @property
    def stored_prefix(self) -> int:
        """Bytes [0, n) of the file that are the object `etag` S3 holds: all of a committed
        (or unchanged existing) file, else the part a continued upload copies server side."""
        if self.detached or self.state in (State.FAILED, State.DISCARDED, State.CLOSED):
            return 0
        return self.size if self.state is State.CLEAN else self._base_len

    def detach(self) -> None:
        """The file was unlinked while open: keep serving its descriptors from memory; its
        commits store nothing any more (fs.py skips them) and close aborts what was sent."""
        self.detached = True

    @property
    def buffered_bytes(self) -> int:
        return self._fill.length

    @property
    def bytes_in_s3(self) -> int:
        """Bytes of the file S3 holds: all of it once committed; else the open multipart
        upload's acknowledged parts (its server-side copied base included)."""
        if self.state is State.CLEAN:
            return self.size
        if self._mp is None:
            return self.committed_size if self.state is not State.FAILED else 0
        return self._base_len + self._mp.acked
