"""Inodes: numbers for paths, the attributes we know of them, and kernel lookup counts.

An inode is named by its path below the mount's prefix ("" is the root). Its key in S3 is
prefix + path for a file and prefix + path + "/" for a directory marker. Attributes come from
HEAD (x-amz-meta-mode/uid/gid/mtime, the names s3fs-fuse uses) or from listings (size and
LastModified only), and are trusted for `ttl` seconds before lookup asks S3 again.

Lifetime follows the kernel's lookup count (pyfuse3 gotchas: drop in forget, not in unlink):
an inode leaves the table when the kernel has forgotten it and no handle holds it.
"""

from __future__ import annotations

import contextlib
import enum
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NewType

if TYPE_CHECKING:
    from s3mpfs.upload import Upload

InodeT = NewType("InodeT", int)
ROOT_INODE = InodeT(1)  # pyfuse3.ROOT_INODE


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"


@dataclass(eq=False)  # identity semantics: inodes go in sets and compare with `is`
class Inode:
    ino: InodeT
    path: str
    kind: Kind
    mode: int  # full st_mode, type bits included
    uid: int
    gid: int
    size: int = 0
    mtime_ns: int = field(default_factory=time.time_ns)
    etag: str | None = None
    lookups: int = 0
    open_handles: int = 0
    valid_until: float = 0.0  # monotonic time until which S3 need not be asked again
    writer: Upload | None = None  # the upload stat reports on while the file is written
    meta_changed: bool = False  # chmod/chown/utimens after the metadata went to S3
    # True once x-amz-meta-* of the current object is known (HEAD, or our own write);
    # listings alone give size, ETag and LastModified only.
    meta_known: bool = False
    committed_at: float = 0.0  # monotonic time this mount last stored the object

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    def metadata(self) -> dict[str, str]:
        """x-amz-meta-* headers, named and formatted as s3fs-fuse does (rclone reads mtime)."""
        sec, nsec = divmod(self.mtime_ns, 1_000_000_000)
        return {"mode": str(self.mode), "uid": str(self.uid), "gid": str(self.gid),
                "mtime": f"{sec}.{nsec:09d}" if nsec else str(sec)}

    def apply_metadata(self, meta: Mapping[str, str]) -> None:
        """Take mode/uid/gid/mtime from x-amz-meta-*; ignore what is absent or malformed."""
        self.meta_known = True
        try:
            mode = int(meta["mode"])
            wanted = stat.S_IFDIR if self.is_dir else stat.S_IFREG
            self.mode = wanted | stat.S_IMODE(mode)
        except (KeyError, ValueError):
            pass
        for name in ("uid", "gid"):
            with contextlib.suppress(KeyError, ValueError):
                setattr(self, name, int(meta[name]))
        try:
            sec, _, frac = meta["mtime"].partition(".")
            self.mtime_ns = int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
        except (KeyError, ValueError):
            pass


class InodeTable:
    def __init__(self, *, uid: int, gid: int, file_mode: int = 0o644,
                 dir_mode: int = 0o755) -> None:
        self.uid, self.gid = uid, gid
        self.file_mode, self.dir_mode = file_mode, dir_mode
        self._by_ino: dict[InodeT, Inode] = {}
        self._by_path: dict[str, Inode] = {}
        self._next = 2
        root = Inode(ROOT_INODE, "", Kind.DIR, stat.S_IFDIR | dir_mode, uid, gid, lookups=1)
        self._add(root)

    def _add(self, inode: Inode) -> None:
        self._by_ino[inode.ino] = inode
        self._by_path[inode.path] = inode

    def __getitem__(self, ino: int) -> Inode:
        return self._by_ino[InodeT(ino)]

    def get(self, ino: int) -> Inode | None:
        return self._by_ino.get(InodeT(ino))

    def by_path(self, path: str) -> Inode | None:
        return self._by_path.get(path)

    def __len__(self) -> int:
        return len(self._by_ino)

    def upsert(self, path: str, kind: Kind) -> Inode:
        """The inode for path, created with default attributes, or re-kinded if S3 changed."""
        inode = self._by_path.get(path)
        if inode is not None and inode.kind is kind:
            return inode
        if inode is not None:  # a file became a directory or back: a new identity
            self._drop_path(inode)
        perm = self.dir_mode if kind is Kind.DIR else self.file_mode
        type_bits = stat.S_IFDIR if kind is Kind.DIR else stat.S_IFREG
        inode = Inode(InodeT(self._next), path, kind, type_bits | perm, self.uid, self.gid)
        self._next += 1
        self._add(inode)
        return inode

    def _drop_path(self, inode: Inode) -> None:
        if self._by_path.get(inode.path) is inode:
            del self._by_path[inode.path]

    def unlink(self, inode: Inode) -> None:
        """The name is gone; the number lives on until forgotten and closed."""
        self._drop_path(inode)
        inode.valid_until = 0.0
        self._maybe_free(inode)

    def rename(self, inode: Inode, new_path: str) -> None:
        """Move inode (and, for a directory, everything known below it) to new_path. Whatever
        was known at the target was unlinked by the caller first."""
        old = inode.path
        moved = [i for p, i in self._by_path.items() if p == old or p.startswith(old + "/")]
        for i in moved:
            self._drop_path(i)
        for i in moved:
            i.path = new_path + i.path[len(old):]
            self._by_path[i.path] = i

    def forget(self, ino: int, count: int) -> None:
        inode = self._by_ino.get(InodeT(ino))
        if inode is None or inode.ino == ROOT_INODE:
            return
        inode.lookups = max(0, inode.lookups - count)
        self._maybe_free(inode)

    def release(self, inode: Inode) -> None:
        inode.open_handles -= 1
        self._maybe_free(inode)

    def _maybe_free(self, inode: Inode) -> None:
        if inode.lookups == 0 and inode.open_handles == 0 and inode.ino != ROOT_INODE:
            self._by_ino.pop(inode.ino, None)
            self._drop_path(inode)

    def children(self, path: str) -> list[Inode]:
        """Known inodes directly below path (for files not yet in S3)."""
        prefix = path + "/" if path else ""
        return [i for p, i in self._by_path.items()
                if p.startswith(prefix) and p != path and "/" not in p[len(prefix):]]


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
