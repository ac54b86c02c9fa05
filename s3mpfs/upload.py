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
object is the base, kept lazily until the first change; then, if it is at least 5 MiB (one
part when that change is an edit inside it), it stays in S3 and becomes the first parts at the
commit (edits.py: untouched ranges copied server side, edited blocks uploaded), else it is
fetched into the first buffer. The old object is replaced only when the new one completes.

Where writes may land (the file is [0, size)):
    [0, base_len)          the stored object: edited in memory block by block (edits.py)
    part 1 (fresh upload)  kept in memory until completion, re-uploaded if rewritten
    other uploaded parts   sent again while the pool still holds their buffers (heldparts.py),
                           else EINVAL, logged; the upload is aborted, later calls fail
    [fill.start, size)     the filling buffer (Filling): rewritten in place
    beyond size            zero-filled (dense), interruptibly (_append_zeros); past the
                           largest file (parts.max_file_size) EFBIG at once, nothing sent,
                           and the upload fails (no truncated object); a truncate past it
                           is refused with nothing changed

States (State): NEW (nothing written or committed), DIRTY (bytes not yet committed), CLEAN
(committed, or an existing object not yet changed), FAILED (a part or the commit failed: the
upload was aborted, every later write, flush and commit fails), DISCARDED (unlinked while
open), CLOSED (buffers returned).

Errors: a failed request fails the write, flush or commit that sees it with the errno
errors.errno_for gives its StoreError (EACCES when S3 refused it, EIO when the storage failed,
ESTALE when the object a continued upload copies was replaced ...), and so does every later
write, flush and commit of the failed upload. After a refused write (EINVAL, EFBIG) or an
unmount, later calls fail with EIO.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import trio

from s3mpfs import checksums, heldparts, zerofill
from s3mpfs.config import MIN_PART_SIZE, MiB, UploadConfig
from s3mpfs.edits import BaseEdits, reserved_parts
from s3mpfs.errors import FsError, StoreError, errno_for
from s3mpfs.parts import PartBudget, check_file_size, copy_ranges, max_file_size, part_size
from s3mpfs.store.base import ObjectStore
from s3mpfs.uploadstate import (
    Existing,
    Filling,
    Multipart,
    Part1,
    State,
    UploadViews,
    body_of,
    failed_errno,
    part_checksum,
)

log = logging.getLogger(__name__)


# Moves a committed object: (src key, dst key, src etag, size) -> the new object's ETag.
Mover = Callable[[str, str, str, int], Awaitable[str]]


