"""rename(2) as S3 allows: a file is copied server side, then the old key deleted; a directory
copies every key below it (in parallel), then deletes the old ones. Neither is atomic: a crash
midway leaves the copies *and* the originals, never neither.

A file still open for writing moves with its uploads (Upload.rename): nothing stored yet, the
upload simply goes to the new key; an upload already open commits first and the object moves
at once, so nothing can land under the old name later.
"""

from __future__ import annotations

import errno
import logging
import time

import trio

from s3mpfs.attrstore import AttrStore
from s3mpfs.config import MAX_PART_SIZE
from s3mpfs.errors import FsError
from s3mpfs.handles import HandleTable
from s3mpfs.holds import Holds
from s3mpfs.inodes import Inode, Status
from s3mpfs.listing import DirEntry
from s3mpfs.namespace import Namespace
from s3mpfs.objcopy import copy_object
from s3mpfs.store.base import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

# renameat2(2) flags
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# Objects copied at once when a directory is renamed.
RENAME_PARALLEL = 16


class Renamer:
    def __init__(self, store: ObjectStore, names: Namespace, handles: HandleTable,
                 attrs: AttrStore, holds: Holds, *, no_clobber: bool = False) -> None:
        self.store, self.names, self.handles, self.attrs = store, names, handles, attrs
        # A held file (holds.py) is stored by its rename: holds.store(inode, new key) makes
        # the one PutObject under the new name (None: under its own name, before a move).
        self.holds = holds
        self.no_clobber = no_clobber

    async def rename(self, parent: Inode, name: str, new_parent: Inode, new_name: str,
                     flags: int = 0) -> None:
        if flags & RENAME_EXCHANGE:
            log.error("rename: RENAME_EXCHANGE cannot be done on S3 (no atomic swap)")
            raise FsError(errno.EINVAL)
        src_path = self.names.child_path(parent, name)
        dst_path = self.names.new_child_path(new_parent, new_name)
        inode = await self.names.resolve(src_path)
        if src_path == dst_path:
            return
        try:
            target: Inode | None = await self.names.resolve(dst_path)
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            target = None
        for settling in (inode, target):  # a release still storing either: after its store
            if settling is not None:
                await self.handles.settled(settling)
        if target is not None:
            if flags & RENAME_NOREPLACE or (self.no_clobber and not target.is_dir):
                raise FsError(errno.EEXIST)
            if target.is_dir and not inode.is_dir:
                raise FsError(errno.EISDIR)
            if inode.is_dir and not target.is_dir:
                raise FsError(errno.ENOTDIR)
            if target.is_dir and not await self.names.dir_is_empty(target):
                raise FsError(errno.ENOTEMPTY)
        inode.changed_now()  # stored by a file's copy when it carries the metadata
        if inode.is_dir:
            if dst_path.startswith(src_path + "/"):
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            await self._rename_dir(inode, dst_path, target)
        else:
            await self._rename_file(inode, dst_path, target)
        parent.entries_changed()
        new_parent.entries_changed()
        self.names.removed(src_path)
        self.names.created(dst_path, DirEntry(dst_path.rpartition("/")[2], inode.kind,
                                              self.names.size_of(inode), time.time(),
                                              inode.etag))

    async def move(self, src: str, dst: str, etag: str, size: int,
                    metadata: dict[str, str] | None = None) -> str:
        new_etag = await copy_object(self.store, src, dst, size=size, etag=etag,
                                     metadata=metadata)
        await self.store.delete(src)
        return new_etag

    def _drop_target(self, target: Inode | None) -> None:
        if target is not None:
            self.handles.clear_writer(target)
            self.names.inodes.unlink(target)

    async def _rename_file(self, inode: Inode, dst_path: str, target: Inode | None) -> None:
        new_key = self.names.prefix + dst_path
        if target is not None:
            for handle in self.handles.writers_of(target):
                await handle.upload.discard()
        self._drop_target(target)
        uploads = [h.upload for h in self.handles.writers_of(inode)]
        if self.holds.get(inode) is not None:  # rsync's temporary: one PutObject, here
            await self.holds.store(inode, new_key)
        elif uploads:
            old_key = self.names.key(inode)
            # An old object no writer committed (the file was opened with O_TRUNC) goes too.
            stale = inode.etag is not None and all(u.etag is None for u in uploads)
            for upload in uploads:
                await upload.rename(new_key, self.move)
                if upload.etag is not None:  # what S3 holds now, under the new name
                    inode.etag, inode.size = upload.etag, upload.committed_size
            if stale:
                await self.store.delete(old_key)
        else:
            metadata = None
            folded = inode.status is Status.CHANGED
            if folded or inode.known:  # a folded chmod/utimens rides on this copy, and ctime
                metadata = inode.metadata()
            elif inode.size > MAX_PART_SIZE:  # beyond CopyObject: a multipart copy
                await self.names.ensure_meta(inode)
                metadata = inode.metadata()
            if inode.etag is None:
                await self.names.ensure_meta(inode)
            assert inode.etag is not None
            inode.etag = await self.move(self.names.key(inode), new_key, inode.etag,
                                          inode.size, metadata)
            if folded:
                inode.attrs_stored()
            self.attrs.carried(inode)
        self.names.inodes.rename(inode, dst_path)
        if uploads and inode.status.changed and inode.etag is not None:
            await self.attrs.store_now(inode)  # set while the upload was open

    async def _rename_dir(self, inode: Inode, dst_path: str, target: Inode | None) -> None:
        src_prefix, dst_prefix = self.names.dir_key(inode.path), self.names.dir_key(dst_path)
        for held in self.holds.under(inode.path):  # stored first, then copied with the rest
            await self.holds.store(held)
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
        # s3fs's old `dir` object (no slash): the new name gets a marker, the old key goes
        legacy = self.names.dir_objects.pop(inode.path, None) is not None
        if not objects or legacy:  # an implicit, empty directory: give the new name a marker
            await self.store.put(dst_prefix, b"", metadata=inode.metadata())
        for handle in self.handles.writers():
            if handle.inode.path.startswith(inode.path + "/"):
                rest = handle.inode.path[len(inode.path):]
                await handle.upload.rename(self.names.prefix + dst_path + rest, self.move)

        async def delete_one(obj: ObjectInfo) -> None:
            async with limit:
                await self.store.delete(obj.key)

        async with trio.open_nursery() as nursery:
            for obj in objects:
                nursery.start_soon(delete_one, obj)
        if legacy:
            await self.store.delete(self.names.prefix + inode.path)
        self.names.dropped(inode.path)
        log.info("renamed directory %s -> %s: %d objects copied", inode.path, dst_path,
                 len(objects))
        self.names.inodes.rename(inode, dst_path)
