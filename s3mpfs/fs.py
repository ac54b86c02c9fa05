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
from dataclasses import dataclass, field

import trio

from s3mpfs.config import UploadConfig
from s3mpfs.errors import FsError, NotFound
from s3mpfs.handles import DirHandle, FileHandleT, HandleTable, ReadHandle, WriteHandle
from s3mpfs.inodes import Inode, InodeTable, Kind, join
from s3mpfs.listing import DirEntry, list_dir, valid_name
from s3mpfs.prefetch import ReadBudget, Reader
from s3mpfs.store.base import ObjectInfo, ObjectStore
from s3mpfs.upload import PartBudget, State, Upload

log = logging.getLogger(__name__)

KEY_MAX = 1024  # bytes of UTF-8: S3's limit on a key


@dataclass(frozen=True)
class FsOptions:
    prefix: str = ""
    upload: UploadConfig = field(default_factory=UploadConfig)
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    read_only: bool = False
    # How long attributes and listings learnt from S3 are trusted (the kernel caches them as
    # long); 0 asks S3 every time.
    metadata_ttl: float = 5.0
    # How long "no such name" is remembered; our own create/mkdir/rename forget it at once.
    negative_ttl: float = 1.0


@dataclass(frozen=True)
class SetAttr:
    size: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None


