"""The filesystem's semantics, without FUSE: fuse_ops.py only converts types around this.

Names and keys: an inode's path is relative to the mount's prefix; a file's key is
prefix + path, a directory's marker key is prefix + path + "/".

Writing (upload.py does the streaming): create(), or open() with O_TRUNC, gives a WriteHandle.
When does the object appear? FUSE sends `flush` on *every* close() of every descriptor of the
open file (dup'd, inherited by a child), and pyfuse3 does not say which process closed, so
"the last close" cannot be told apart from a child's exit. The rule here:

  * flush after bytes were written since the last commit -> commit now (PutObject, or the last
    part + CompleteMultipartUpload), and return its error to that close();
  * flush with nothing new -> nothing (this is the shell's `> f` redirection, which opens,
    dup2()s and closes before the first byte: committing then would replace an existing
    object with an empty one before the data arrives);
  * a write after a commit continues the same file (upload.py: the committed object becomes
    the base of a new upload), and the next flush commits the longer file;
  * release (the last descriptor is gone) commits what is still pending, including an empty
    new file; FUSE discards release errors, so a failure there is logged.

So `( echo a; sleep 1; echo b ) > f` stores "a" when sleep exits and "a\\nb\\n" at the end, and
at every moment S3 holds either the previous object or what the writer had when a close()
returned 0. A failed commit aborts the upload, fails that close() and every later write,
flush and close on the handle with EIO, and leaves the previous object untouched.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import trio

from s3mpfs import openers
from s3mpfs.attrstore import AttrStore
from s3mpfs.config import FsConfig
from s3mpfs.errors import FsError
from s3mpfs.handles import DirHandle, FileHandleT, HandleTable, ReadHandle, WriteHandle
from s3mpfs.holds import Holds
from s3mpfs.inodes import Inode, Kind
from s3mpfs.links import Links
from s3mpfs.listing import DirEntry
from s3mpfs.namespace import META_BATCH, Namespace
from s3mpfs.prefetch import ReadBudget
from s3mpfs.readback import Reads
from s3mpfs.renames import Renamer
from s3mpfs.store.base import ObjectStore
from s3mpfs.upload import Existing, PartBudget, State, Upload
from s3mpfs.xattrops import XattrOps

log = logging.getLogger(__name__)

# The filesystem's part of the mount's configuration (config.py); the old name stays for tests.
FsOptions = FsConfig


@dataclass(frozen=True)
class SetAttr:
    size: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None
    atime_ns: int | None = None


class Filesystem:
    """The operations. Names (lookup, listings, the caches, the inode table) are the
    Namespace's (namespace.py); open files are the HandleTable's (handles.py)."""

    def __init__(self, store: ObjectStore, options: FsConfig | None = None) -> None:
        self.store = store
        self.opts = options or FsConfig()
        self.handles = HandleTable()
        self.names = Namespace(
            store, prefix=self.opts.prefix, metadata_ttl=self.opts.metadata_ttl,
            negative_ttl=self.opts.negative_ttl, uid=self.opts.uid, gid=self.opts.gid,
            file_mode=self.opts.file_mode, dir_mode=self.opts.dir_mode, size_of=self.size_of)
        self.inodes = self.names.inodes
        self.budget = PartBudget(
            self.opts.upload.max_parts_in_memory,
            keep_bytes=self.opts.upload.pool_buffers * self.opts.upload.part_size,
            max_buffers=self.opts.upload.pool_buffers)
        self._nursery: trio.Nursery | None = None
        self.attrs = AttrStore(store, self.names, self.handles)
        self.holds = Holds(self.budget, self.opts.upload.part_size, self.handles, self.inodes,
                           commit=self._commit_upload, move=lambda *a: self.renames.move(*a),
                           enabled=not self.opts.durable_close)
        self.reads = Reads(store, self.names, self.handles, self.opts.read,
                           ReadBudget(self.opts.read.memory_limit), lambda: self.tasks)
        self.renames = Renamer(store, self.names, self.handles, self.attrs, self.holds,
                               no_clobber=self.opts.no_clobber)
        self.links = Links(store, self.names, self.handles, read_only=self.opts.read_only,
                           hard_links=self.opts.hard_links)  # symlink, readlink, mknod, link
        self.xattr_ops = XattrOps(self.names, self.handles, self.attrs, self.opts, self.budget)
        # Our mount's ID in /proc/<pid>/fdinfo (mount.py sets it once mounted): lets flush tell
        # a forked child's close from the opener's (openers.py). None: every flush commits.
        self.mount_id: int | None = None
        self.stopping = False  # SIGTERM/SIGINT: a long zero-fill stops at its next MiB

    def start(self, nursery: trio.Nursery) -> None:
        """Part uploads run as tasks in this nursery, which must outlive every handle.

        The one late step of construction, and why it cannot go: mount.py builds the
        Filesystem and pyfuse3's Operations over it before trio runs (pyfuse3.init mounts,
        then the daemon forks, then trio.run starts), so no nursery exists yet at __init__."""
        self._nursery = nursery
        self.attrs.start(nursery)

    @property
    def tasks(self) -> trio.Nursery:
        """Where part uploads, prefetch GETs and held attribute stores run."""
        assert self._nursery is not None, "Filesystem.start() was not called"
        return self._nursery

    # -- helpers -------------------------------------------------------------------------

    def key(self, inode: Inode) -> str:
        return self.names.key(inode)

    def _writable(self) -> None:
        if self.opts.read_only:
            raise FsError(errno.EROFS)

    def _new_upload(self, inode: Inode, existing: Existing | None = None,
                    create_only: bool = False) -> Upload:
        return Upload(self.store, self.key(inode), cfg=self.opts.upload, budget=self.budget,
                      nursery=self.tasks, metadata=inode.metadata, existing=existing,
                      create_only=create_only)

    # -- names ---------------------------------------------------------------------------

    async def lookup(self, parent_ino: int, name: str) -> Inode:
        parent = self.names.dir(parent_ino)
        if name == ".":
            inode = parent
        elif name == "..":
            inode = self.inodes.by_path(parent.path.rpartition("/")[0]) or parent
        else:
            inode = await self.names.resolve(self.names.child_path(parent, name))
        inode.lookups += 1
        return inode

    def remember(self, inode: Inode) -> None:
        """The kernel took a reference from a readdirplus entry."""
        inode.lookups += 1

    def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, count in items:
            self.inodes.forget(ino, count)

    async def getattr(self, ino: int) -> Inode:
        inode = self.names.inode(ino)
        await self.names.refresh(inode)
        return inode

    def size_of(self, inode: Inode) -> int:
        writer = self.handles.writer(inode)
        return writer.size if writer is not None else inode.size

    async def setattr(self, ino: int, attr: SetAttr, fh: int | None = None,
                      pid: int | None = None) -> Inode:
        """`pid`: the caller's, so that a long zero-fill stops when it is interrupted."""
        inode = self.names.inode(ino)
        self._writable()
        await self.handles.settled(inode)  # a release still storing it: after that store
        writer = self.handles.writer(inode)
        if attr.size is not None and attr.size != self.size_of(inode):
            if inode.is_dir:
                raise FsError(errno.EISDIR)
            if writer is not None:
                await writer.truncate(attr.size, self._interrupted(pid))
                inode.mtime_ns = inode.ctime_ns = time.time_ns()  # ftruncate(2): both move
            else:
                await self._truncate_closed(inode, attr.size, pid)
        if not inode.known and writer is None:
            await self.xattr_ops.read_meta(inode)  # the change keeps the rest
        changed = False
        for name in ("mode", "uid", "gid", "mtime_ns", "atime_ns"):
            value = getattr(attr, name)
            if value is not None:
                if name == "mode":
                    value = stat.S_IFMT(inode.mode) | stat.S_IMODE(value)
                changed |= getattr(inode, name) != value
                setattr(inode, name, value)
        if changed:
            inode.changed_now()
            await self.attrs.changed(inode, writer)
        return inode

    async def _truncate_closed(self, inode: Inode, size: int, pid: int | None = None) -> None:
        """truncate(2) of a stored file: a new upload on the old object (kept range copied
        server side when >= 5 MiB, else fetched; growth is zero-filled)."""
        await self.names.ensure_meta(inode)
        inode.mtime_ns = time.time_ns()  # truncate(2) changes the mtime
        inode.changed_now()
        existing = Existing(inode.etag, inode.size) if inode.etag is not None else None
        upload = self._new_upload(inode, existing)
        try:
            await upload.truncate(size, self._interrupted(pid))
            inode.etag = await upload.commit()
            inode.size = upload.size
        finally:
            await upload.close()

    # -- rename (renames.py) ----------------------------------------------------------------

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     flags: int = 0) -> None:
        self._writable()
        await self.renames.rename(self.names.dir(old_parent), old_name,
                                  self.names.dir(new_parent), new_name, flags)

    # -- directories ---------------------------------------------------------------------

    def opendir(self, ino: int) -> FileHandleT:
        inode = self.names.dir(ino)
        inode.open_handles += 1
        return self.handles.add(DirHandle(inode))

    async def readdir(self, fh: int, start: int) -> Iterator[tuple[str, Inode, bool]]:
        """Entries from index `start` as (name, inode, counted); `counted` is False for "."
        and "..", which the kernel does not take references on. Lazy: the kernel takes a
        buffer's worth (~100 entries) per call, so building every entry from `start` on would
        make listing a directory of n entries cost O(n^2)."""
        handle = self.handles.get(fh)
        if not isinstance(handle, DirHandle):
            raise FsError(errno.EBADF)
        if start == 0 or handle.entries is None:
            handle.entries = await self.names.read_dir(handle.inode)
        first = max(0, start - 2)  # stored attributes, never defaults (namespace.read_meta)
        await self.names.read_meta(handle.inode.path, handle.entries[first:first + META_BATCH])
        return self.names.entries_from(handle.inode, handle.entries, start)

    def releasedir(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle is not None:
            self.inodes.release(handle.inode)

    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Inode:
        self._writable()
        path = self.names.new_child_path(self.names.dir(parent_ino), name)
        if await self.names.exists(path):
            raise FsError(errno.EEXIST)
        inode = self.inodes.upsert(path, Kind.DIR)
        inode.mode, inode.uid, inode.gid = stat.S_IFDIR | stat.S_IMODE(mode), uid, gid
        inode.mtime_ns = time.time_ns()
        inode.forget_meta()
        inode.attrs_stored()  # by the PUT below
        await self.store.put(self.names.dir_key(path), b"", metadata=inode.metadata())
        self.names.renew(inode)
        inode.lookups += 1
        self.names.created_dir(path)
        self.names.dir(parent_ino).entries_changed()
        return inode

    async def rmdir(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self.names.dir(parent_ino)
        inode = await self.names.resolve(self.names.child_path(parent, name))
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        if not await self.names.dir_is_empty(inode):
            raise FsError(errno.ENOTEMPTY)
        await self.store.delete(self.names.dir_key(inode.path))
        if self.names.dir_objects.pop(inode.path, None) is not None:  # s3fs's old `dir`
            await self.store.delete(self.key(inode))
        self.names.removed(inode.path)
        self.names.dropped(inode.path)
        self.inodes.unlink(inode)
        parent.entries_changed()

    async def unlink(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self.names.dir(parent_ino)
        inode = await self.names.resolve(self.names.child_path(parent, name))
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        await self.handles.settled(inode)  # else a release's store could land after the delete
        for handle in self.handles.writers_of(inode):
            handle.upload.detach()  # still read and written through its descriptors
        if not await self.holds.drop(inode):  # a held file was never stored
            await self.store.delete(self.key(inode))
        self.names.removed(inode.path)
        self.inodes.unlink(inode)
        # A directory that exists only as a prefix vanishes with its last key: ask again.
        parent.expiry.expire()
        parent.entries_changed()

    # -- files ---------------------------------------------------------------------------

    async def create(self, parent_ino: int, name: str, mode: int, uid: int, gid: int,
                     pid: int | None = None,
                     flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     ) -> tuple[Inode, FileHandleT]:
        """open(O_CREAT) of a name the lookup said is absent. Never replace what was not seen:
        when only a cache said so (another client may have stored it since) and the open
        keeps what exists (no O_TRUNC), one HEAD confirms; an object found is opened as it
        is. O_EXCL needs no HEAD: its commit carries If-None-Match: * instead."""
        self._writable()
        path = self.names.new_child_path(self.names.dir(parent_ino), name)
        if not flags & (os.O_TRUNC | os.O_EXCL) and not self.names.absent_here(path):
            info = await self.names.head(path)
            if info is not None:
                log.info("%s: stored by another client since it was listed: opened as it is",
                         path)
                inode = self.inodes.upsert(path, Kind.FILE)
                self.names.set_file_info(inode, info)
                self.names.renew(inode)
                self.names.created(path, DirEntry(name, Kind.FILE, info.size, info.mtime,
                                                  info.etag))
                fh = await self.open(inode.ino, flags, pid)
                inode.lookups += 1
                return inode, fh
        inode = self.inodes.upsert(path, Kind.FILE)
        inode.mode, inode.uid, inode.gid = stat.S_IFREG | stat.S_IMODE(mode), uid, gid
        inode.mtime_ns, inode.size, inode.etag = time.time_ns(), 0, None
        inode.forget_meta()
        fh = self._open_writer(inode, opener=pid, create_only=bool(flags & os.O_EXCL))
        inode.lookups += 1
        self.names.created(path, DirEntry(name, Kind.FILE))
        self.names.dir(parent_ino).entries_changed()
        return inode, fh

    def _open_writer(self, inode: Inode, existing: Existing | None = None,
                     opener: int | None = None, create_only: bool = False) -> FileHandleT:
        upload = self._new_upload(inode, existing, create_only)
        inode.open_handles += 1
        process = openers.process_of(opener) if opener and self.mount_id is not None else None
        fh = self.handles.add(WriteHandle(inode, upload, process))
        self.handles.set_writer(inode, upload)
        return fh

    async def open(self, ino: int, flags: int, pid: int | None = None) -> FileHandleT:
        inode = self.names.inode(ino)
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        await self.handles.settled(inode)  # `touch f && cat f`: after the release's store
        if flags & os.O_ACCMODE != os.O_RDONLY:
            await self.holds.store(inode)  # a held temporary written again: stored as it is
        writer = self.handles.writer(inode)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            reader = None  # being written: reads go through the writer (readback.py)
            if writer is None:
                if inode.etag is None:
                    self.names.set_file_info(inode, await self.store.head(self.key(inode)))
                reader = self.reads.reader(inode, inode.etag, inode.size)
            inode.open_handles += 1
            return self.handles.add(ReadHandle(inode, reader))
        self._writable()
        if writer is None:
            await self.names.ensure_meta(inode)  # a rewrite keeps the stored mode and owner
        if flags & os.O_TRUNC:
            if self.opts.no_clobber and (inode.etag is not None or writer is not None):
                log.warning("%s: not opened for overwriting: the object exists and "
                            "--no-clobber keeps it", inode.path)
                raise FsError(errno.EEXIST, "--no-clobber: the object exists")
            inode.mtime_ns = time.time_ns()  # stat shows the writer's size meanwhile
            inode.changed_now()
            return self._open_writer(inode, opener=pid)
        # Without O_TRUNC the file keeps its bytes: append (O_APPEND, or writes at the end),
        # in-place edits of small files, truncate. The object is the upload's lazy base.
        if writer is not None and writer.etag is not None:
            existing: Existing | None = Existing(writer.etag, writer.size)
        elif writer is None and inode.etag is not None:
            existing = Existing(inode.etag, inode.size)
        else:
            existing = None
        return self._open_writer(inode, existing, opener=pid)

    def _handle(self, fh: int) -> ReadHandle | WriteHandle:
        handle = self.handles.get(fh)
        if not isinstance(handle, ReadHandle | WriteHandle):
            raise FsError(errno.EBADF)
        return handle

    async def read(self, fh: int, offset: int, length: int) -> bytes | memoryview:
        return await self.reads.read(self._handle(fh), offset, length)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        if not isinstance(handle, WriteHandle):
            raise FsError(errno.EBADF)
        # pyfuse3 gives write no caller: a long zero-fill asks the opener (zerofill.py)
        written = await handle.upload.write(offset, data, self._interrupted(handle.opener))
        handle.inode.mtime_ns = handle.inode.ctime_ns = time.time_ns()
        return written

    async def flush(self, fh: int) -> None:
        """close() of one descriptor: commit what was written since the last commit, so that
        its errors reach close(). Not when the opener still holds the file (this close came
        from a forked copy of the descriptor; openers.py): its own close commits later."""
        handle = self._handle(fh)
        if not isinstance(handle, WriteHandle) or handle.upload.state is State.NEW:
            return  # nothing written: the shell's `> f` (dup2, then close) must not commit
        if self.holds.reserve(handle.inode, handle.upload):
            return  # rsync's temporary file: stored by the rename that follows (holds.py)
        if handle.upload.state is State.DIRTY and self._opener_holds(handle):
            log.debug("%s: flush from a copy of the descriptor; the opener (pid %s) still "
                      "has it open: commit deferred to its close", handle.inode.path,
                      handle.opener)
            return
        await self._commit(handle)

    def _opener_holds(self, handle: WriteHandle) -> bool:
        if self.mount_id is None or handle.opener is None:
            return False
        if len(self.handles.writers_of(handle.inode)) != 1:
            return False  # another writer of the file: its descriptors would look like ours
        return openers.holds_writable(handle.opener, self.mount_id, handle.inode.ino)

    async def fsync(self, fh: int) -> None:
        handle = self._handle(fh)
        if isinstance(handle, WriteHandle):
            await self._commit(handle)

    async def _commit(self, handle: WriteHandle) -> None:
        await self._commit_upload(handle.inode, handle.upload)

    async def _commit_upload(self, inode: Inode, upload: Upload) -> None:
        if upload.state in (State.CLEAN, State.DISCARDED) or upload.detached:
            return  # nothing new; or unlinked while open: nothing may appear in S3
        etag = await upload.commit()
        current = self.handles.writer(inode)
        if current is upload or current is None:
            inode.etag, inode.size = etag, upload.size
            inode.committed_at = time.monotonic()
            if not inode.status.changed:  # stat shows what S3 now holds
                inode.apply_metadata(upload.metadata_sent or {})
            self.names.renew(inode)
            self.names.created(inode.path, DirEntry(
                inode.path.rpartition("/")[2], Kind.FILE, inode.size, time.time(), etag))
            if inode.status.changed:
                await self.attrs.store_now(inode)

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle is None:
            return
        try:
            if isinstance(handle, WriteHandle):
                try:
                    await self._release_writer(handle)
                finally:
                    self.handles.closed(handle)
            if not isinstance(handle, DirHandle) and handle.reader is not None:
                await handle.reader.close()  # cancels its prefetch GETs
        finally:
            self.inodes.release(handle.inode)

    async def _release_writer(self, handle: WriteHandle) -> None:
        upload, inode = handle.upload, handle.inode
        if self.holds.hold(inode, upload, self.tasks):
            inode.open_handles += 1  # the held upload keeps the inode until it is stored
            return
        try:
            if upload.detached:
                await upload.discard()  # aborts what went to S3; the bytes are dropped
            elif upload.state in (State.NEW, State.DIRTY):
                await self._commit(handle)
            elif (upload.state is State.CLEAN and inode.status.changed
                  and self.handles.writer(inode) is upload and inode.etag is not None):
                await self.attrs.store_now(inode)  # changed after the last commit
        except FsError as exc:
            # FUSE discards release errors; the log is the only place this can go.
            log.error("%s: upload failed after the last close: %s", inode.path, exc)
        finally:
            await upload.close()
            if self.handles.clear_writer(inode, upload) and upload.state is State.FAILED:
                # S3 holds the old object (or none): forget what this writer told us.
                inode.forget_attrs()
                self.attrs.carried(inode)

    # -- extended attributes: xattrops.py (stored user.* and computed ones) ---------------

    async def getxattr(self, ino: int, name: str) -> bytes:
        return await self.xattr_ops.get(ino, name)

    async def listxattr(self, ino: int) -> list[str]:
        return await self.xattr_ops.names_of(ino)

    async def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        await self.xattr_ops.set(ino, name, value, flags)

    async def removexattr(self, ino: int, name: str) -> None:
        await self.xattr_ops.remove(ino, name)

    def statfs(self) -> dict[str, int]:
        # S3 has no capacity to report; claim plenty so tools that check free space proceed.
        block = 1024 * 1024
        blocks = 2**50 // block
        return {"f_bsize": block, "f_frsize": block, "f_blocks": blocks, "f_bfree": blocks,
                "f_bavail": blocks, "f_files": 2**32, "f_ffree": 2**32, "f_favail": 2**32,
                "f_namemax": 255}

    def _interrupted(self, pid: int | None) -> Callable[[], bool]:
        """For a long zero-fill: has its caller a signal pending, or is the mount stopping?
        (pyfuse3.main() returns only once every request has answered.)"""
        return lambda: self.stopping or openers.signal_pending(pid)

    async def shutdown(self) -> None:
        """The mount is going away: uploads still open are aborted, not completed with
        partial data (closed files were committed at close)."""
        for inode in self.holds.all():
            await self.holds.store(inode)  # closed files are stored, held ones too
        for handle in self.handles.writers():
            await handle.upload.abort("unmounted while open for writing")
            await handle.upload.close()
        await self.attrs.shutdown()
