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

States (State): NEW (nothing written or committed), DIRTY (bytes not yet committed), CLEAN
(committed), FAILED (a part or the commit failed: the upload was aborted, every later write,
flush and commit raises EIO), CLOSED (buffers returned).
"""

from __future__ import annotations

import enum
import errno
import logging
import time
from collections.abc import Callable, Mapping

import trio

from s3mpfs.config import MAX_PART_SIZE, MAX_PARTS, MiB, UploadConfig
from s3mpfs.errors import FsError, StoreError
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
    """Global limit on parts queued or in flight, plus a free list of part buffers.

    Reusing buffers matters: bytearray(8 MiB) zero-fills and faults in 2048 pages, which is
    measurable per part at 200 MB/s; a reused buffer is already resident.
    """

    def __init__(self, max_parts: int, keep_free: int = 8) -> None:
        self.max_parts = max_parts
        self._slots = trio.Semaphore(max_parts)
        self._free: dict[int, list[bytearray]] = {}
        self._keep_free = keep_free
        self.in_flight = 0

    def take_buffer(self, size: int) -> bytearray:
        free = self._free.get(size)
        return free.pop() if free else bytearray(size)

    def give_buffer(self, buf: bytearray) -> None:
        free = self._free.setdefault(len(buf), [])
        if sum(len(v) for v in self._free.values()) < self._keep_free:
            free.append(buf)

    async def acquire(self) -> None:
        await self._slots.acquire()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
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
        max_parts: int = MAX_PARTS,
    ) -> None:
        self.store = store
        self.key = key
        self.cfg = cfg
        self.budget = budget
        self.nursery = nursery
        self.metadata = metadata  # read when the object's metadata is fixed (Create/Put)
        self.max_parts = max_parts
        self.state = State.NEW
        self.size = 0
        self.error: BaseException | None = None
        self.etag: str | None = None  # of the last commit
        self.committed_size = 0
        self.metadata_sent: Mapping[str, str] | None = None
        self._lock = trio.Lock()
        self._slots = trio.Semaphore(cfg.concurrency)
        self._buf: bytearray | None = None
        self._buf_len = 0
        self._buf_start = 0  # file offset of the buffer's first byte
        self._base_len = 0  # bytes [0, base_len) come from the last committed object
        self._upload_id: str | None = None
        self._parts: dict[int, str] = {}
        self._next_part = 1
        self.parts_sent = 0
        self._started = time.monotonic()

    # -- writing -------------------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        async with self._lock:
            self._check_writable()
            if self.state is State.DISCARDED:
                self.size = max(self.size, offset + len(data))
                return len(data)
            if offset != self.size:
                log.error("%s: write at offset %d, but the file has %d bytes: s3mpfs streams "
                          "files to S3 and accepts only sequential writes",
                          self.key, offset, self.size)
                raise FsError(errno.EINVAL, "non-sequential write")
            view = memoryview(data)
            pos = 0
            while pos < len(view):
                if self._buf is None:
                    if self._upload_id is not None and self._next_part > self.max_parts:
                        await self._fail(FsError(errno.EFBIG, "more than the maximum parts"))
                        log.error("%s: file too large: all %d parts of %d bytes used",
                                  self.key, self.max_parts, self.cfg.part_size)
                        raise FsError(errno.EFBIG)
                    self._buf = self.budget.take_buffer(self.cfg.part_size)
                    self._buf_len = 0
                take = min(len(self._buf) - self._buf_len, len(view) - pos)
                self._buf[self._buf_len:self._buf_len + take] = view[pos:pos + take]
                self._buf_len += take
                pos += take
                self.size += take
                self.state = State.DIRTY
                if self._buf_len == len(self._buf):
                    await self._submit_buffer()
            return len(view)

    def _check_writable(self) -> None:
        if self.state is State.FAILED:
            raise FsError(errno.EIO, f"upload of {self.key} failed earlier: {self.error}")
        if self.state is State.CLOSED:
            raise FsError(errno.EBADF, "upload closed")

    async def _submit_buffer(self) -> None:
        """Hand the full buffer to a part task; waits while too many parts are in flight."""
        try:
            if self._upload_id is None:
                await self._open_upload()
            await self._slots.acquire()
        except StoreError as exc:
            await self._fail(exc)
            raise FsError(errno.EIO, str(exc)) from exc
        await self.budget.acquire()
        number = self._next_part
        self._next_part += 1
        buf, length = self._buf, self._buf_len
        assert buf is not None
        self._buf, self._buf_len = None, 0
        self._buf_start += length
        self.nursery.start_soon(self._send_part, number, buf, length)

    async def _send_part(self, number: int, buf: bytearray, length: int) -> None:
        upload_id = self._upload_id
        try:
            assert upload_id is not None
            etag = await self.store.upload_part(self.key, upload_id, number, _body(buf, length))
            self._parts[number] = etag
            self.parts_sent += 1
        except StoreError as exc:
            if self.error is None:
                self.error = exc
                log.error("%s: part %d failed: %s", self.key, number, exc)
            self.state = State.FAILED
        finally:
            self.budget.give_buffer(buf)
            self.budget.release()
            self._slots.release()

    async def _open_upload(self) -> None:
        meta = dict(self.metadata())
        self._upload_id = await self.store.create_upload(self.key, metadata=meta)
        self.metadata_sent = meta
        self._parts = {}
        self._next_part = 1
        # Continue after an earlier commit: its full parts become our first parts, copied
        # server side and pinned to the committed ETag so a replaced object is never spliced.
        for start, end in copy_ranges(self._base_len):
            number = self._next_part
            self._next_part += 1
            self._parts[number] = await self.store.upload_part_copy(
                self.key, self._upload_id, number, self.key, start, end, src_etag=self.etag)
        log.debug("%s: multipart upload %s opened", self.key, self._upload_id)

    async def _drain(self) -> None:
        """Wait until no part of this upload is in flight."""
        for _ in range(self.cfg.concurrency):
            await self._slots.acquire()
        for _ in range(self.cfg.concurrency):
            self._slots.release()

    # -- committing ----------------------------------------------------------------------

    async def commit(self) -> str:
        """Make S3 hold exactly the bytes written so far. Raises FsError(EIO) on failure, in
        which case the upload is aborted and S3 keeps whatever object it had before."""
        async with self._lock:
            self._check_writable()
            if self.state in (State.CLEAN, State.DISCARDED):
                return self.etag or ""
            t0 = time.monotonic()
            try:
                etag, parts = await self._commit()
            except (StoreError, FsError) as exc:
                await self._fail(exc)
                raise FsError(errno.EIO, f"upload of {self.key} failed: {exc}") from exc
            self.etag = etag
            self.committed_size = self.size
            self.state = State.CLEAN
            secs = max(time.monotonic() - t0, 1e-9)
            total = max(time.monotonic() - self._started, 1e-9)
            log.info("stored %s: %d bytes, %s, %.2f s (commit %.2f s), %.1f MB/s",
                     self.key, self.size, f"{parts} parts" if parts else "single PUT",
                     total, secs, self.size / total / 1e6)
            return etag

    async def _commit(self) -> tuple[str, int]:
        tail = _body(self._buf, self._buf_len)
        if self._upload_id is None and self._base_len == 0:
            meta = dict(self.metadata())
            etag = await self.store.put(self.key, tail, metadata=meta)
            self.metadata_sent = meta
            return etag, 0
        if self._upload_id is None:
            await self._open_upload()
        await self._drain()
        if self.error is not None:
            raise self.error
        upload_id = self._upload_id
        assert upload_id is not None
        if self._buf_len:
            self._parts[self._next_part] = await self.store.upload_part(
                self.key, upload_id, self._next_part, tail)
        parts = sorted(self._parts.items())
        etag = await self.store.complete_upload(self.key, upload_id, parts)
        # Ready to continue: full parts are in the committed object, the tail is in memory.
        self._base_len = self._buf_start
        self._upload_id = None
        self._parts = {}
        self._next_part = 1
        return etag, len(parts)

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
            await self.store.abort_upload(self.key, upload_id)
            log.warning("%s: multipart upload %s aborted", self.key, upload_id)
        except StoreError as exc:
            log.error("%s: could not abort multipart upload %s (%s); find it with "
                      "ListMultipartUploads", self.key, upload_id, exc)

    async def abort(self, reason: str) -> None:
        """Give up on uncommitted bytes (unmount, unlink): no object is created or replaced."""
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

    def truncate_to_zero(self) -> bool:
        """ftruncate(fd, 0) before anything left memory: just forget the bytes."""
        if self._upload_id is not None or self._base_len or self.state is State.CLEAN:
            return False
        self._buf_len = self.size = 0
        return True

    def _release_buffer(self) -> None:
        if self._buf is not None:
            self.budget.give_buffer(self._buf)
            self._buf, self._buf_len = None, 0

    async def close(self) -> None:
        async with self._lock:
            await self._drain()
            self._release_buffer()
            if self.state is not State.FAILED:
                self.state = State.CLOSED

    @property
    def buffered_bytes(self) -> int:
        return self._buf_len


__all__ = ["MiB", "PartBudget", "State", "Upload", "copy_ranges"]
