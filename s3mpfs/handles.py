"""Open handles. Handle numbers are allocated separately from inode numbers (one inode can be
open many times), and each kind of handle is its own type, so a state is never a flag.

Write handles are also indexed by inode, and each inode being written has one *current*
upload: the one opened last, whose size stat reports while the file is written. Setting and
clearing it moves the inode's Status in and out of WRITING (inodes.py).

A write handle whose release is still storing the file (FUSE sends RELEASE after close() has
returned, so `touch f && mv f g` races it) is *closing*: no longer open, not yet settled.
The rule for that window, one for every operation: whatever needs the stored object (rename,
unlink, open, a size change) first waits in settled() until the store has landed or failed."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NewType

import trio

from s3mpfs.inodes import Inode, InodeT
from s3mpfs.listing import DirEntry
from s3mpfs.prefetch import Reader
from s3mpfs.upload import Upload

FileHandleT = NewType("FileHandleT", int)


@dataclass
class ReadHandle:
    inode: Inode
    reader: Reader | None  # None until needed when the file was being written at open


@dataclass
class WriteHandle:
    """A file opened for writing. Its Upload carries the state machine (upload.State)."""

    inode: Inode
    upload: Upload
    opener: int | None = None  # pid of the process that opened it, if known (openers.py)
    reader: Reader | None = None  # reads of the stored object under the upload (readback)


@dataclass
class DirHandle:
    inode: Inode
    entries: list[DirEntry] | None = None  # filled on readdir at offset 0
    extra: list[str] = field(default_factory=list)


Handle = ReadHandle | WriteHandle | DirHandle


class HandleTable:
    def __init__(self) -> None:
        self._handles: dict[FileHandleT, Handle] = {}
        self._next = itertools.count(1)
        self._writers: dict[InodeT, list[WriteHandle]] = {}
        self._current: dict[InodeT, Upload] = {}
        self._closing: dict[InodeT, list[WriteHandle]] = {}
        self._settled: dict[InodeT, trio.Event] = {}

    def add(self, handle: Handle) -> FileHandleT:
        fh = FileHandleT(next(self._next))
        self._handles[fh] = handle
        if isinstance(handle, WriteHandle):
            self._writers.setdefault(handle.inode.ino, []).append(handle)
        return fh

    def get(self, fh: int) -> Handle | None:
        return self._handles.get(FileHandleT(fh))

    def pop(self, fh: int) -> Handle | None:
        """The handle's last descriptor is gone; a write handle is closing until closed()."""
        handle = self._handles.pop(FileHandleT(fh), None)
        if isinstance(handle, WriteHandle):
            ino = handle.inode.ino
            same = self._writers[ino]
            same.remove(handle)
            if not same:
                del self._writers[ino]
            self._closing.setdefault(ino, []).append(handle)
            self._settled.setdefault(ino, trio.Event())
        return handle

    def closed(self, handle: WriteHandle) -> None:
        """Its release has stored the file (or failed): operations waiting may go on."""
        ino = handle.inode.ino
        closing = self._closing[ino]
        closing.remove(handle)
        if not closing:
            del self._closing[ino]
            self._settled.pop(ino).set()

    async def settled(self, inode: Inode) -> None:
        """Wait until no release of this inode is still storing it."""
        while (event := self._settled.get(inode.ino)) is not None:
            await event.wait()

    def writers(self) -> list[WriteHandle]:
        return [h for same in self._writers.values() for h in same]

    def writers_of(self, inode: Inode) -> list[WriteHandle]:
        return list(self._writers.get(inode.ino, ()))

    # -- the current upload of an inode ----------------------------------------------------

    def writer(self, inode: Inode) -> Upload | None:
        """The upload stat reports on while the file is written (None: not being written)."""
        return self._current.get(inode.ino)

    def set_writer(self, inode: Inode, upload: Upload) -> None:
        self._current[inode.ino] = upload
        inode.start_writing()

    def clear_writer(self, inode: Inode, upload: Upload | None = None) -> bool:
        """Stop reporting on `upload` (any upload when None); True if it was the current one."""
        current = self._current.get(inode.ino)
        if current is None or (upload is not None and current is not upload):
            return False
        del self._current[inode.ino]
        inode.stop_writing()
        return True

    def __len__(self) -> int:
        return len(self._handles)