class Upload(UploadViews):
    """One writer's stream of bytes to one key.

    Its state: `state` (State: the state machine of the module docstring), the file (`size`;
    `etag`/`committed_size` of the object it stands on; `_base_len` bytes of it copied server
    side, `_lazy_base` while that object is not yet fetched or copied), the filling buffer
    (`_fill`), part 1 kept in memory (`_part1`) and the open multipart upload (`_mp`, None
    when none is open). `_lock` serialises calls; `_slots` are the file's parts in flight.
    """

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
        create_only: bool = False,
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
        # O_EXCL: the first commit carries If-None-Match: * (never replaces another's object)
        self.create_only = create_only
        # Unlinked while open: writes and reads go on in memory, nothing is ever stored.
        self.detached = False
        self.parts_sent = 0  # parts S3 acknowledged, and their bytes (progress reporting)
        self.bytes_sent = 0
        self.parts_in_flight = 0
        self._started = time.monotonic()
        self._lock = trio.Lock()
        self._slots = trio.Semaphore(cfg.concurrency)
        self._base_len = 0  # bytes [0, base_len) are copied from the object `etag`
        self._lazy_base = False  # an existing object not yet fetched or copied
        self._fill = Filling()
        self._part1: Part1 | None = None
        self._mp: Multipart | None = None
        # Parts handed to part tasks and not yet acknowledged: number -> (offset, buf, length)
        self._in_flight: dict[int, tuple[int, bytearray, int]] = {}
        self._edits = BaseEdits(store, cfg.part_size, budget)  # of [0, base_len), in memory
        self.max_size = max_file_size(cfg.part_size, self.max_parts)
        if existing is not None:
            self.state = State.CLEAN
            self.etag, self.size, self.committed_size = existing.etag, existing.size, existing.size
            self._lazy_base = True

    # -- writing -------------------------------------------------------------------------

    async def write(self, offset: int, data: bytes,
                    interrupted: zerofill.Interrupted = zerofill.never) -> int:
        """Anywhere (module docstring); a gap past the end is zero-filled (zerofill.py)."""
        async with self._lock:
            await self._check_writable()
            try:  # a file that cannot be stored whole is not stored at all: the upload fails
                check_file_size(self.key, offset + len(data), self.max_size)
            except FsError as exc:
                await self._fail(exc)
                raise
            if self.state is State.DISCARDED:
                self.size = max(self.size, offset + len(data))
                return len(data)
            if self._lazy_base:  # an edit under a part: in memory; an append: copied
                await self._materialize(self.size, inside=offset < self.size)
            view = memoryview(data)
            if offset > self.size:
                self.state = State.DIRTY
                await self._append_zeros(offset - self.size, interrupted)
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
            raise FsError(failed_errno(self.error), f"upload of {self.key} failed earlier: "
                                              f"{self.error}")
        if self.state is State.CLOSED:
            raise FsError(errno.EBADF, "upload closed")

    async def _materialize(self, keep: int, inside: bool = False) -> None:
        """Keep the lazy base's first `keep` bytes: fetched if small, else the base."""
        self._lazy_base = False
        if keep >= max(MIN_PART_SIZE, self.cfg.part_size if inside else 0):
            self._base_len = self._fill.start = keep
        elif keep:
            try:
                data = await self.store.get_range(self.key, 0, keep, if_match=self.etag)
            except StoreError as exc:
                await self._fail(exc)
                raise FsError(failed_errno(exc),
                              f"cannot read {self.key} to extend it: {exc}") from exc
            self._fill.buf = self.budget.take_buffer(self._part_size(1))
            self._fill.buf[:keep] = data
            self._fill.length = keep
        self.size = keep

    async def _append_zeros(self, count: int,
                            interrupted: zerofill.Interrupted = zerofill.never) -> None:
        try:  # stops at a failed part or a signal for the caller (zerofill.py)
            for chunk in zerofill.chunks(self.key, count, lambda: self.error, interrupted):
                await self._append(chunk)
        except FsError as exc:
            await self._fail(exc)
            raise

    async def _overwrite(self, offset: int, view: memoryview) -> None:
        """Rewrite bytes [offset, offset + len(view)) that lie within the file."""
        end = offset + len(view)
        fill = self._fill
        if end > fill.start and fill.buf is not None:
            start = max(offset, fill.start)
            fill.buf[start - fill.start:end - fill.start] = view[start - offset:]
            view, end = view[:start - offset], start
        if not view:
            return
        part1 = self._part1
        if part1 is not None and end <= part1.length:
            await part1.sent.wait()  # never change bytes while they are sent
            part1.buf[offset:end] = view
            part1.dirty = True
            return
        try:
            if offset < self._base_len:  # the stored object: edited in memory (edits.py)
                base = self._base_len
                await self._edits.patch(self.key, self.etag, base, offset, view[:base - offset])
                view, offset = view[base - offset:], base
            if view and (mp := self._mp) is not None:  # a part the pool holds (heldparts.py)
                await self._drain()  # parts in flight are held once sent
                if await heldparts.rewrite(self.budget, mp, mp.spans, offset, view,
                                           lambda n, body: self._upload_part(mp, n, body)):
                    return
        except (StoreError, FsError) as exc:
            await self._fail(exc)
            raise FsError(errno_for(exc), f"write at {offset} into {self.key}: {exc}") from exc
        if not view:
            return
        log.error("%s: write at offset %d rejected: that part was uploaded and its buffer "
                  "reused; bytes below %d, from %d, part 1 and the last %d parts (while the "
                  "pool keeps them: --rewrite-window) can be rewritten. The upload is aborted.",
                  self.key, offset, self._base_len, self._fill.start, self.cfg.held_parts)
        await self._fail(FsError(errno.EINVAL, f"write at {offset} into an uploaded part"))
        raise FsError(errno.EINVAL, "write into an uploaded part")

    async def _append(self, view: memoryview) -> None:
        fill = self._fill
        pos = 0
        while pos < len(view):
            if fill.buf is None:
                if self._mp is not None and self._mp.next_part > self.max_parts:
                    log.error("%s: file too large: all %d parts used (%d bytes); the "
                              "upload is aborted", self.key, self.max_parts, self.size)
                    await self._fail(FsError(errno.EFBIG, "more than the maximum parts"))
                    raise FsError(errno.EFBIG)
                number = self._mp.next_part if self._mp is not None else 1
                fill.buf = self.budget.take_buffer(self._part_size(number), heldparts.spare(
                    self._mp, number, self.cfg.held_parts))
                fill.length = 0
            take = min(len(fill.buf) - fill.length, len(view) - pos)
            fill.buf[fill.length:fill.length + take] = view[pos:pos + take]
            fill.length += take
            pos += take
            self.size += take
            if fill.length == len(fill.buf):
                await self._submit_buffer()

    async def _submit_buffer(self) -> None:
        """Hand the full buffer to a part task; waits while too many parts are in flight."""
        try:
            mp = self._mp or await self._open_upload()
            await self._slots.acquire()
        except StoreError as exc:
            await self._fail(exc)
            raise FsError(failed_errno(exc), str(exc)) from exc
        assert self._fill.buf is not None
        weight = await self.budget.acquire(-(-len(self._fill.buf) // self.cfg.part_size))
        number = mp.take_number()
        start = self._fill.start
        mp.spans[number] = (self._fill.start, self._fill.length)
        buf, length = self._fill.hand_over()
        part1 = None
        if number == 1:
            part1 = self._part1 = Part1(buf, length, holds_slot=self.cfg.concurrency > 1)
        else:
            self._in_flight[number] = (start, buf, length)
        self.parts_in_flight += 1
        self.nursery.start_soon(self._send_part, mp, number, buf, length, part1, weight)

    async def _send_part(self, mp: Multipart, number: int, buf: bytearray, length: int,
                         part1: Part1 | None, weight: int) -> None:
        """A part task. Part 1 stays in memory (see Part1), every other buffer goes back."""
        try:
            # A rewrite of part 1 waits until it has been sent (see _overwrite), so the bytes S3
            # gets are the bytes the checksum covers; the rewrite is re-sent at commit.
            await self._upload_part(mp, number, body_of(buf, length))
            self.parts_sent += 1
            self.bytes_sent += length
            mp.acked += length
        except StoreError as exc:
            if self.error is None:
                self.error = exc
                log.error("%s: part %d failed: %s", self.key, number, exc)
            self.state = State.FAILED
        finally:
            self.parts_in_flight -= 1
            self.budget.release(weight)
            if part1 is not None:
                part1.sent.set()
                if not part1.holds_slot:
                    self._slots.release()
            else:  # kept for a rewrite (heldparts.py) until the pool reuses it
                self._in_flight.pop(number, None)
                self.budget.give_buffer(buf, (mp, number) if self.error is None else None)
                self._slots.release()

    async def _upload_part(self, mp: Multipart, number: int, body: bytes | bytearray) -> str:
        checksum = await part_checksum(self.cfg.checksum, body)
        etag = await self.store.upload_part(self.key, mp.upload_id, number, body, checksum)
        if checksum is not None:
            mp.sums[number] = checksum
        mp.parts[number] = etag
        return etag

    async def _open_upload(self) -> Multipart:
        meta = dict(self.metadata())
        # mark: the store marks the upload as s3mpfs's until it ends (store/markers.py)
        upload_id = await self.store.create_upload(
            self.key, metadata=meta,
            checksum_algorithm=checksums.upload_algorithm(self.cfg.checksum), mark=True)
        mp = self._mp = Multipart(upload_id)
        self.metadata_sent = meta
        # The base (the stored object, or our last commit) is sent at the commit (edits.py)
        mp.next_part += reserved_parts(self._base_len, self.cfg.part_size,
                                       self.budget.max_parts)
        log.debug("%s: multipart upload %s opened", self.key, upload_id)
        return mp

    def _part_size(self, number: int) -> int:
        return part_size(number, self.cfg.part_size, self.max_parts)

    async def _drain(self) -> None:
        """Wait until no part of this upload is in flight."""
        held = 0
        if self._part1 is not None:
            await self._part1.sent.wait()
            held = int(self._part1.holds_slot)
        free = self.cfg.concurrency - held
        for _ in range(free):
            await self._slots.acquire()
        for _ in range(free):
            self._slots.release()

    async def truncate(self, size: int, interrupted: zerofill.Interrupted = zerofill.never) -> None:
        """Grow with zeros (zerofill.py), shrink within the filling buffer or to 0; ENOTSUP
        into uploaded parts."""
        async with self._lock:
            await self._check_writable()
            check_file_size(self.key, size, self.max_size)
            if self.state is State.DISCARDED or size == self.size:
                self.size = size if self.state is State.DISCARDED else self.size
                return
            if self._lazy_base:
                await self._materialize(min(size, self.size))
            fill = self._fill
            if size > self.size:
                self.state = State.DIRTY  # never "stored" while the fill runs
                await self._append_zeros(size - self.size, interrupted)
            elif size >= fill.start and (fill.buf is not None or size == fill.start):
                fill.length = size - fill.start
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
        self._edits.release()
        self._base_len = self._fill.start = self._fill.length = self.size = 0

    # -- committing ----------------------------------------------------------------------

    async def commit(self) -> str:
        """Make S3 hold exactly the bytes written so far. Raises FsError on failure (EIO, or
        what errors.errno_for says for S3's answer), in which case the upload is aborted and S3
        keeps whatever object it had before."""
        async with self._lock:
            return await self._commit_locked()

    async def _commit_locked(self) -> str:
        await self._check_writable()
        if self.state in (State.CLEAN, State.DISCARDED):
            return self.etag or ""
        t0 = time.monotonic()
        try:
            # --no-clobber: a re-commit may replace only our own earlier commit (If-Match)
            etag, parts = await self._commit(self.etag if self.committed_here else None,
                                             self.create_only and not self.committed_here)
            self.etag = etag
        except (StoreError, FsError) as exc:
            await self._fail(exc)
            raise FsError(failed_errno(exc), f"upload of {self.key} failed: {exc}") from exc
        self.committed_size = self.size
        self.committed_here = True
        self.state = State.CLEAN
        secs = max(time.monotonic() - t0, 1e-9)
        total = max(time.monotonic() - self._started, 1e-9)
        log.info("stored %s: %d bytes, %s, %.2f s (commit %.2f s), %.1f MB/s",
                 self.key, self.size, f"{parts} parts" if parts else "single PUT",
                 total, secs, self.size / total / 1e6)
        return self.etag

    async def _commit(self, replacing: str | None, create_only: bool) -> tuple[str, int]:
        tail = self._fill.body()
        if self._mp is None and self._base_len == 0:
            meta = dict(self.metadata())
            etag = await self.store.put(self.key, tail, metadata=meta,
                                        checksum=await part_checksum(self.cfg.checksum, tail),
                                        replacing=replacing, create_only=create_only)
            self.metadata_sent = meta
            return etag, 0
        mp = self._mp or await self._open_upload()
        await self._drain()
        if self.error is not None:
            raise self.error
        upload_id = mp.upload_id
        # The base: edited blocks, and copies pinned to its ETag (never spliced) (edits.py)
        for number, (start, end, buf) in enumerate(self._edits.plan(self._base_len), 1):
            mp.parts[number] = (await self._upload_part(mp, number, buf) if buf is not None
                                else await self.store.upload_part_copy(
                self.key, upload_id, number, self.key, start, end, src_etag=self.etag))
        part1 = self._part1
        if part1 is not None and part1.dirty:
            await self._upload_part(mp, 1, body_of(part1.buf, part1.length))
            part1.dirty = False
        if self._fill.length:
            await self._upload_part(mp, mp.next_part, tail)
        parts = sorted(mp.parts.items())
        # CRC parts are listed with their checksums; the object's CRC64NVME is combined from
        # them when every part's bytes went through us (else S3 computes it from the parts).
        crcs = {n: c for n, c in mp.sums.items() if c.algorithm != "MD5"}
        full = None
        if len(crcs) == len(parts):
            full = checksums.combine([crcs[n] for n, _ in parts])
        etag = await self.store.complete_upload(self.key, upload_id, parts,
                                                part_checksums=crcs, checksum=full,
                                                replacing=replacing,
                                                create_only=create_only)
        # Ready to continue: full parts are in the committed object, the tail is in memory.
        self._base_len = self._fill.start
        self._mp = None
        self._release_part1()
        self._edits.release()
        return etag, len(parts)


    async def rename(self, new_key: str, move: Mover) -> None:
        """The file is renamed while open: the object (if one exists) moves now and later
        commits go to the new key. A multipart upload already open under the old key is
        committed first (as a close() would), so nothing is left to land under the old name
        later, where a new file may live by then."""
        async with self._lock:
            if self._mp is not None:
                await self._commit_locked()
            if self.etag is not None and self.state is not State.DISCARDED:
                self.etag = await move(self.key, new_key, self.etag, self.committed_size)
            self.key = new_key

    async def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.state = State.FAILED
        await self._abort_upload()
        self._edits.release()

    async def _abort_upload(self) -> None:
        await self._drain()
        if self._mp is None:
            return
        upload_id, self._mp = self._mp.upload_id, None
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
            self._fill.release(self.budget)
            self._release_part1()
            self._edits.release()

    def _release_part1(self) -> None:
        """Only once part 1 is not in flight (callers drain first)."""
        part1, self._part1 = self._part1, None
        if part1 is not None:
            self.budget.give_buffer(part1.buf)
            if part1.holds_slot:
                self._slots.release()

    async def close(self) -> None:
        async with self._lock:
            await self._drain()
            if self.state is State.FAILED:
                await self._abort_upload()
            self._fill.release(self.budget)
            self._release_part1()
            self._edits.release()
            if self.state is not State.FAILED:
                self.state = State.CLOSED


__all__ = ["Existing", "MiB", "PartBudget", "State", "Upload", "copy_ranges"]
