"""The write pipeline: sequential bytes -> parts in flight -> one S3 object on commit.

    write() --copy--> filling buffer (part_size bytes, reused from a pool)
                        | full
                        v
            part task in the mount's nursery  --UploadPart-->  S3
            (at most `concurrency` per file, and a global budget of parts across files)
    commit() = last (short) part + CompleteMultipartUpload, or one PutObject if no part was sent.

Backpressure: a write() that fills a buffer waits for a free per-file slot and a free global
slot before handing the buffer over, so memory per file is one filling buffer plus at most
`concurrency` parts, and across files at most `memory_limit` bytes of parts are in flight.
The filling buffer is not taken from the global budget: a writer can always make progress, so
an application writing many files round-robin cannot deadlock on it.

Commit is idempotent per state and may happen more than once on one handle: every close() of a
descriptor that wrote bytes commits (see fs.py: flush). A later write continues the file: the
committed object becomes the *base*; its full parts are copied server side (UploadPartCopy) as
the first parts of a new upload and the tail still held in the buffer goes on filling. So the
object in S3 always equals what the writer had written at its last successful close().

An upload can also start from an existing object (append, in-place edits, truncate): that
object is the base, kept lazily until the first change; then, if it is at least 5 MiB, its
bytes are copied server side as the first parts (no download), else they are fetched into the
first buffer. The old object is replaced only when the new upload completes.

Where writes may land (the file is [0, size)):
    [0, base_len)          copied from the committed/existing object: a write here -> EINVAL
    part 1 (fresh upload)  kept in memory until completion and re-uploaded if rewritten, so
                           formats that patch a header at offset 0 after the body work
    other uploaded parts   EINVAL, logged with file, offset and reason; the upload is aborted
                           and every later write/close fails (no half-written object appears)
    [buf_start, size)      the filling buffer: rewritten in place
    beyond size            the gap is filled with zeros (sparse files are stored dense)

States (State): NEW (nothing written or committed), DIRTY (bytes not yet committed), CLEAN
(committed, or an existing object not yet changed), FAILED (a part or the commit failed: the
upload was aborted, every later write, flush and commit raises EIO), DISCARDED (unlinked while
open), CLOSED (buffers returned).
"""

from __future__ import annotations

import enum
import errno
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio

from s3mpfs import checksums
from s3mpfs.checksums import Checksum
from s3mpfs.config import MAX_PART_SIZE, MIN_PART_SIZE, MiB, UploadConfig
from s3mpfs.errors import FsError, ObjectExists, StoreError
from s3mpfs.parts import part_size
from s3mpfs.store.base import ObjectStore

log = logging.getLogger(__name__)


class State(enum.Enum):
    NEW = "new"
    DIRTY = "dirty"
    CLEAN = "clean"
    FAILED = "failed"
    DISCARDED = "discarded"  # unlinked while open: writes are accepted and dropped
    CLOSED = "closed"


class PartBudget:
    """Global limit on parts queued or in flight, in units of the base part size, plus a free
    list of part buffers.

    A part weighs ceil(size / base) units, capped at the whole budget, so a grown part larger
    than the budget can still go, alone. Units are gathered by one acquirer at a time: two big
    parts can never each hold half and wait for each other.

    Reusing buffers matters: bytearray(8 MiB) zero-fills and faults in 2048 pages, measurable
    per part at 200 MB/s; a reused buffer is already resident. At most `keep_bytes` stay free.
    """

    def __init__(self, max_parts: int, keep_bytes: int = 64 * MiB) -> None:
        self.max_parts = max_parts
        self._slots = trio.Semaphore(max_parts)
        self._gather = trio.Lock()
        self._free: dict[int, list[bytearray]] = {}
        self._keep_bytes = keep_bytes
        self.in_flight = 0

    def take_buffer(self, size: int) -> bytearray:
        free = self._free.get(size)
        return free.pop() if free else bytearray(size)

    def give_buffer(self, buf: bytearray) -> None:
        kept = sum(size * len(bufs) for size, bufs in self._free.items())
        if kept + len(buf) <= self._keep_bytes:
            self._free.setdefault(len(buf), []).append(buf)

    async def acquire(self, weight: int = 1) -> int:
        weight = max(1, min(weight, self.max_parts))
        async with self._gather:
            for _ in range(weight):
                await self._slots.acquire()
        self.in_flight += 1
        return weight

    def release(self, weight: int = 1) -> None:
        self.in_flight -= 1
        for _ in range(weight):
            self._slots.release()


