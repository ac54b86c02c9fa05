"""Reads: of the stored object through a prefetching Reader per handle; of a file being
written (by any descriptor), every byte the mount still holds and the stored object's bytes
elsewhere.

A fresh open uses the ETag the mount knows (a listing's, a lookup's within the TTL). If another
client replaced the object since, the first read's 412 refreshes the inode (one HEAD) and reads
the new version; a reader that has already read keeps ESTALE, so two versions are never spliced.

A file being written is, at any moment, made of: the object S3 holds under its key (all of a
committed or unchanged file; the first part a continued upload copies server side), part 1 of
a fresh upload (kept in memory until completion), parts on their way to S3, and the buffer
being filled (Upload.held()). Bytes of parts S3 has already acknowledged are in an incomplete
multipart upload, which S3 cannot read back: those ranges fail with EIO and one log line (file,
range, why) until a close() stores the file. A file under one part is always whole in memory.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

import trio

from s3mpfs.config import ReadConfig
from s3mpfs.errors import FsError
from s3mpfs.handles import HandleTable, ReadHandle, WriteHandle
from s3mpfs.inodes import Inode
from s3mpfs.namespace import Namespace
from s3mpfs.prefetch import ReadBudget, Reader
from s3mpfs.store.base import ObjectStore
from s3mpfs.upload import Upload

log = logging.getLogger(__name__)

# Reads bytes [start, end) of the stored object the upload stands on.
StoredReader = Callable[[int, int], Awaitable[bytes | memoryview]]


async def read(upload: Upload, path: str, offset: int, length: int,
               stored: StoredReader) -> bytes:
    end = min(offset + length, upload.size)
    if offset >= end:
        return b""
    # The plan is made (and held bytes copied) before any await: a write may change the
    # buffers while a stored range is fetched.
    plan: list[bytes | tuple[int, int]] = []
    pos = offset
    for start, view in upload.held():
        stop = start + len(view)
        if stop <= pos:
            continue
        if start >= end:
            break
        if start > pos:
            plan.append((pos, start))
            pos = start
        take = min(stop, end)
        plan.append(bytes(view[pos - start:take - start]))
        pos = take
        if pos >= end:
            break
    if pos < end:
        plan.append((pos, end))
    prefix = upload.stored_prefix
    pieces: list[bytes | memoryview] = []
    for step in plan:
        if isinstance(step, bytes):
            pieces.append(step)
            continue
        start, stop = step
        if stop > prefix or upload.etag is None:
            log.error("%s: bytes %d-%d cannot be read while the file is written: they went to "
                      "S3 as parts of a multipart upload that is not complete, which S3 cannot "
                      "read back%s", path, start, stop,
                      "" if upload.detached else "; they read back after close()")
            raise FsError(errno.EIO, f"bytes {start}-{stop} are in an incomplete upload")
        pieces.append(await stored(start, stop))
    return pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else b"".join(pieces)


class Reads:
    def __init__(self, store: ObjectStore, names: Namespace, handles: HandleTable,
                 cfg: ReadConfig, budget: ReadBudget, tasks: Callable[[], trio.Nursery]) -> None:
        self.store, self.names, self.handles, self.cfg = store, names, handles, cfg
        self.budget = budget  # prefetched bytes across all read handles
        self._tasks = tasks

    def reader(self, inode: Inode, etag: str | None, size: int) -> Reader:
        return Reader(self.store, self.names.key(inode), etag, size, nursery=self._tasks(),
                      budget=self.budget, config=self.cfg)

    async def read(self, handle: ReadHandle | WriteHandle, offset: int,
                   length: int) -> bytes | memoryview:
        inode = handle.inode
        writer = self.handles.writer(inode)
        if writer is None and isinstance(handle, WriteHandle):
            writer = handle.upload  # an older descriptor of a file opened again since
        if writer is not None:
            upload = writer
            return await read(upload, inode.path, offset, length,
                              stored=lambda s, e: self._stored(handle, upload, s, e))
        assert isinstance(handle, ReadHandle)  # a write handle always has its upload
        reader = handle.reader
        if reader is None:  # opened while being written; stored since
            if inode.etag is None:
                self.names.set_file_info(inode, await self.store.head(self.names.key(inode)))
            reader = handle.reader = self.reader(inode, inode.etag, inode.size)
        try:
            return await reader.read(offset, length)
        except FsError as exc:
            if exc.errno != errno.ESTALE:
                raise
            if reader.served:  # it read the old version: never splice two versions
                if inode.etag == reader.etag:
                    inode.etag = None  # replaced: the next open asks S3
                    inode.expiry.expire()
                raise
        # Opened from cached attributes, replaced by another client since, nothing read yet:
        # read the new version (once: a second 412 is a race of its own, ESTALE).
        return await (await self._reopen(handle, reader)).read(offset, length)

    async def _stored(self, handle: ReadHandle | WriteHandle, upload: Upload, start: int,
                      end: int) -> bytes | memoryview:
        """Bytes of the object a file being written stands on (pinned to its ETag)."""
        reader = handle.reader
        if reader is None or reader.etag != upload.etag:
            if reader is not None:
                await reader.close()
            reader = handle.reader = self.reader(handle.inode, upload.etag,
                                                 upload.committed_size)
        return await reader.read(start, end - start)

    async def _reopen(self, handle: ReadHandle, old: Reader) -> Reader:
        inode = handle.inode
        self.names.set_file_info(inode, await self.store.head(self.names.key(inode)))
        self.names.renew(inode)
        log.info("%s: replaced since its attributes were read (ETag %s -> %s): reading the "
                 "new version", inode.path, old.etag, inode.etag)
        reader = handle.reader = self.reader(inode, inode.etag, inode.size)
        await old.close()
        return reader
