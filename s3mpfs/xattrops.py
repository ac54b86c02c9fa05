"""getxattr/listxattr/setxattr/removexattr for fs.Filesystem, and the Source that xattrs.py
reads the filesystem through.

A stored user.* attribute changes like a mode or an owner: in memory first (xattrs.py checks
the name, the flags and S3's 2 KB), then attrstore.py takes it to S3 (riding on an upload
still to send its metadata, folded into rsync's rename, or one CopyObject onto itself). An
inode whose x-amz-meta was not read yet (a listed file) costs one HEAD first, so the change
keeps what else the object carries.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from s3mpfs import xattrs
from s3mpfs.attrstore import AttrStore
from s3mpfs.config import FsConfig
from s3mpfs.errors import FsError
from s3mpfs.handles import HandleTable
from s3mpfs.inodes import Inode
from s3mpfs.namespace import Namespace
from s3mpfs.store.base import ObjectInfo
from s3mpfs.upload import PartBudget, Upload


class XattrOps:
    def __init__(self, names: Namespace, handles: HandleTable, attrs: AttrStore,
                 opts: FsConfig, budget: PartBudget) -> None:
        self.names, self.handles, self.attrs = names, handles, attrs
        self.opts, self.budget = opts, budget

    async def get(self, ino: int, name: str) -> bytes:
        return await xattrs.get_any(self, self.names.inode(ino), name)

    async def names_of(self, ino: int) -> list[str]:
        return await xattrs.names(self, self.names.inode(ino))

    async def set(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        await self._change(ino, name, lambda inode: xattrs.set_stored(inode, name, value, flags))

    async def remove(self, ino: int, name: str) -> None:
        await self._change(ino, name, lambda inode: xattrs.remove_stored(inode, name))

    async def _change(self, ino: int, name: str, change: Callable[[Inode], None]) -> None:
        inode = self.names.inode(ino)
        xattrs.check_settable(name)
        if self.opts.read_only:
            raise FsError(errno.EROFS)
        await self.handles.settled(inode)  # a release still storing it: after that store
        writer = self.handles.writer(inode)
        if not inode.known and writer is None:
            await self.read_meta(inode)
        change(inode)
        await self.attrs.changed(inode, writer)

    # -- what xattrs.py may see of the filesystem (its Source protocol), nothing more --------

    def writer(self, inode: Inode) -> Upload | None:
        return self.handles.writer(inode)

    def uploads(self) -> list[tuple[str, Upload]]:
        return [(h.inode.path, h.upload) for h in self.handles.writers()]

    def mount_facts(self) -> dict[str, Any]:
        return {"prefix": self.opts.prefix, "read_only": self.opts.read_only,
                "part_size": self.opts.upload.part_size,
                "parts_in_flight": self.budget.in_flight,
                "max_parts_in_flight": self.budget.max_parts}

    async def read_meta(self, inode: Inode) -> None:
        """x-amz-meta of an inode not read yet: a file's HEAD, a directory's marker (an open
        writer's inode is this mount's to know)."""
        if inode.is_dir:
            await self.names.dir_meta(inode)
        elif self.handles.writer(inode) is None:
            await self.names.ensure_meta(inode)

    async def stored(self, inode: Inode) -> ObjectInfo | None:
        """What S3 holds under a file's key now (one HEAD)."""
        return None if inode.is_dir else await self.names.head(inode.path)