def _body(buf: bytearray | None, length: int) -> bytes | bytearray:
    """What boto3 accepts as a body without copying: the whole bytearray. boto3 refuses a
    memoryview, so a short (last) part is copied once; full parts never are."""
    if buf is None:
        return b""
    return buf if length == len(buf) else bytes(memoryview(buf)[:length])


def copy_ranges(length: int) -> list[tuple[int, int]]:
    """Split [0, length) into ranges UploadPartCopy accepts: each <= 5 GiB and, as non-last
    parts, >= 5 MiB. Equal splits keep every range above 5 MiB whenever length is."""
    if length <= 0:
        return []
    count = -(-length // MAX_PART_SIZE)
    step = -(-length // count)
    return [(start, min(start + step, length)) for start in range(0, length, step)]


@dataclass(frozen=True)
class Existing:
    """The object under the key when a file is opened without O_TRUNC."""

    etag: str
    size: int


# Moves a committed object: (src key, dst key, src etag, size) -> the new object's ETag.
Mover = Callable[[str, str, str, int], Awaitable[str]]

_ZEROS = bytes(1 * MiB)


class Upload:
    """One writer's stream of bytes to one key."""

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        *,
        cfg: UploadConfig,
        budget: PartBudget,
        nursery: trio.Nursery,
        metadata: Callable[[], Mapping[str, str]],
        max_parts: int | None = None,
        existing: Existing | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.cfg = cfg
        self.budget = budget
        self.nursery = nursery
        self.metadata = metadata  # read when the object's metadata is fixed (Create/Put)
        self.max_parts = max_parts or cfg.max_parts
        self.state = State.NEW
        self.size = 0
        self.error: BaseException | None = None
        self.etag: str | None = None  # of the object under key that this upload stands on
        self.committed_size = 0
        self.metadata_sent: Mapping[str, str] | None = None
        self.committed_here = False  # the object under key is our own commit (--no-clobber)
        self._lock = trio.Lock()
        self._slots = trio.Semaphore(cfg.concurrency)
        self._buf: bytearray | None = None
        self._buf_len = 0
        self._buf_start = 0  # file offset of the buffer's first byte
        self._base_len = 0  # bytes [0, base_len) are copied from the object `etag`
        self._lazy_base = False  # an existing object not yet fetched or copied
        self._part1: bytearray | None = None
        self._part1_sent: trio.Event | None = None  # set once part 1's upload settled
        self._part1_slot = False  # the kept part 1 holds one of the file's slots
        self._part1_len = 0
        self._part1_dirty = False
        self._upload_id: str | None = None
        self._parts: dict[int, str] = {}
        self._sums: dict[int, Checksum] = {}  # checksums of the parts whose bytes we sent
        self._next_part = 1
        self.parts_sent = 0  # parts S3 acknowledged, and their bytes (progress reporting)
        self.bytes_sent = 0
        self.parts_in_flight = 0
        self._acked = 0  # bytes of this multipart upload's parts S3 acknowledged
        self._started = time.monotonic()
        if existing is not None:
            self.state = State.CLEAN
            self.etag, self.size, self.committed_size = existing.etag, existing.size, existing.size
            self._lazy_base = True

    # -- writing -------------------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        async with self._lock:
            await self._check_writable()
            if self.state is State.DISCARDED:
                self.size = max(self.size, offset + len(data))
                return len(data)
            if self._lazy_base:
                await self._materialize(self.size)
            view = memoryview(data)
            if offset > self.size:
                await self._append_zeros(offset - self.size)
            if offset < self.size:
                inside = min(len(view), self.size - offset)
                await self._overwrite(offset, view[:inside])
                view = view[inside:]
            if view:
                await self._append(view)
            self.state = State.DIRTY
            return len(data)

    async def _check_writable(self) -> None:
        if self.state is State.FAILED:
            await self._abort_upload()  # a part task failed since: do not leave it billed
            raise FsError(errno.EIO, f"upload of {self.key} failed earlier: {self.error}")
        if self.state is State.CLOSED:
            raise FsError(errno.EBADF, "upload closed")

    async def _materialize(self, keep: int) -> None:
        """Turn the lazy base into real state, keeping its first `keep` bytes."""
        self._lazy_base = False
        if keep >= MIN_PART_SIZE:
            self._base_len = self._buf_start = keep  # copied when the upload opens
        elif keep:
            try:
                data = await self.store.get_range(self.key, 0, keep, if_match=self.etag)
            except StoreError as exc:
                await self._fail(exc)
                raise FsError(errno.EIO, f"cannot read {self.key} to extend it: {exc}") from exc
            self._buf = self.budget.take_buffer(self._part_size(1))
            self._buf[:keep] = data
            self._buf_len = keep
        self.size = keep

    async def _append_zeros(self, count: int) -> None:
        while count:
            n = min(count, len(_ZEROS))
            await self._append(memoryview(_ZEROS)[:n])
            count -= n

    async def _overwrite(self, offset: int, view: memoryview) -> None:
        """Rewrite bytes [offset, offset + len(view)) that lie within the file."""
        end = offset + len(view)
        if end > self._buf_start and self._buf is not None:
            start = max(offset, self._buf_start)
            self._buf[start - self._buf_start:end - self._buf_start] = view[start - offset:]
            view, end = view[:start - offset], start
        if not view:
            return
        if self._part1 is not None and end <= self._part1_len:
            if self._part1_sent is not None:
                await self._part1_sent.wait()  # never change bytes while they are sent
            self._part1[offset:end] = view
            self._part1_dirty = True
            return
        why = ("it lies in the existing object this upload copies server side"
               if offset < self._base_len else "that part was already uploaded")
        log.error("%s: write of %d bytes at offset %d rejected: %s; only the part being "
                  "filled and the first part can be rewritten. The upload is aborted.",
                  self.key, len(view), offset, why)
        await self._fail(FsError(errno.EINVAL, f"write at {offset} into an uploaded part"))
        raise FsError(errno.EINVAL, "write into an uploaded part")

    async def _append(self, view: memoryview) -> None:
        pos = 0
        while pos < len(view):
            if self._buf is None:
                if self._next_part > self.max_parts and self._upload_id is not None:
                    log.error("%s: file too large: all %d parts used (%d bytes); the "
                              "upload is aborted", self.key, self.max_parts, self.size)
                    await self._fail(FsError(errno.EFBIG, "more than the maximum parts"))
                    raise FsError(errno.EFBIG)
                self._buf = self.budget.take_buffer(self._part_size(self._next_part))
                self._buf_len = 0
            take = min(len(self._buf) - self._buf_len, len(view) - pos)
            self._buf[self._buf_len:self._buf_len + take] = view[pos:pos + take]
            self._buf_len += take
            pos += take
            self.size += take
            if self._buf_len == len(self._buf):
                await self._submit_buffer()

    async def _submit_buffer(self) -> None:
        """Hand the full buffer to a part task; waits while too many parts are in flight."""
        try:
            if self._upload_id is None:
                await self._open_upload()
            await self._slots.acquire()
        except StoreError as exc:
            await self._fail(exc)
            raise FsError(errno.EIO, str(exc)) from exc
        assert self._buf is not None
        weight = await self.budget.acquire(-(-len(self._buf) // self.cfg.part_size))
        number = self._next_part
        self._next_part += 1
        buf, length = self._buf, self._buf_len
        assert buf is not None
        self._buf, self._buf_len = None, 0
        self._buf_start += length
        keep = number == 1
        if keep:
            self._part1, self._part1_len = buf, length
            self._part1_sent = trio.Event()
            # The kept part 1 goes on occupying one of the file's `concurrency` slots until
            # completion, so a file never holds more than `concurrency` part buffers besides
            # the filling one. (Not with concurrency 1: its only slot must come free.)
            self._part1_slot = self.cfg.concurrency > 1
        self.parts_in_flight += 1
        self.nursery.start_soon(self._send_part, number, buf, length, keep, weight)

    async def _send_part(self, number: int, buf: bytearray, length: int, keep: bool,
                         weight: int) -> None:
        upload_id = self._upload_id
        try:
            assert upload_id is not None
            # A rewrite of part 1 waits until it has been sent (see _overwrite), so the bytes S3
            # gets are the bytes the checksum covers; the rewrite is re-sent at commit.
            etag = await self._upload_part(upload_id, number, _body(buf, length))
            self._parts[number] = etag
            self.parts_sent += 1
            self.bytes_sent += length
            self._acked += length
        except StoreError as exc:
            if self.error is None:
                self.error = exc
                log.error("%s: part %d failed: %s", self.key, number, exc)
            self.state = State.FAILED
        finally:
            self.parts_in_flight -= 1
            self.budget.release(weight)
            if keep:
                assert self._part1_sent is not None
                self._part1_sent.set()
                if not self._part1_slot:
                    self._slots.release()
            else:
                self.budget.give_buffer(buf)
                self._slots.release()

    async def _checksum(self, body: bytes | bytearray) -> Checksum | None:
        if self.cfg.checksum == "off":
            return None
        if self.cfg.checksum == "md5":  # ~400 MB/s: 20 ms per 8 MiB, off the event loop
            return await trio.to_thread.run_sync(checksums.compute, "md5", body)
        return checksums.compute(self.cfg.checksum, body)  # CRCs: ~0.3 ms per 8 MiB

    async def _upload_part(self, upload_id: str, number: int, body: bytes | bytearray) -> str:
        checksum = await self._checksum(body)
        etag = await self.store.upload_part(self.key, upload_id, number, body, checksum)
        if checksum is not None:
            self._sums[number] = checksum
        return etag

    async def _open_upload(self) -> None:
        meta = dict(self.metadata())
        # mark: the store marks the upload as s3mpfs's until it ends (store/markers.py)
        self._upload_id = await self.store.create_upload(
            self.key, metadata=meta,
            checksum_algorithm=checksums.upload_algorithm(self.cfg.checksum), mark=True)
        self.metadata_sent = meta
        self._parts = {}
        self._sums = {}
        self._acked = 0
        self._next_part = 1
        # Continue after an earlier commit: its full parts become our first parts, copied
        # server side and pinned to the committed ETag so a replaced object is never spliced.
        for start, end in copy_ranges(self._base_len):
            number = self._next_part
            self._next_part += 1
            self._parts[number] = await self.store.upload_part_copy(
                self.key, self._upload_id, number, self.key, start, end, src_etag=self.etag)
        log.debug("%s: multipart upload %s opened", self.key, self._upload_id)

    def _part_size(self, number: int) -> int:
        return part_size(number, self.cfg.part_size, self.max_parts)

    async def _drain(self) -> None:
        """Wait until no part of this upload is in flight."""
        if self._part1_sent is not None:
            await self._part1_sent.wait()
        free = self.cfg.concurrency - int(self._part1_slot)
        for _ in range(free):
            await self._slots.acquire()
        for _ in range(free):
            self._slots.release()

    async def truncate(self, size: int) -> None:
        """ftruncate() of the open file: grow with zeros, shrink within the filling buffer,
        or start over at 0. Shrinking into uploaded parts raises ENOTSUP (nothing changes)."""
        async with self._lock:
            await self._check_writable()
            if self.state is State.DISCARDED or size == self.size:
                self.size = size if self.state is State.DISCARDED else self.size
                return
            if self._lazy_base:
                await self._materialize(min(size, self.size))
            if size > self.size:
                await self._append_zeros(size - self.size)
            elif size >= self._buf_start and (self._buf is not None or size == self._buf_start):
                self._buf_len = size - self._buf_start
                self.size = size
            elif size == 0:
                await self._start_over()
            else:
                log.error("%s: truncate to %d bytes would cut into parts already uploaded",
                          self.key, size)
                raise FsError(errno.ENOTSUP)
            self.state = State.DIRTY

    async def _start_over(self) -> None:
        await self._abort_upload()
        self._release_part1()
        self._base_len = self._buf_start = self._buf_len = self.size = 0
        self._parts, self._next_part = {}, 1

    # -- committing ----------------------------------------------------------------------

    async def commit(self) -> str:
        """Make S3 hold exactly the bytes written so far. Raises FsError(EIO) on failure, in
        which case the upload is aborted and S3 keeps whatever object it had before."""
        async with self._lock:
            return await self._commit_locked()

    async def _commit_locked(self) -> str:
        await self._check_writable()
        if self.state in (State.CLEAN, State.DISCARDED):
            return self.etag or ""
        t0 = time.monotonic()
        try:
            # --no-clobber: a re-commit may replace only our own earlier commit (If-Match)
            etag, parts = await self._commit(self.etag if self.committed_here else None)
            self.etag = etag
        except (StoreError, FsError) as exc:
            await self._fail(exc)
            code = errno.EEXIST if isinstance(exc, ObjectExists) else errno.EIO
            raise FsError(code, f"upload of {self.key} failed: {exc}") from exc
        self.committed_size = self.size
        self.committed_here = True
        self.state = State.CLEAN
        secs = max(time.monotonic() - t0, 1e-9)
        total = max(time.monotonic() - self._started, 1e-9)
        log.info("stored %s: %d bytes, %s, %.2f s (commit %.2f s), %.1f MB/s",
                 self.key, self.size, f"{parts} parts" if parts else "single PUT",
                 total, secs, self.size / total / 1e6)
        return self.etag

    async def _commit(self, replacing: str | None) -> tuple[str, int]:
        tail = _body(self._buf, self._buf_len)
        if self._upload_id is None and self._base_len == 0:
            meta = dict(self.metadata())
            etag = await self.store.put(self.key, tail, metadata=meta,
                                        checksum=await self._checksum(tail),
                                        replacing=replacing)
            self.metadata_sent = meta
            return etag, 0
        if self._upload_id is None:
            await self._open_upload()
        await self._drain()
        if self.error is not None:
            raise self.error
        upload_id = self._upload_id
        assert upload_id is not None
        if self._part1_dirty and self._part1 is not None:
            self._parts[1] = await self._upload_part(
                upload_id, 1, _body(self._part1, self._part1_len))
            self._part1_dirty = False
        if self._buf_len:
            self._parts[self._next_part] = await self._upload_part(
                upload_id, self._next_part, tail)
        parts = sorted(self._parts.items())
        # CRC parts are listed with their checksums; the object's CRC64NVME is combined from
        # them when every part's bytes went through us (else S3 computes it from the parts).
        crcs = {n: c for n, c in self._sums.items() if c.algorithm != "MD5"}
        full = None
        if len(crcs) == len(parts):
            full = checksums.combine([crcs[n] for n, _ in parts])
        etag = await self.store.complete_upload(self.key, upload_id, parts,
                                                part_checksums=crcs, checksum=full,
                                                replacing=replacing)
        # Ready to continue: full parts are in the committed object, the tail is in memory.
        self._base_len = self._buf_start
        self._upload_id = None
        self._parts = {}
        self._next_part = 1
        self._release_part1()
        return etag, len(parts)

    async def rename(self, new_key: str, move: Mover) -> None:
        """The file is renamed while open: the object (if one exists) moves now and later
        commits go to the new key. A multipart upload already open under the old key is
        committed first (as a close() would), so nothing is left to land under the old name
        later, where a new file may live by then."""
        async with self._lock:
            if self._upload_id is not None:
                await self._commit_locked()
            if self.etag is not None and self.state is not State.DISCARDED:
                self.etag = await move(self.key, new_key, self.etag, self.committed_size)
            self.key = new_key

    async def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.state = State.FAILED
        await self._abort_upload()

    async def _abort_upload(self) -> None:
        await self._drain()
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        try:
            await self.store.abort_upload(self.key, upload_id)  # and its marker
            log.warning("%s: multipart upload %s aborted", self.key, upload_id)
        except StoreError as exc:
            log.error("%s: could not abort multipart upload %s (%s); find it with "
                      "ListMultipartUploads", self.key, upload_id, exc)

    async def abort(self, reason: str) -> None:
        """Give up on uncommitted bytes (unmount): no object is created or replaced."""
        async with self._lock:
            if self.state in (State.DIRTY, State.NEW):
                log.warning("%s: %s: %d bytes written since the last commit are dropped, "
                            "S3 keeps its previous object (if any)", self.key, reason,
                            self.size - self.committed_size)
            if self.state is not State.FAILED:
                self.state = State.FAILED
                self.error = FsError(errno.EIO, reason)
            await self._abort_upload()

    async def discard(self) -> None:
        """The file was unlinked while open: nothing of it may appear in S3 any more."""
        async with self._lock:
            await self._abort_upload()
            self.state = State.DISCARDED
            self._release_buffer()
            self._release_part1()

    def _release_buffer(self) -> None:
        if self._buf is not None:
            self.budget.give_buffer(self._buf)
            self._buf, self._buf_len = None, 0

    def _release_part1(self) -> None:
        """Only once part 1 is not in flight (callers drain first)."""
        if self._part1 is not None:
            self.budget.give_buffer(self._part1)
            self._part1, self._part1_dirty = None, False
        self._part1_sent = None
        if self._part1_slot:
            self._part1_slot = False
            self._slots.release()

    async def close(self) -> None:
        async with self._lock:
            await self._drain()
            if self.state is State.FAILED:
                await self._abort_upload()
            self._release_buffer()
            self._release_part1()
            if self.state is not State.FAILED:
                self.state = State.CLOSED

    @property
    def buffered_bytes(self) -> int:
        return self._buf_len

    @property
    def bytes_in_s3(self) -> int:
        """Bytes of the file S3 holds: all of it once committed; else the open multipart
        upload's acknowledged parts (its server-side copied base included)."""
        if self.state is State.CLEAN:
            return self.size
        if self._upload_id is None:
            return self.committed_size if self.state is not State.FAILED else 0
        return self._base_len + self._acked


__all__ = ["Existing", "MiB", "PartBudget", "State", "Upload", "copy_ranges"]
