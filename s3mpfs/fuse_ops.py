"""pyfuse3 glue: unpack requests, call fs.Filesystem, pack replies. Nothing else.

This is the only module that touches pyfuse3 types, and `_errors` is the only place an error
becomes a FUSEError (mountpoint-s3's fuse.rs idea): FsError and StoreError carry their errno
(errors.errno_for); anything unexpected is logged with its traceback and answered EIO rather
than taking the daemon down.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pyfuse3
import trio

from s3mpfs.errors import FsError, StoreError, errno_for
from s3mpfs.fs import Filesystem, SetAttr
from s3mpfs.inodes import Inode
from s3mpfs.namespace import META_BATCH

log = logging.getLogger(__name__)

# st_blksize: `cp` writes in st_blksize units; 1 MiB is the kernel's largest FUSE write here
# (libfuse3 sets max_pages=256), so one cp write() is one FUSE request.
BLOCK_SIZE = 1024 * 1024


@contextlib.contextmanager
def _errors(op: str) -> Iterator[None]:
    try:
        yield
    except pyfuse3.FUSEError:
        raise
    except FsError as exc:
        # S3 failing or refusing under the application (a failed upload at close: EIO, or
        # EACCES, ESTALE ... from the StoreError that caused it) is always logged.
        serious = exc.errno == errno.EIO or isinstance(exc.__cause__, StoreError)
        log.log(logging.ERROR if serious else logging.DEBUG, "%s: %s", op, exc)
        raise pyfuse3.FUSEError(errno_for(exc)) from None
    except StoreError as exc:
        code = errno_for(exc)
        level = logging.DEBUG if code == errno.ENOENT else logging.ERROR
        log.log(level, "%s: %s", op, exc)
        raise pyfuse3.FUSEError(code) from None
    except Exception:
        log.exception("%s: unexpected error", op)
        raise pyfuse3.FUSEError(errno.EIO) from None


def _name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FsError(errno.EINVAL, "S3 keys are UTF-8; this name is not") from None


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, fs: Filesystem) -> None:
        super().__init__()
        self.fs = fs
        # Set once the kernel's INIT request has been handled (mount.py tunes the mount then).
        self.initialized = trio.Event()

    def init(self) -> None:
        # pyfuse3 calls this synchronously from libfuse's INIT handler, which sends the INIT
        # reply right after it returns: whoever waits on the event runs after the reply.
        self.initialized.set()

    def _attrs(self, inode: Inode) -> Any:
        a = pyfuse3.EntryAttributes()
        size = self.fs.size_of(inode)
        a.st_ino = inode.ino
        a.generation = 0
        # Attributes whose x-amz-meta was not read (a HEAD failed) are not to be cached.
        a.entry_timeout = a.attr_timeout = self.fs.opts.metadata_ttl if inode.known else 0
        a.st_mode = inode.mode
        a.st_nlink = 0 if inode.unlinked else 2 if inode.is_dir else 1
        a.st_uid, a.st_gid = inode.uid, inode.gid
        a.st_size = size
        a.st_blksize = BLOCK_SIZE
        a.st_blocks = (size + 511) // 512
        a.st_rdev = inode.rdev
        a.st_mtime_ns, a.st_atime_ns, a.st_ctime_ns = inode.mtime_ns, inode.atime, inode.ctime
        return a

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        with _errors("lookup"):
            return self._attrs(await self.fs.lookup(parent_inode, _name(name)))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        self.fs.forget(list(inode_list))

    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        with _errors("getattr"):
            return self._attrs(await self.fs.getattr(inode))

    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None,
                      ctx: Any) -> Any:
        with _errors("setattr"):
            change = SetAttr(
                size=attr.st_size if fields.update_size else None,
                mode=attr.st_mode if fields.update_mode else None,
                uid=attr.st_uid if fields.update_uid else None,
                gid=attr.st_gid if fields.update_gid else None,
                mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
                atime_ns=attr.st_atime_ns if fields.update_atime else None,
            )
            return self._attrs(await self.fs.setattr(inode, change, fh, ctx.pid))

    async def opendir(self, inode: int, ctx: Any) -> int:
        with _errors("opendir"):
            return self.fs.opendir(inode)

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        # In batches of META_BATCH entries, each with its stored attributes read first (the
        # kernel's buffer may take thousands of entries in one call).
        with _errors("readdir"):
            index = start_id
            while True:
                batch = list(itertools.islice(await self.fs.readdir(fh, index), META_BATCH))
                for name, inode, counted in batch:
                    index += 1
                    if not pyfuse3.readdir_reply(token, name.encode(), self._attrs(inode),
                                                 index):
                        return
                    if counted:
                        self.fs.remember(inode)
                if len(batch) < META_BATCH:
                    return

    async def releasedir(self, fh: int) -> None:
        self.fs.releasedir(fh)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        with _errors("mkdir"):
            inode = await self.fs.mkdir(parent_inode, _name(name), mode, ctx.uid, ctx.gid)
            return self._attrs(inode)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with _errors("rmdir"):
            await self.fs.rmdir(parent_inode, _name(name))

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with _errors("unlink"):
            await self.fs.unlink(parent_inode, _name(name))

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        with _errors("symlink"):
            return self._attrs(await self.fs.links.symlink(parent_inode, _name(name), target,
                                                           ctx.uid, ctx.gid))

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        with _errors("readlink"):
            return await self.fs.links.readlink(inode)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> Any:
        with _errors("mknod"):
            return self._attrs(await self.fs.links.mknod(parent_inode, _name(name), mode, rdev,
                                                         ctx.uid, ctx.gid))

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: Any) -> Any:
        with _errors("link"):
            return self._attrs(await self.fs.links.link(inode, new_parent_inode,
                                                        _name(new_name)))

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[Any, Any]:
        with _errors("create"):
            inode, fh = await self.fs.create(parent_inode, _name(name), mode, ctx.uid, ctx.gid,
                                             ctx.pid, flags)
            return pyfuse3.FileInfo(fh=fh), self._attrs(inode)

    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        with _errors("open"):
            return pyfuse3.FileInfo(fh=await self.fs.open(inode, flags, ctx.pid))

    # pyfuse3's stub says bytes; its handler replies from any buffer (PyObject_GetBuffer).
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        with _errors("read"):
            return await self.fs.read(fh, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        with _errors("write"):
            return await self.fs.write(fh, off, buf)

    async def flush(self, fh: int) -> None:
        with _errors("flush"):
            await self.fs.flush(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        with _errors("fsync"):
            await self.fs.fsync(fh)

    async def release(self, fh: int) -> None:
        with _errors("release"):
            await self.fs.release(fh)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        with _errors("rename"):
            await self.fs.rename(parent_inode_old, _name(name_old), parent_inode_new,
                                 _name(name_new), flags)

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        with _errors("getxattr"):
            try:
                return await self.fs.getxattr(inode, name.decode("utf-8", "surrogateescape"))
            except FsError as exc:
                if exc.errno != errno.ENODATA:
                    raise
                # The kernel asks for security.capability on writes: not worth a log line.
                raise pyfuse3.FUSEError(errno.ENODATA) from None

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        with _errors("listxattr"):
            return [name.encode("utf-8", "surrogateescape")
                    for name in await self.fs.listxattr(inode)]

    # XATTR_CREATE / XATTR_REPLACE: pyfuse3 checks them with getxattr before calling this.
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        with _errors("setxattr"):
            await self.fs.setxattr(inode, name.decode("utf-8", "surrogateescape"), value)

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        with _errors("removexattr"):
            await self.fs.removexattr(inode, name.decode("utf-8", "surrogateescape"))

    async def statfs(self, ctx: Any) -> Any:
        st = pyfuse3.StatvfsData()
        for name, value in self.fs.statfs().items():
            setattr(st, name, value)
        return st
