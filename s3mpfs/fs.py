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
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from s3mpfs import openers, xattrs
from s3mpfs.config import MAX_PART_SIZE, UploadConfig
from s3mpfs.errors import FsError, NotFound, StoreError
from s3mpfs.handles import DirHandle, FileHandleT, HandleTable, ReadHandle, WriteHandle
from s3mpfs.inodes import Inode, InodeTable, Kind, join
from s3mpfs.listing import DirEntry, list_dir, valid_name
from s3mpfs.objcopy import copy_object
from s3mpfs.prefetch import ReadBudget, Reader
from s3mpfs.store.base import ObjectInfo, ObjectStore
from s3mpfs.upload import Existing, PartBudget, State, Upload

log = logging.getLogger(__name__)

KEY_MAX = 1024  # bytes of UTF-8: S3's limit on a key
# renameat2(2) flags
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# A chmod/chown/utimens on a just-written dot-file (rsync's ".name.XXXXXX" temp files) waits
# this long for the rename rsync does next, so the rename's CopyObject carries the new metadata
# and the separate self-copy is saved (3 requests per rsync'd file instead of 4). The risk: a
# daemon crash inside the window loses that attribute change (never data; the next rsync
# re-sends the file). Every other attribute change is stored at once. 2 s leaves room for a
# loaded machine between rsync's close, utimens and rename.
FOLD_WINDOW = 2.0
# Objects copied at once when a directory is renamed.
RENAME_PARALLEL = 16


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
    # Permission bits of objects and directories that carry no x-amz-meta-mode.
    file_mode: int = 0o644
    dir_mode: int = 0o755
    # --no-clobber: never replace an object (O_TRUNC on one and rename onto one: EEXIST).
    no_clobber: bool = False


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
        self.inodes = InodeTable(uid=self.opts.uid, gid=self.opts.gid,
                                 file_mode=self.opts.file_mode, dir_mode=self.opts.dir_mode)
        self.handles = HandleTable()
        self.budget = PartBudget(
            self.opts.upload.max_parts_in_memory,
            keep_bytes=(self.opts.upload.concurrency + 1) * self.opts.upload.part_size)
        self.read_budget = ReadBudget()  # prefetched bytes across all read handles
        self._nursery: trio.Nursery | None = None
        # Complete directory listings by directory path: (valid until, name -> entry). They
        # answer lookups (existence, file or directory) without requests while fresh.
        self._listings: dict[str, tuple[float, dict[str, DirEntry]]] = {}
        # Directories whose first listing page was not complete: lookups there probe by name.
        self._big_dirs: dict[str, float] = {}
        self._negative: dict[str, float] = {}
        self._pending_meta: set[Inode] = set()
        # Our mount's ID in /proc/<pid>/fdinfo (mount.py sets it once mounted): lets flush tell
        # a forked child's close from the opener's (openers.py). None: every flush commits.
        self.mount_id: int | None = None

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

    def _new_upload(self, inode: Inode, existing: Existing | None = None) -> Upload:
        assert self._nursery is not None, "Filesystem.start() was not called"
        return Upload(self.store, self.key(inode), cfg=self.opts.upload, budget=self.budget,
                      nursery=self._nursery, metadata=inode.metadata, existing=existing)

    def _set_file_info(self, inode: Inode, info: ObjectInfo) -> None:
        """Attributes of the object HEAD found: what its x-amz-meta says, else the defaults
        (never what an earlier object under the same name carried)."""
        inode.size, inode.etag = info.size, info.etag
        inode.mtime_ns = int(info.mtime * 1e9)
        inode.mode = stat.S_IFREG | self.inodes.file_mode
        inode.uid, inode.gid = self.inodes.uid, self.inodes.gid
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
                                  or inode.meta_changed
                                  or (now < inode.valid_until and inode.meta_known)):
            return inode
        parent, _, name = path.rpartition("/")
        listing = await self._parent_listing(parent)
        if listing is not None:
            entry = listing.get(name)
            if entry is None:
                raise FsError(errno.ENOENT)
            inode = self._entry_inode(parent, entry)
            if inode.is_dir:
                await self._dir_meta(inode)
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
            await self._dir_meta(inode)
        elif info is not None:
            inode = self.inodes.upsert(path, Kind.FILE)
            self._set_file_info(inode, info)
        else:
            self._note_removed(path)
            raise FsError(errno.ENOENT)
        inode.valid_until = self._fresh()
        return inode

    async def _dir_meta(self, inode: Inode) -> None:
        """A directory's mode and times live on its marker object "dir/" (HEAD once)."""
        if inode.meta_known:
            return
        marker = await self._head(inode.path + "/")
        if marker is not None:
            inode.apply_metadata(marker.metadata)
        inode.meta_known = True

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
                and not inode.meta_changed and time.monotonic() >= inode.valid_until):
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
            if inode.is_dir:
                raise FsError(errno.EISDIR)
            if writer is not None:
                await writer.truncate(attr.size)
            else:
                await self._truncate_closed(inode, attr.size)
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
        pending = writer is not None and writer.state in (State.NEW, State.DIRTY)
        if pending and writer is not None and writer.metadata_sent is None:
            pass  # rides on CreateMultipartUpload / PutObject
        elif pending:
            inode.meta_changed = True  # applied after the upload completes (flush/release)
        elif inode.etag is None and not inode.is_dir:
            pass  # nothing stored yet (an upload failed): kept in memory only
        elif self._foldable(inode):
            inode.meta_changed = True
            if inode not in self._pending_meta:
                self._pending_meta.add(inode)
                assert self._nursery is not None
                self._nursery.start_soon(self._store_metadata_later, inode)
        else:
            await self._store_metadata(inode)
        return inode

    def _foldable(self, inode: Inode) -> bool:
        name = inode.path.rpartition("/")[2]
        return (name.startswith(".") and not inode.is_dir and self._nursery is not None
                and time.monotonic() - inode.committed_at < FOLD_WINDOW)

    async def _store_metadata_later(self, inode: Inode) -> None:
        await trio.sleep(FOLD_WINDOW)
        await self._flush_pending_meta(inode)

    async def _flush_pending_meta(self, inode: Inode) -> None:
        self._pending_meta.discard(inode)
        if not inode.meta_changed or inode.writer is not None:
            return
        try:
            await self._store_metadata(inode)
        except (FsError, StoreError) as exc:
            log.error("%s: could not store changed attributes: %s", inode.path, exc)

    async def _truncate_closed(self, inode: Inode, size: int) -> None:
        """truncate(2) of a stored file: a new upload on the old object (kept range copied
        server side when >= 5 MiB, else fetched; growth is zero-filled)."""
        await self._ensure_meta(inode)
        inode.mtime_ns = time.time_ns()  # truncate(2) changes the mtime
        existing = Existing(inode.etag, inode.size) if inode.etag is not None else None
        upload = self._new_upload(inode, existing)
        try:
            await upload.truncate(size)
            inode.etag = await upload.commit()
            inode.size = upload.size
        finally:
            await upload.close()

    async def _ensure_meta(self, inode: Inode) -> None:
        """HEAD a file whose x-amz-meta we do not know, so a rewrite keeps mode and owner."""
        if inode.meta_known and inode.etag is not None:
            return
        info = await self._head(inode.path)
        if info is not None:
            self._set_file_info(inode, info)

    async def _store_metadata(self, inode: Inode) -> None:
        """Rewrite x-amz-meta-* of a stored object: CopyObject onto itself (S3 has no other
        way to change metadata), pinned to the ETag we know."""
        inode.meta_changed = False
        if inode.is_dir:
            await self.store.put(self.dir_key(inode.path), b"", metadata=inode.metadata())
            return
        old = inode.etag
        inode.etag = await copy_object(self.store, self.key(inode), self.key(inode),
                                       size=inode.size, etag=inode.etag,
                                       metadata=inode.metadata())
        for handle in self.handles.writers():  # an open, unchanged file stands on the copy
            if handle.inode is inode and handle.upload.etag == old:
                handle.upload.etag = inode.etag

    # -- rename ----------------------------------------------------------------------------

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     flags: int = 0) -> None:
        """rename(2) as S3 allows: a file is copied server side, then the old key deleted; a
        directory copies every key below it (in parallel), then deletes the old ones. Neither
        is atomic: a crash midway leaves the copies *and* the originals, never neither."""
        self._writable()
        if flags & RENAME_EXCHANGE:
            log.error("rename: RENAME_EXCHANGE cannot be done on S3 (no atomic swap)")
            raise FsError(errno.EINVAL)
        src_path = self._child_path(self._dir(old_parent), old_name)
        dst_path = self._child_path(self._dir(new_parent), new_name)
        inode = await self._resolve(src_path)
        if src_path == dst_path:
            return
        try:
            target: Inode | None = await self._resolve(dst_path)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            target = None
        if target is not None:
            if flags & RENAME_NOREPLACE or (self.opts.no_clobber and not target.is_dir):
                raise FsError(errno.EEXIST)
            if target.is_dir and not inode.is_dir:
                raise FsError(errno.EISDIR)
            if inode.is_dir and not target.is_dir:
                raise FsError(errno.ENOTDIR)
            if target.is_dir and not await self._dir_is_empty(target):
                raise FsError(errno.ENOTEMPTY)
        if inode.is_dir:
            if dst_path.startswith(src_path + "/"):
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            await self._rename_dir(inode, dst_path, target)
        else:
            await self._rename_file(inode, dst_path, target)
        self._note_removed(src_path)
        self._note_created(dst_path, DirEntry(dst_path.rpartition("/")[2], inode.kind,
                                              self.size_of(inode), time.time(), inode.etag))

    async def _move(self, src: str, dst: str, etag: str, size: int,
                    metadata: dict[str, str] | None = None) -> str:
        new_etag = await copy_object(self.store, src, dst, size=size, etag=etag,
                                     metadata=metadata)
        await self.store.delete(src)
        return new_etag

    def _drop_target(self, target: Inode | None) -> None:
        if target is not None:
            target.writer = None
            self.inodes.unlink(target)

    async def _rename_file(self, inode: Inode, dst_path: str, target: Inode | None) -> None:
        new_key = self.opts.prefix + dst_path
        for handle in self.handles.writers():
            if handle.inode is target:
                await handle.upload.discard()
        self._drop_target(target)
        uploads = [h.upload for h in self.handles.writers() if h.inode is inode]
        if uploads:
            old_key = self.key(inode)
            # An old object no writer committed (the file was opened with O_TRUNC) goes too.
            stale = inode.etag is not None and all(u.etag is None for u in uploads)
            for upload in uploads:
                await upload.rename(new_key, self._move)
                if upload.etag is not None:  # what S3 holds now, under the new name
                    inode.etag, inode.size = upload.etag, upload.committed_size
            if stale:
                await self.store.delete(old_key)
        else:
            metadata = None
            if inode.meta_changed:  # a folded chmod/utimens rides on this copy
                metadata = inode.metadata()
            elif inode.size > MAX_PART_SIZE:  # beyond CopyObject: a multipart copy
                await self._ensure_meta(inode)
                metadata = inode.metadata()
            if inode.etag is None:
                await self._ensure_meta(inode)
            assert inode.etag is not None
            inode.etag = await self._move(self.key(inode), new_key, inode.etag, inode.size,
                                          metadata)
            inode.meta_changed = False
            self._pending_meta.discard(inode)
        self.inodes.rename(inode, dst_path)
        if uploads and inode.meta_changed and inode.etag is not None:
            await self._store_metadata(inode)  # set while the upload was open

    async def _dir_is_empty(self, inode: Inode) -> bool:
        dir_key = self.dir_key(inode.path)
        page = await self.store.list_page(dir_key, max_keys=2)
        others = [o for o in page.objects if o.key != dir_key]
        pending = [c for c in self.inodes.children(inode.path) if c.writer is not None]
        return not (others or page.prefixes or pending)

    async def _rename_dir(self, inode: Inode, dst_path: str, target: Inode | None) -> None:
        src_prefix, dst_prefix = self.dir_key(inode.path), self.dir_key(dst_path)
        objects: list[ObjectInfo] = []
        token: str | None = None
        while True:
            page = await self.store.list_page(src_prefix, delimiter=None, token=token)
            objects += page.objects
            token = page.next_token
            if token is None:
                break
        if target is not None:
            await self.store.delete(dst_prefix)  # the empty target's marker
            self._drop_target(target)
        limit = trio.Semaphore(RENAME_PARALLEL)

        async def copy_one(obj: ObjectInfo) -> None:
            async with limit:
                await copy_object(self.store, obj.key, dst_prefix + obj.key[len(src_prefix):],
                                  size=obj.size, etag=obj.etag or None, metadata=None)

        async with trio.open_nursery() as nursery:
            for obj in objects:
                nursery.start_soon(copy_one, obj)
        if not objects:  # an implicit, empty directory: give the new name a marker
            await self.store.put(dst_prefix, b"", metadata=inode.metadata())
        for handle in self.handles.writers():
            if handle.inode.path.startswith(inode.path + "/"):
                rest = handle.inode.path[len(inode.path):]
                await handle.upload.rename(self.opts.prefix + dst_path + rest, self._move)

        async def delete_one(obj: ObjectInfo) -> None:
            async with limit:
                await self.store.delete(obj.key)

        async with trio.open_nursery() as nursery:
            for obj in objects:
                nursery.start_soon(delete_one, obj)
        for path in [p for p in self._listings if p == inode.path
                     or p.startswith(inode.path + "/")]:
            del self._listings[path]
        log.info("renamed directory %s -> %s: %d objects copied", inode.path, dst_path,
                 len(objects))
        self.inodes.rename(inode, dst_path)

    # -- directories ---------------------------------------------------------------------

    def opendir(self, ino: int) -> FileHandleT:
        inode = self._dir(ino)
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
            handle.entries = await self._list(handle.inode)
        return self._entries_from(handle, handle.entries, start)

    def _entries_from(self, handle: DirHandle, entries: list[DirEntry],
                      start: int) -> Iterator[tuple[str, Inode, bool]]:
        parent = self.inodes.by_path(handle.inode.path.rpartition("/")[0]) or handle.inode
        fixed = [(".", handle.inode, False), ("..", parent, False)]
        for index in range(start, len(entries) + 2):
            if index < 2:
                yield fixed[index]
                continue
            entry = entries[index - 2]
            yield entry.name, self._entry_inode(handle.inode.path, entry), True

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
        if await self._exists(path):
            raise FsError(errno.EEXIST)
        inode = self.inodes.upsert(path, Kind.DIR)
        inode.mode, inode.uid, inode.gid = stat.S_IFDIR | stat.S_IMODE(mode), uid, gid
        inode.mtime_ns = time.time_ns()
        inode.meta_known = True
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
        if not await self._dir_is_empty(inode):
            raise FsError(errno.ENOTEMPTY)
        await self.store.delete(self.dir_key(inode.path))
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
        # A directory that exists only as a prefix vanishes with its last key: ask again.
        parent.valid_until = 0.0

    # -- files ---------------------------------------------------------------------------

    async def create(self, parent_ino: int, name: str, mode: int, uid: int,
                     gid: int, pid: int | None = None) -> tuple[Inode, FileHandleT]:
        self._writable()
        parent = self._dir(parent_ino)
        path = self._child_path(parent, name)
        inode = self.inodes.upsert(path, Kind.FILE)
        inode.mode, inode.uid, inode.gid = stat.S_IFREG | stat.S_IMODE(mode), uid, gid
        inode.mtime_ns, inode.size, inode.etag = time.time_ns(), 0, None
        inode.meta_known = True
        fh = self._open_writer(inode, opener=pid)
        inode.lookups += 1
        self._note_created(path, DirEntry(name, Kind.FILE))
        return inode, fh

    def _open_writer(self, inode: Inode, existing: Existing | None = None,
                     opener: int | None = None) -> FileHandleT:
        upload = self._new_upload(inode, existing)
        inode.writer = upload
        inode.open_handles += 1
        process = openers.process_of(opener) if opener and self.mount_id is not None else None
        return self.handles.add(WriteHandle(inode, upload, process))

    async def open(self, ino: int, flags: int, pid: int | None = None) -> FileHandleT:
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
            assert self._nursery is not None, "Filesystem.start() was not called"
            inode.open_handles += 1
            reader = Reader(self.store, self.key(inode), inode.etag, inode.size,
                            nursery=self._nursery, budget=self.read_budget)
            return self.handles.add(ReadHandle(inode, reader))
        self._writable()
        if inode.writer is None:
            await self._ensure_meta(inode)  # a rewrite keeps the stored mode and owner
        if flags & os.O_TRUNC:
            if self.opts.no_clobber and (inode.etag is not None or inode.writer is not None):
                log.warning("%s: not opened for overwriting: the object exists and "
                            "--no-clobber keeps it", inode.path)
                raise FsError(errno.EEXIST, "--no-clobber: the object exists")
            inode.mtime_ns = time.time_ns()  # stat shows the writer's size meanwhile
            return self._open_writer(inode, opener=pid)
        # Without O_TRUNC the file keeps its bytes: append (O_APPEND, or writes at the end),
        # in-place edits of small files, truncate. The object is the upload's lazy base.
        writer = inode.writer
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
        handle = self._handle(fh)
        if isinstance(handle, WriteHandle):
            log.error("%s: read on a descriptor opened for writing: not supported while the "
                      "file streams to S3", handle.inode.path)
            raise FsError(errno.EINVAL)
        try:
            return await handle.reader.read(offset, length)
        except FsError as exc:
            inode = handle.inode
            if exc.errno == errno.ESTALE and inode.etag == handle.reader.etag:
                inode.etag, inode.valid_until = None, 0.0  # replaced: the next open asks S3
            raise

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        if not isinstance(handle, WriteHandle):
            raise FsError(errno.EBADF)
        written = await handle.upload.write(offset, data)
        handle.inode.mtime_ns = time.time_ns()
        return written

    async def flush(self, fh: int) -> None:
        """close() of one descriptor: commit what was written since the last commit, so that
        its errors reach close(). Not when the opener still holds the file (this close came
        from a forked copy of the descriptor; openers.py): its own close commits later."""
        handle = self._handle(fh)
        if not isinstance(handle, WriteHandle) or handle.upload.state is State.NEW:
            return  # nothing written: the shell's `> f` (dup2, then close) must not commit
        if handle.upload.state is State.DIRTY and self._opener_holds(handle):
            log.debug("%s: flush from a copy of the descriptor; the opener (pid %s) still "
                      "has it open: commit deferred to its close", handle.inode.path,
                      handle.opener)
            return
        await self._commit(handle)

    def _opener_holds(self, handle: WriteHandle) -> bool:
        if self.mount_id is None or handle.opener is None:
            return False
        ino = handle.inode.ino
        if sum(h.inode.ino == ino for h in self.handles.writers()) != 1:
            return False  # another writer of the file: its descriptors would look like ours
        return openers.holds_writable(handle.opener, self.mount_id, ino)

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
            inode.committed_at = time.monotonic()
            if not inode.meta_changed:  # stat shows what S3 now holds
                inode.apply_metadata(upload.metadata_sent or {})
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
            elif (upload.state is State.CLEAN and inode.meta_changed and inode.writer is upload
                  and inode.etag is not None):
                await self._store_metadata(inode)  # changed after the last commit
        except FsError as exc:
            # FUSE discards release errors; the log is the only place this can go.
            log.error("%s: upload failed after the last close: %s", inode.path, exc)
        finally:
            await upload.close()
            if inode.writer is upload:
                inode.writer = None
                if upload.state is State.FAILED:
                    # S3 holds the old object (or none): forget what this writer told us.
                    inode.valid_until, inode.etag, inode.meta_known = 0.0, None, False
                    inode.meta_changed = False
                    self._pending_meta.discard(inode)

    # -- extended attributes: read-only, served by s3mpfs/xattrs.py -----------------------

    async def getxattr(self, ino: int, name: str) -> bytes:
        value = await xattrs.get(self, self._inode(ino), name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value

    async def listxattr(self, ino: int) -> list[str]:
        return await xattrs.names(self, self._inode(ino))

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
        for inode in list(self._pending_meta):
            await self._flush_pending_meta(inode)