class Filesystem:
    def __init__(self, store: ObjectStore, options: FsOptions | None = None) -> None:
        self.store = store
        self.opts = options or FsOptions()
        self.inodes = InodeTable(uid=self.opts.uid, gid=self.opts.gid)
        self.handles = HandleTable()
        self.budget = PartBudget(self.opts.upload.max_parts_in_memory,
                                 keep_free=self.opts.upload.concurrency + 1)
        self.read_budget = ReadBudget()  # prefetched bytes across all read handles
        self._nursery: trio.Nursery | None = None
        # Complete directory listings by directory path: (valid until, name -> entry). They
        # answer lookups (existence, file or directory) without requests while fresh.
        self._listings: dict[str, tuple[float, dict[str, DirEntry]]] = {}
        # Directories whose first listing page was not complete: lookups there probe by name.
        self._big_dirs: dict[str, float] = {}
        self._negative: dict[str, float] = {}

    def start(self, nursery: trio.Nursery) -> None:
        """Part uploads run as tasks in this nursery, which must outlive every handle."""
        self._nursery = nursery

    # -- helpers -------------------------------------------------------------------------

    def key(self, inode: Inode) -> str:
        return self.opts.prefix + inode.path

    def dir_key(self, path: str) -> str:
        return self.opts.prefix + path + "/" if path else self.opts.prefix

    def _inode(self, ino: int) -> Inode:
        inode = self.inodes.get(ino)
        if inode is None:
            raise FsError(errno.ENOENT, f"inode {ino} unknown")
        return inode

    def _dir(self, ino: int) -> Inode:
        inode = self._inode(ino)
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        return inode

    def _child_path(self, parent: Inode, name: str) -> str:
        if not valid_name(name):
            raise FsError(errno.ENAMETOOLONG if len(name.encode()) > 255 else errno.EINVAL)
        path = join(parent.path, name)
        if len((self.opts.prefix + path + "/").encode()) > KEY_MAX:
            raise FsError(errno.ENAMETOOLONG, "S3 keys are at most 1,024 bytes")
        return path

    def _writable(self) -> None:
        if self.opts.read_only:
            raise FsError(errno.EROFS)

    def _fresh(self) -> float:
        return time.monotonic() + self.opts.metadata_ttl

    def _new_upload(self, inode: Inode) -> Upload:
        assert self._nursery is not None, "Filesystem.start() was not called"
        return Upload(self.store, self.key(inode), cfg=self.opts.upload, budget=self.budget,
                      nursery=self._nursery, metadata=inode.metadata)

    @staticmethod
    def _set_file_info(inode: Inode, info: ObjectInfo) -> None:
        inode.size, inode.etag = info.size, info.etag
        inode.mtime_ns = int(info.mtime * 1e9)
        inode.apply_metadata(info.metadata)

    # -- names ---------------------------------------------------------------------------

    async def _head(self, path: str) -> ObjectInfo | None:
        try:
            return await self.store.head(self.opts.prefix + path)
        except NotFound:
            return None

    async def _stat_remote(self, path: str) -> tuple[ObjectInfo | None, bool]:
        """HEAD the file key and list the directory prefix, concurrently."""
        info: ObjectInfo | None = None
        is_dir = False

        async def head() -> None:
            nonlocal info
            info = await self._head(path)

        async def probe_dir() -> None:
            nonlocal is_dir
            page = await self.store.list_page(self.dir_key(path), max_keys=1)
            is_dir = bool(page.objects or page.prefixes)

        async with trio.open_nursery() as n:
            n.start_soon(head)
            n.start_soon(probe_dir)
        return info, is_dir

    # Listings and the negative cache. Lookups are answered, cheapest first, by: an inode we
    # know (being written, or fresh with its x-amz-meta), the parent's fresh complete listing
    # (a name not in it does not exist; a file in it whose x-amz-meta we do not know costs one
    # HEAD, so rsync sees the stored mtime), the negative cache, and otherwise HEAD + a prefix
    # probe. A lookup miss in a directory without a listing lists its first page (one request)
    # and keeps it when that page is the whole directory, so the many lookups of new names that
    # cp -r, tar and rsync make cost nothing. ListObjectsV2 carries no x-amz-meta, so `ls -l`
    # (readdirplus) shows listing attributes (LastModified as mtime) for objects this mount has
    # not HEADed yet; metadata already learnt is kept while the ETag is unchanged.

    def _listing(self, dir_path: str) -> dict[str, DirEntry] | None:
        cached = self._listings.get(dir_path)
        if cached is None or time.monotonic() >= cached[0]:
            return None
        return cached[1]

    def _remember_listing(self, dir_path: str, entries: list[DirEntry]) -> None:
        if self.opts.metadata_ttl > 0:
            self._listings[dir_path] = (self._fresh(), {e.name: e for e in entries})
            self._big_dirs.pop(dir_path, None)

    def _note_created(self, path: str, entry: DirEntry) -> None:
        self._negative.pop(path, None)
        parent, _, name = path.rpartition("/")
        listing = self._listing(parent)
        if listing is not None:
            listing[name] = entry

    def _note_removed(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        listing = self._listing(parent)
        if listing is not None:
            listing.pop(name, None)
        if self.opts.negative_ttl > 0:
            self._negative[path] = time.monotonic() + self.opts.negative_ttl

    async def _parent_listing(self, dir_path: str) -> dict[str, DirEntry] | None:
        listing = self._listing(dir_path)
        if listing is not None or self.opts.metadata_ttl <= 0:
            return listing
        if time.monotonic() < self._big_dirs.get(dir_path, 0.0):
            return None
        entries = await list_dir(self.store, self.dir_key(dir_path), max_pages=1)
        if entries is None:
            self._big_dirs[dir_path] = self._fresh()
            return None
        entries += self._pending_children(dir_path, {e.name for e in entries})
        self._remember_listing(dir_path, entries)
        return self._listing(dir_path)

    async def _resolve(self, path: str) -> Inode:
        """The inode for path, from memory while fresh or being written, else from S3."""
        inode = self.inodes.by_path(path)
        now = time.monotonic()
        if inode is not None and (inode.writer is not None or inode.ino == 1
                                  or (now < inode.valid_until and inode.meta_known)):
            return inode
        parent, _, name = path.rpartition("/")
        listing = await self._parent_listing(parent)
        if listing is not None:
            entry = listing.get(name)
            if entry is None:
                raise FsError(errno.ENOENT)
            inode = self._entry_inode(parent, entry)
            if inode.is_dir or inode.meta_known:
                return inode
        elif now < self._negative.get(path, 0.0):
            raise FsError(errno.ENOENT)
        if listing is not None:  # a listed file whose x-amz-meta we do not know yet
            info, is_dir = await self._head(path), False
        else:
            info, is_dir = await self._stat_remote(path)
        if is_dir:
            if info is not None:
                log.warning("%r is both an object and a prefix; showing the directory", path)
            inode = self.inodes.upsert(path, Kind.DIR)
        elif info is not None:
            inode = self.inodes.upsert(path, Kind.FILE)
            self._set_file_info(inode, info)
        else:
            self._note_removed(path)
            raise FsError(errno.ENOENT)
        inode.valid_until = self._fresh()
        return inode

    async def lookup(self, parent_ino: int, name: str) -> Inode:
        parent = self._dir(parent_ino)
        if name == ".":
            inode = parent
        elif name == "..":
            inode = self.inodes.by_path(parent.path.rpartition("/")[0]) or parent
        else:
            inode = await self._resolve(self._child_path(parent, name))
        inode.lookups += 1
        return inode

    def remember(self, inode: Inode) -> None:
        """The kernel took a reference from a readdirplus entry."""
        inode.lookups += 1

    def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, count in items:
            self.inodes.forget(ino, count)

    async def getattr(self, ino: int) -> Inode:
        inode = self._inode(ino)
        if (not inode.is_dir and inode.writer is None and inode.open_handles == 0
                and time.monotonic() >= inode.valid_until):
            try:
                self._set_file_info(inode, await self.store.head(self.key(inode)))
                inode.valid_until = self._fresh()
            except NotFound:
                pass  # gone remotely; the next lookup says ENOENT
        return inode

    def size_of(self, inode: Inode) -> int:
        return inode.writer.size if inode.writer is not None else inode.size

    async def setattr(self, ino: int, attr: SetAttr, fh: int | None = None) -> Inode:
        inode = self._inode(ino)
        self._writable()
        writer = inode.writer
        if attr.size is not None and attr.size != self.size_of(inode):
            await self._truncate(inode, writer, attr.size)
        changed = False
        for name in ("mode", "uid", "gid", "mtime_ns"):
            value = getattr(attr, name)
            if value is not None:
                if name == "mode":
                    value = stat.S_IFMT(inode.mode) | stat.S_IMODE(value)
                changed |= getattr(inode, name) != value
                setattr(inode, name, value)
        if not changed:
            return inode
        if writer is not None and writer.metadata_sent is None:
            pass  # rides on CreateMultipartUpload / PutObject
        elif writer is not None:
            inode.meta_changed = True  # applied after the upload completes (flush/release)
        else:
            await self._store_metadata(inode)
        return inode

    async def _truncate(self, inode: Inode, writer: Upload | None, size: int) -> None:
        if size == 0 and writer is not None and writer.truncate_to_zero():
            inode.size = 0
            return
        if size == 0 and writer is None and not inode.is_dir:
            inode.etag = await self.store.put(self.key(inode), b"", metadata=inode.metadata())
            inode.size = 0
            return
        log.error("%s: truncate to %d bytes is not supported (only to 0)", inode.path, size)
        raise FsError(errno.ENOTSUP)

    async def _store_metadata(self, inode: Inode) -> None:
        """Rewrite x-amz-meta-* of a stored object: CopyObject onto itself (S3 has no other
        way to change metadata), pinned to the ETag we know."""
        if inode.is_dir:
            await self.store.put(self.dir_key(inode.path), b"", metadata=inode.metadata())
            return
        inode.etag = await self.store.copy(self.key(inode), self.key(inode),
                                           metadata=inode.metadata(), src_etag=inode.etag)
        inode.meta_changed = False

    # -- directories ---------------------------------------------------------------------

    def opendir(self, ino: int) -> FileHandleT:
        inode = self._dir(ino)
        inode.open_handles += 1
        return self.handles.add(DirHandle(inode))

    async def readdir(self, fh: int, start: int) -> list[tuple[str, Inode, bool]]:
        """Entries from index `start` as (name, inode, counted); `counted` is False for "."
        and "..", which the kernel does not take references on."""
        handle = self.handles.get(fh)
        if not isinstance(handle, DirHandle):
            raise FsError(errno.EBADF)
        if start == 0 or handle.entries is None:
            handle.entries = await self._list(handle.inode)
        out: list[tuple[str, Inode, bool]] = []
        parent = self.inodes.by_path(handle.inode.path.rpartition("/")[0]) or handle.inode
        fixed = [(".", handle.inode, False), ("..", parent, False)]
        for index in range(start, len(handle.entries) + 2):
            if index < 2:
                out.append(fixed[index])
                continue
            entry = handle.entries[index - 2]
            out.append((entry.name, self._entry_inode(handle.inode.path, entry), True))
        return out

    async def _list(self, inode: Inode) -> list[DirEntry]:
        entries = await list_dir(self.store, self.dir_key(inode.path))
        assert entries is not None
        entries += self._pending_children(inode.path, {e.name for e in entries})
        entries.sort(key=lambda e: e.name)
        self._remember_listing(inode.path, entries)
        return entries

    def _pending_children(self, dir_path: str, listed: set[str]) -> list[DirEntry]:
        """Files being written are not in S3 yet, but ls must show them."""
        out = []
        for child in self.inodes.children(dir_path):
            name = child.path.rpartition("/")[2]
            if name not in listed and child.writer is not None:
                out.append(DirEntry(name, child.kind, self.size_of(child)))
        return out

    def _entry_inode(self, parent_path: str, entry: DirEntry) -> Inode:
        inode = self.inodes.upsert(join(parent_path, entry.name), entry.kind)
        if entry.kind is Kind.FILE and inode.writer is None and (
                entry.etag != inode.etag or inode.etag is None):
            # A new or changed object: listing attributes until a lookup HEADs it.
            inode.size, inode.etag = entry.size, entry.etag
            inode.mtime_ns = int(entry.mtime * 1e9)
            inode.meta_known = False
        inode.valid_until = self._fresh()
        return inode

    def releasedir(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle is not None:
            self.inodes.release(handle.inode)

    async def mkdir(self, parent_ino: int, name: str, mode: int, uid: int, gid: int) -> Inode:
        self._writable()
        parent = self._dir(parent_ino)
        path = self._child_path(parent, name)
        if self.inodes.by_path(path) is not None or (await self._exists(path)):
            raise FsError(errno.EEXIST)
        inode = self.inodes.upsert(path, Kind.DIR)
        inode.mode, inode.uid, inode.gid = stat.S_IFDIR | stat.S_IMODE(mode), uid, gid
        inode.mtime_ns = time.time_ns()
        await self.store.put(self.dir_key(path), b"", metadata=inode.metadata())
        inode.valid_until = self._fresh()
        inode.lookups += 1
        self._note_created(path, DirEntry(name, Kind.DIR))
        self._remember_listing(path, [])  # a new directory is empty: lookups there are free
        return inode

    async def _exists(self, path: str) -> bool:
        try:
            await self._resolve(path)
        except FsError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    async def rmdir(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self._dir(parent_ino)
        inode = await self._resolve(self._child_path(parent, name))
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        dir_key = self.dir_key(inode.path)
        page = await self.store.list_page(dir_key, max_keys=2)
        others = [o for o in page.objects if o.key != dir_key]
        pending = [c for c in self.inodes.children(inode.path) if c.writer is not None]
        if others or page.prefixes or pending:
            raise FsError(errno.ENOTEMPTY)
        await self.store.delete(dir_key)
        self._note_removed(inode.path)
        self._listings.pop(inode.path, None)
        self.inodes.unlink(inode)

    async def unlink(self, parent_ino: int, name: str) -> None:
        self._writable()
        parent = self._dir(parent_ino)
        inode = await self._resolve(self._child_path(parent, name))
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        for handle in self.handles.writers():
            if handle.inode is inode:
                await handle.upload.discard()
        await self.store.delete(self.key(inode))
        inode.writer = None
        self._note_removed(inode.path)
        self.inodes.unlink(inode)

    # -- files ---------------------------------------------------------------------------

    async def create(self, parent_ino: int, name: str, mode: int, uid: int,
                     gid: int) -> tuple[Inode, FileHandleT]:
        self._writable()
        parent = self._dir(parent_ino)
        path = self._child_path(parent, name)
        inode = self.inodes.upsert(path, Kind.FILE)
        inode.mode, inode.uid, inode.gid = stat.S_IFREG | stat.S_IMODE(mode), uid, gid
        inode.mtime_ns, inode.size, inode.etag = time.time_ns(), 0, None
        inode.meta_known = True
        fh = self._open_writer(inode)
        inode.lookups += 1
        self._note_created(path, DirEntry(name, Kind.FILE))
        return inode, fh

    def _open_writer(self, inode: Inode) -> FileHandleT:
        upload = self._new_upload(inode)
        inode.writer = upload
        inode.open_handles += 1
        return self.handles.add(WriteHandle(inode, upload))

    async def open(self, ino: int, flags: int) -> FileHandleT:
        inode = self._inode(ino)
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            writer = inode.writer
            if writer is not None and writer.state in (State.NEW, State.DIRTY):
                log.warning("%s: opened for reading while being written; reads see the "
                            "object from its last close", inode.path)
            if inode.etag is None:
                self._set_file_info(inode, await self.store.head(self.key(inode)))
            inode.open_handles += 1
            reader = Reader(self.store, self.key(inode), inode.etag, inode.size,
                            nursery=self._nursery, budget=self.read_budget)
            return self.handles.add(ReadHandle(inode, reader))
        self._writable()
        if not flags & os.O_TRUNC and self.size_of(inode) > 0:
            log.error("%s: opened for writing without O_TRUNC; s3mpfs can replace objects "
                      "but not modify them in place yet", inode.path)
            raise FsError(errno.ENOTSUP)
        inode.mtime_ns = time.time_ns()
        inode.size = 0
        return self._open_writer(inode)

    def _handle(self, fh: int) -> ReadHandle | WriteHandle:
        handle = self.handles.get(fh)
        if not isinstance(handle, ReadHandle | WriteHandle):
            raise FsError(errno.EBADF)
        return handle

    async def read(self, fh: int, offset: int, length: int) -> bytes:
        handle = self._handle(fh)
        if isinstance(handle, WriteHandle):
            log.error("%s: read on a descriptor opened for writing: not supported while the "
                      "file streams to S3", handle.inode.path)
            raise FsError(errno.EINVAL)
        return await handle.reader.read(offset, length)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        if not isinstance(handle, WriteHandle):
            raise FsError(errno.EBADF)
        written = await handle.upload.write(offset, data)
        handle.inode.mtime_ns = time.time_ns()
        return written

    async def flush(self, fh: int) -> None:
        handle = self._handle(fh)
        if isinstance(handle, WriteHandle) and handle.upload.state is not State.NEW:
            await self._commit(handle)

    async def fsync(self, fh: int) -> None:
        handle = self._handle(fh)
        if isinstance(handle, WriteHandle):
            await self._commit(handle)

    async def _commit(self, handle: WriteHandle) -> None:
        upload, inode = handle.upload, handle.inode
        if upload.state in (State.CLEAN, State.DISCARDED):
            return
        etag = await upload.commit()
        if inode.writer is upload or inode.writer is None:
            inode.etag, inode.size = etag, upload.size
            sent = upload.metadata_sent or {}
            inode.apply_metadata(sent)
            inode.valid_until = self._fresh()
            self._note_created(inode.path, DirEntry(
                inode.path.rpartition("/")[2], Kind.FILE, inode.size, time.time(), etag))
            if inode.meta_changed:
                await self._store_metadata(inode)

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if handle is None:
            return
        try:
            if isinstance(handle, WriteHandle):
                await self._release_writer(handle)
            elif isinstance(handle, ReadHandle):
                await handle.reader.close()  # cancels its prefetch GETs
        finally:
            self.inodes.release(handle.inode)

    async def _release_writer(self, handle: WriteHandle) -> None:
        upload, inode = handle.upload, handle.inode
        try:
            if upload.state in (State.NEW, State.DIRTY):
                await self._commit(handle)
        except FsError as exc:
            # FUSE discards release errors; the log is the only place this can go.
            log.error("%s: upload failed after the last close: %s", inode.path, exc)
        finally:
            await upload.close()
            if inode.writer is upload:
                inode.writer = None
                if upload.state is State.FAILED:
                    inode.valid_until = 0.0  # S3 holds the old object (or none): ask again

    def statfs(self) -> dict[str, int]:
        # S3 has no capacity to report; claim plenty so tools that check free space proceed.
        block = 1024 * 1024
        blocks = 2**50 // block
        return {"f_bsize": block, "f_frsize": block, "f_blocks": blocks, "f_bfree": blocks,
                "f_bavail": blocks, "f_files": 2**32, "f_ffree": 2**32, "f_favail": 2**32,
                "f_namemax": 255}

    async def shutdown(self) -> None:
        """The mount is going away: uploads still open are aborted, not completed with
        partial data (closed files were committed at close)."""
        for handle in self.handles.writers():
            await handle.upload.abort("unmounted while open for writing")
            await handle.upload.close()
