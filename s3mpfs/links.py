"""Symbolic links, special files and hard links, in s3fs-fuse's formats.

  * a symbolic link is an object whose body is the target and whose x-amz-meta-mode carries
    S_IFLNK (decimal, beside uid/gid/mtime); its size is the target's length;
  * a FIFO, a socket or a device is an empty object whose x-amz-meta-mode carries its type
    bits, a device's number in x-amz-meta-rdev (decimal); mknod(S_IFREG) is an empty file;
  * a hard link cannot be expressed in S3: link() fails with EOPNOTSUPP (as s3fs-fuse), or
    with --hard-links copy makes the new name a server-side copy: an independent file.

All of these are Kind.FILE inodes (any object that is not a directory): the type is the mode's,
so they rename, unlink and change attributes like files. The kernel follows links itself and
never opens a link, a FIFO or a socket here.
"""

from __future__ import annotations

import errno
import logging
import stat
import time

from s3mpfs.errors import FsError, PreconditionFailed
from s3mpfs.handles import HandleTable
from s3mpfs.inodes import Inode, Kind
from s3mpfs.listing import DirEntry
from s3mpfs.namespace import Namespace
from s3mpfs.objcopy import copy_object
from s3mpfs.store.base import ObjectStore
from s3mpfs.upload import State

log = logging.getLogger(__name__)

PATH_MAX = 4096  # bytes, Linux's limit for a link's target (its NUL included)
SPECIAL_TYPES = (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)


class Links:
    def __init__(self, store: ObjectStore, names: Namespace, handles: HandleTable, *,
                 read_only: bool = False, hard_links: str = "refuse") -> None:
        self.store, self.names, self.handles = store, names, handles
        self.read_only, self.hard_links = read_only, hard_links
        self._targets: dict[int, tuple[str, bytes]] = {}  # ino -> (ETag, target)
        self._refused_once = False

    def _writable(self) -> None:
        if self.read_only:
            raise FsError(errno.EROFS)

    async def _new_object(self, parent_ino: int, name: str, mode: int, uid: int, gid: int,
                          body: bytes = b"", rdev: int = 0) -> Inode:
        """PUT a new object for name with its attributes, as s3fs-fuse's symlink/mknod do."""
        self._writable()
        parent = self.names.dir(parent_ino)
        path = self.names.new_child_path(parent, name)
        if await self.names.exists(path):
            raise FsError(errno.EEXIST)
        inode = self.names.inodes.upsert(path, Kind.FILE)
        inode.mode, inode.uid, inode.gid, inode.rdev = mode, uid, gid, rdev
        inode.mtime_ns, inode.size = time.time_ns(), len(body)
        inode.etag = await self.store.put(self.names.key(inode), body,
                                          metadata=inode.metadata())
        return self._stored_new(inode, parent)

    def _stored_new(self, inode: Inode, parent: Inode) -> Inode:
        """A new object this mount just stored under inode.path (its etag set): S3 holds its
        attributes, the caches show it, its directory's mtime and ctime move, and the kernel
        takes a reference."""
        inode.attrs_stored()
        parent.entries_changed()
        inode.committed_at = time.monotonic()
        self.names.renew(inode)
        self.names.created(inode.path, DirEntry(inode.path.rpartition("/")[2], Kind.FILE,
                                                inode.size, time.time(), inode.etag))
        inode.lookups += 1
        return inode

    # -- symbolic links ----------------------------------------------------------------------

    async def symlink(self, parent_ino: int, name: str, target: bytes, uid: int,
                      gid: int) -> Inode:
        if not target:
            raise FsError(errno.ENOENT)
        if len(target) >= PATH_MAX:
            raise FsError(errno.ENAMETOOLONG)
        inode = await self._new_object(parent_ino, name, stat.S_IFLNK | 0o777, uid, gid,
                                       body=target)
        assert inode.etag is not None
        self._targets[inode.ino] = (inode.etag, target)
        return inode

    async def readlink(self, ino: int) -> bytes:
        """The link's target: the object's body (one GET, remembered while its ETag holds)."""
        inode = self.names.inode(ino)
        if not inode.is_link:
            raise FsError(errno.EINVAL)
        if inode.etag is None:
            await self.names.ensure_meta(inode)
        cached = self._targets.get(inode.ino)
        if cached is not None and cached[0] == inode.etag:
            return cached[1]
        if inode.size == 0:
            return b""  # not a link s3fs or we would write; nothing to fetch
        key = self.names.key(inode)
        try:
            target = await self.store.get_range(key, 0, inode.size, if_match=inode.etag)
        except PreconditionFailed:  # replaced since its attributes were read: read anew
            self.names.set_file_info(inode, await self.store.head(key))
            self.names.renew(inode)
            if not inode.is_link:
                raise FsError(errno.EINVAL) from None
            target = await self.store.get_range(key, 0, inode.size, if_match=inode.etag)
        if inode.etag is not None:
            self._targets[inode.ino] = (inode.etag, target)
        return target

    # -- special files -----------------------------------------------------------------------

    async def mknod(self, parent_ino: int, name: str, mode: int, rdev: int, uid: int,
                    gid: int) -> Inode:
        """mknod(2): a FIFO, a socket, a device (the kernel lets only root make those), or
        with S_IFREG (or no type) an empty regular file."""
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in (stat.S_IFREG, *SPECIAL_TYPES):
            raise FsError(errno.EINVAL)
        device = kind in (stat.S_IFCHR, stat.S_IFBLK)
        return await self._new_object(parent_ino, name, kind | stat.S_IMODE(mode), uid, gid,
                                      rdev=rdev if device else 0)

    # -- hard links --------------------------------------------------------------------------

    async def link(self, ino: int, new_parent_ino: int, new_name: str) -> Inode:
        """link(2): EOPNOTSUPP, or with --hard-links copy an independent server-side copy."""
        self._writable()
        inode = self.names.inode(ino)
        if self.hard_links != "copy":
            level = logging.INFO if self._refused_once else logging.WARNING
            self._refused_once = True
            log.log(level, "link %s -> %s: hard links are not supported on S3 (EOPNOTSUPP); "
                    "mount with --hard-links copy to store them as independent copies",
                    new_name, inode.path)
            raise FsError(errno.EOPNOTSUPP, "hard links are not supported")
        if inode.is_dir:
            raise FsError(errno.EPERM)
        parent = self.names.dir(new_parent_ino)
        path = self.names.new_child_path(parent, new_name)
        if await self.names.exists(path):
            raise FsError(errno.EEXIST)
        await self.handles.settled(inode)
        writer = self.handles.writer(inode)
        if writer is not None and writer.state in (State.NEW, State.DIRTY):
            log.error("link %s -> %s: the file is still being written; close it first",
                      new_name, inode.path)
            raise FsError(errno.EBUSY)
        await self.names.ensure_meta(inode)
        if inode.etag is None:
            raise FsError(errno.ENOENT)
        copy = self.names.inodes.upsert(path, Kind.FILE)
        copy.mode, copy.uid, copy.gid, copy.rdev = inode.mode, inode.uid, inode.gid, inode.rdev
        copy.mtime_ns, copy.size = inode.mtime_ns, inode.size
        copy.etag = await copy_object(self.store, self.names.key(inode), self.names.key(copy),
                                      size=inode.size, etag=inode.etag,
                                      metadata=inode.metadata())
        self._stored_new(copy, parent)
        log.info("link %s -> %s: stored as an independent copy (--hard-links copy)",
                 path, inode.path)
        return copy
