"""Storing attribute changes (chmod, chown, utimens, setxattr/removexattr) in S3, and when.

S3 has no way to change an object's x-amz-meta-* but to copy the object onto itself, so
where a change can ride on a request that is made anyway, it does:

  * a file being written whose metadata has not gone out yet: on CreateMultipartUpload or
    PutObject (nothing to do here);
  * a file being written whose metadata went out: right after its commit (fs.py calls
    store() then; the inode's Status says WRITING_CHANGED meanwhile);
  * a just-written dot-file (rsync's ".name.XXXXXX"): held for FOLD_WINDOW, because rsync
    renames it next and that rename's CopyObject carries the new metadata (3 requests per
    rsync'd file instead of 4). A daemon crash inside the window loses that attribute change
    (never data; the next rsync re-sends the file);
  * everything else: one CopyObject onto itself now, pinned to the ETag we know (a directory:
    its marker PUT again; the root of a prefix mount: the PREFIX/ marker; the bucket's root
    has no key, so its attributes are kept in memory for the life of the mount).
"""

from __future__ import annotations

import logging
import time

import trio

from s3mpfs.errors import FsError, StoreError
from s3mpfs.handles import HandleTable
from s3mpfs.inodes import Inode, Status
from s3mpfs.namespace import Namespace
from s3mpfs.objcopy import copy_object
from s3mpfs.store.base import ObjectStore
from s3mpfs.upload import State, Upload

log = logging.getLogger(__name__)

# 2 s leaves room for a loaded machine between rsync's close, utimens and rename.
FOLD_WINDOW = 2.0


class AttrStore:
    def __init__(self, store: ObjectStore, names: Namespace, handles: HandleTable) -> None:
        self.store, self.names, self.handles = store, names, handles
        self._nursery: trio.Nursery | None = None
        self._held: set[Inode] = set()  # folded changes waiting for a rename

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    async def changed(self, inode: Inode, writer: Upload | None) -> None:
        """inode's mode/uid/gid/mtime were just changed in memory: see that S3 gets them."""
        pending = writer is not None and writer.state in (State.NEW, State.DIRTY)
        if pending and writer is not None and writer.metadata_sent is None:
            pass  # rides on CreateMultipartUpload / PutObject
        elif pending:
            inode.attrs_changed()  # applied after the upload completes (flush/release)
        elif inode.etag is None and not inode.is_dir:
            pass  # nothing stored yet (an upload failed): kept in memory only
        elif self._foldable(inode):
            inode.attrs_changed()
            if inode not in self._held:
                self._held.add(inode)
                assert self._nursery is not None
                self._nursery.start_soon(self._store_later, inode)
        else:
            await self.store_now(inode)

    def _foldable(self, inode: Inode) -> bool:
        name = inode.path.rpartition("/")[2]
        return (name.startswith(".") and not inode.is_dir and self._nursery is not None
                and time.monotonic() - inode.committed_at < FOLD_WINDOW)

    def carried(self, inode: Inode) -> None:
        """A held change went out another way (a rename's copy carried it, or the upload
        failed and S3 keeps the old object): nothing left to store for it."""
        self._held.discard(inode)

    async def _store_later(self, inode: Inode) -> None:
        await trio.sleep(FOLD_WINDOW)
        await self._store_held(inode)

    async def _store_held(self, inode: Inode) -> None:
        self._held.discard(inode)
        if inode.status is not Status.CHANGED:  # stored already, or a writer will store it
            return
        try:
            await self.store_now(inode)
        except (FsError, StoreError) as exc:
            log.error("%s: could not store changed attributes: %s", inode.path, exc)

    async def store_now(self, inode: Inode) -> None:
        """Rewrite x-amz-meta-* of a stored object: CopyObject onto itself, pinned to the
        ETag we know; a directory's marker is written again."""
        inode.attrs_stored()
        if inode.is_dir:
            key = self.names.dir_key(inode.path)
            if key:  # the bucket's root has no marker: its attributes stay in memory
                await self.store.put(key, b"", metadata=inode.metadata())
            return
        old = inode.etag
        key = self.names.key(inode)
        inode.etag = await copy_object(self.store, key, key, size=inode.size, etag=inode.etag,
                                       metadata=inode.metadata())
        for handle in self.handles.writers_of(inode):  # an open, unchanged file stands on it
            if handle.upload.etag == old:
                handle.upload.etag = inode.etag

    async def shutdown(self) -> None:
        """Unmounting: held changes are stored now instead of after their window."""
        for inode in list(self._held):
            await self._store_held(inode)
