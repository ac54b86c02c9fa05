"""Open handles. Handle numbers are allocated separately from inode numbers (one inode can be
open many times), and each kind of handle is its own type, so a state is never a flag."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NewType

from s3mpfs.inodes import Inode
from s3mpfs.listing import DirEntry
from s3mpfs.prefetch import Reader
from s3mpfs.upload import Upload

FileHandleT = NewType("FileHandleT", int)


@dataclass
class ReadHandle:
    inode: Inode
    reader: Reader


@dataclass
class WriteHandle:
    """A file opened for writing. Its Upload carries the state machine (upload.State)."""

    inode: Inode
    upload: Upload
    opener: int | None = None  # pid of the process that opened it, if known (openers.py)


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

    def add(self, handle: Handle) -> FileHandleT:
        fh = FileHandleT(next(self._next))
        self._handles[fh] = handle
        return fh

    def get(self, fh: int) -> Handle | None:
        return self._handles.get(FileHandleT(fh))

    def pop(self, fh: int) -> Handle | None:
        return self._handles.pop(FileHandleT(fh), None)

    def writers(self) -> list[WriteHandle]:
        return [h for h in self._handles.values() if isinstance(h, WriteHandle)]

    def __len__(self) -> int:
        return len(self._handles)
