"""rsync at one request per file: its temporary files are stored once, under their final name.

rsync's receiver writes each file as `.NAME.XXXXXX` (created with O_EXCL), closes it, sets its
times and mode, and renames it to NAME. Stored at that close, a file would cost three requests
one after another (PutObject of the temporary, CopyObject at the rename, DeleteObject). Held
instead, it costs one: the close stores nothing, the attribute changes apply in memory, and the
rename stores the file with one PutObject under the final name, carrying everything, and
returns that PutObject's result (a failure fails the rename with EIO: rsync reports the file,
nothing appears under either name).

Which files: created with O_EXCL, named like rsync's temporaries, smaller than one part when
closed, and room in the memory limit (one part-size buffer each, counted in the PartBudget);
otherwise the close stores the file as any other. --durable-close turns holding off.

Why this is safe for rsync: it checks close()'s result, but its next step, the rename, is what
makes the file exist under its name, and that rename now carries the store's result. If no
rename comes within HOLD_WINDOW the file is stored under its own name (a failure there is
logged as an ERROR naming the file: nobody waits for that close any more). If the daemon dies
between that close and the rename, nothing is stored and the rename fails (ENOTCONN), so rsync
exits non-zero: no loss is silent. An unlink of a held file (rsync discarding a temporary after
an error) costs nothing.
"""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from s3mpfs.errors import FsError
from s3mpfs.handles import HandleTable
from s3mpfs.inodes import Inode, InodeTable
from s3mpfs.parts import PartBudget
from s3mpfs.upload import Mover, State, Upload

log = logging.getLogger(__name__)

# rsync's temporary names: "." + the final name + "." + six characters (mkstemp's XXXXXX).
RSYNC_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6}$")
# How long a held file waits for its rename before it is stored under its own name.
HOLD_WINDOW = 2.0


@dataclass(eq=False)
class Held:
    inode: Inode
    upload: Upload
    scope: trio.CancelScope


class Holds:
    def __init__(self, budget: PartBudget, part_size: int, handles: HandleTable,
                 inodes: InodeTable, *, commit: Callable[[Inode, Upload], Awaitable[None]],
                 move: Mover, enabled: bool = True) -> None:
        self.budget, self.part_size, self.enabled = budget, part_size, enabled
        self.handles, self.inodes = handles, inodes
        self._commit, self._move = commit, move  # fs.Filesystem's commit; Renamer.move
        self._reserved: set[Upload] = set()  # closed once, held when its release comes
        self._held: dict[Inode, Held] = {}

    def holdable(self, inode: Inode, upload: Upload) -> bool:
        return (self.enabled and upload.create_only and not upload.committed_here
                and not upload.detached and upload.state in (State.NEW, State.DIRTY)
                and upload.size < self.part_size
                and RSYNC_TEMP.match(inode.path.rpartition("/")[2]) is not None)

    def reserve(self, inode: Inode, upload: Upload) -> bool:
        """At a close(): True if this file will be held instead of stored now."""
        if upload in self._reserved:
            return self.holdable(inode, upload)
        if not self.holdable(inode, upload) or not self.budget.try_acquire():
            return False
        self._reserved.add(upload)
        return True

    def unreserve(self, upload: Upload) -> None:
        if upload in self._reserved:
            self._reserved.discard(upload)
            self.budget.give_back()

    def hold(self, inode: Inode, upload: Upload, nursery: trio.Nursery) -> bool:
        """At the release: keep the upload (and its bytes) until a rename, an unlink or the
        window's end (then it is stored under its own name)."""
        if upload not in self._reserved or not self.holdable(inode, upload):
            self.unreserve(upload)
            return False
        scope = trio.CancelScope()
        self._held[inode] = Held(inode, upload, scope)

        async def later() -> None:
            with scope:
                await trio.sleep(HOLD_WINDOW)
                nursery.start_soon(self.store, inode)

        nursery.start_soon(later)
        log.debug("%s: held for its rename (%d bytes)", inode.path, upload.size)
        return True

    async def store(self, inode: Inode, new_key: str | None = None) -> None:
        """Store a held file: under new_key by its rename (errors raised to the rename), or
        under its own name when no rename came (errors logged: nobody waits any more)."""
        held = self.take(inode)
        if held is None:
            return
        upload = held.upload
        try:
            if new_key is not None:
                upload.create_only = False  # the rename replaces what is under new_key
                await upload.rename(new_key, self._move)  # nothing stored yet: just the key
            await self._commit(inode, upload)
        except FsError as exc:
            if new_key is not None:
                raise FsError(errno.EIO, f"storing {inode.path} as {new_key}: {exc}") from exc
            log.error("%s: storing the file after its close failed (no rename came within "
                      "%.0f s): %s", inode.path, HOLD_WINDOW, exc)
        finally:
            await self._let_go(held)

    async def drop(self, inode: Inode) -> bool:
        """An unlink of a held file: nothing was stored, nothing to delete."""
        held = self.take(inode)
        if held is None:
            return False
        await held.upload.discard()
        await self._let_go(held)
        return True

    async def _let_go(self, held: Held) -> None:
        inode, upload = held.inode, held.upload
        await upload.close()
        if self.handles.clear_writer(inode, upload) and upload.state is State.FAILED:
            inode.forget_attrs()  # S3 holds nothing of it
        self.unreserve(upload)
        self.inodes.release(inode)

    def get(self, inode: Inode) -> Held | None:
        return self._held.get(inode)

    def take(self, inode: Inode) -> Held | None:
        held = self._held.pop(inode, None)
        if held is not None:
            held.scope.cancel()
        return held

    def all(self) -> list[Inode]:
        return list(self._held)

    def under(self, path: str) -> list[Inode]:
        return [i for i in self._held if i.path.startswith(path + "/")]
