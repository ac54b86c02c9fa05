"""Inodes: numbers for paths, the attributes we know of them, and kernel lookup counts.

An inode is named by its path below the mount's prefix ("" is the root). Its key in S3 is
prefix + path for a file and prefix + path + "/" for a directory marker. Attributes come from
HEAD (x-amz-meta-mode/uid/gid/mtime/atime/ctime and the xattrs in x-amz-meta-xattr, the names
s3fs-fuse uses; every other x-amz-meta-* is kept as it is and written back with them) or from
listings (size and LastModified only), and are trusted for `ttl` seconds before lookup asks S3
again.

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
from typing import NewType

from s3mpfs import xattrcodec

InodeT = NewType("InodeT", int)
ROOT_INODE = InodeT(1)  # pyfuse3.ROOT_INODE


class Kind(enum.Enum):
    """FILE is every object that is not a directory: a regular file, a symbolic link, a FIFO,
    a socket or a device. Which one is the type bits of its mode (from x-amz-meta-mode, as
    s3fs-fuse stores them), so a HEAD that finds a link does not change the inode's kind."""

    FILE = "file"
    DIR = "dir"


# Object types that x-amz-meta-mode may carry for a non-directory key (s3fs-fuse's formats).
OBJECT_TYPES = frozenset({stat.S_IFREG, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFSOCK,
                          stat.S_IFCHR, stat.S_IFBLK})


class Status(enum.Enum):
    """Where an inode's attributes come from, and who must store them.

    LISTED -> STORED       a HEAD (or a directory's marker) was read, or this mount stored them
    STORED -> LISTED       a listing shows another ETag: x-amz-meta unknown again
    STORED -> CHANGED      chmod/chown/utimens, stored later (a folded rsync rename)
    CHANGED -> STORED      a self-copy or a rename's copy carried them
    any -> WRITING         an upload is open (handles.py sets the current one); attributes ride
                           on it; changed after it sent them: WRITING_CHANGED, stored right
                           after its commit; the upload gone: back to STORED / CHANGED
    """

    LISTED = "listed"  # size, ETag, LastModified from a listing (or defaults); x-amz-meta unread
    STORED = "stored"  # what S3 holds, x-amz-meta included (HEAD, or stored by this mount)
    CHANGED = "changed"  # changed here, not in S3 yet (a folded chmod waiting for the rename)
    WRITING = "writing"  # open for writing: stat shows the upload, attributes ride on it
    WRITING_CHANGED = "writing, changed"  # ... changed after the upload sent them

    @property
    def writing(self) -> bool:
        return self in (Status.WRITING, Status.WRITING_CHANGED)

    @property
    def changed(self) -> bool:
        """Attributes this mount changed that S3 does not hold yet."""
        return self in (Status.CHANGED, Status.WRITING_CHANGED)


@dataclass
class Expiry:
    """Until when (time.monotonic()) what S3 told us about a name may be used without asking."""

    until: float = 0.0

    def fresh(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.until

    def renew(self, ttl: float) -> None:
        self.until = time.monotonic() + ttl

    def expire(self) -> None:
        self.until = 0.0


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
    unlinked: bool = False  # its name is gone (unlink, rmdir, replaced by a rename): nlink 0
    status: Status = Status.LISTED
    expiry: Expiry = field(default_factory=Expiry)
    committed_at: float = 0.0  # monotonic time this mount last stored the object
    rdev: int = 0  # device number of a character or block device (x-amz-meta-rdev)
    # s3fs's x-amz-meta-atime/-ctime (None: the mtime, as for objects without them)
    atime_ns: int | None = None
    ctime_ns: int | None = None
    xattrs: dict[str, bytes] = field(default_factory=dict)  # user.* in x-amz-meta-xattr
    # every other x-amz-meta-* the object carries (rclone's md5chksum, an application's own):
    # kept on every copy and upload that rewrites the metadata
    other_meta: dict[str, str] = field(default_factory=dict)

    # -- status transitions (the only writers of `status`) -------------------------------

    def start_writing(self) -> None:
        self.status = Status.WRITING_CHANGED if self.status.changed else Status.WRITING

    def stop_writing(self) -> None:
        """The upload stat reported on is gone (closed, discarded or unlinked)."""
        if self.status.writing:
            self.status = Status.CHANGED if self.status.changed else Status.STORED

    def attrs_changed(self) -> None:
        """chmod/chown/utimens that S3 does not hold yet (stored later by whoever says so)."""
        self.status = Status.WRITING_CHANGED if self.status.writing else Status.CHANGED

    def attrs_stored(self) -> None:
        """S3 now holds this inode's attributes (a self-copy, a rename's copy, a marker PUT)."""
        self.status = Status.WRITING if self.status.writing else Status.STORED

    def attrs_listed(self) -> None:
        """A listing shows another object than the one whose x-amz-meta we read."""
        if self.status is Status.STORED:
            self.status = Status.LISTED

    def forget_attrs(self) -> None:
        """S3 holds the old object, or none: what a failed writer told us is not the truth."""
        self.status, self.etag = Status.LISTED, None
        self.expiry.expire()

    @property
    def known(self) -> bool:
        """x-amz-meta of the current object is known (or is ours to store)."""
        return self.status is not Status.LISTED

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_regular(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def atime(self) -> int:
        return self.mtime_ns if self.atime_ns is None else self.atime_ns

    @property
    def ctime(self) -> int:
        return self.mtime_ns if self.ctime_ns is None else self.ctime_ns

    def changed_now(self) -> None:
        """ctime: set to now by every change of data or attributes (not settable)."""
        self.ctime_ns = time.time_ns()

    def entries_changed(self) -> None:
        """A directory this mount added an entry to or removed one from: its mtime and ctime
        move (in memory only: storing them would cost a marker PUT per entry)."""
        self.mtime_ns = self.ctime_ns = time.time_ns()

    def forget_meta(self) -> None:
        """Another object under the name: its x-amz-meta is unknown until read."""
        self.atime_ns = self.ctime_ns = None
        self.xattrs, self.other_meta = {}, {}

    def metadata(self) -> dict[str, str]:
        """x-amz-meta-* headers, named and formatted as s3fs-fuse does (rclone reads mtime),
        with every other x-amz-meta-* the object had kept as it was."""
        meta = {**self.other_meta, "mode": str(self.mode), "uid": str(self.uid),
                "gid": str(self.gid), "mtime": format_time(self.mtime_ns)}
        meta.update(self.time_metadata())
        if self.rdev:
            meta["rdev"] = str(self.rdev)
        return meta

    def time_metadata(self) -> dict[str, str]:
        """atime, ctime and the xattrs (s3fs's headers)."""
        meta = {"atime": format_time(self.atime), "ctime": format_time(self.ctime)}
        if self.xattrs:
            meta[xattrcodec.HEADER] = xattrcodec.encode(self.xattrs)
        return meta

    def apply_metadata(self, meta: Mapping[str, str]) -> None:
        """Take mode/uid/gid/mtime/rdev from x-amz-meta-*; ignore what is absent or malformed.
        The type is the stored one (a link, a FIFO, ...); a directory stays a directory, and
        a mode without type bits (or a directory's on a file key) means a regular file."""
        if self.status is Status.LISTED:
            self.status = Status.STORED
        try:
            mode = int(meta["mode"])
            kind = stat.S_IFMT(mode)
            if self.is_dir:
                kind = stat.S_IFDIR
            elif kind not in OBJECT_TYPES:
                kind = stat.S_IFREG
            self.mode = kind | stat.S_IMODE(mode)
        except (KeyError, ValueError):
            pass
        try:
            self.rdev = int(meta["rdev"]) if stat.S_ISCHR(self.mode) or stat.S_ISBLK(
                self.mode) else 0
        except (KeyError, ValueError):
            self.rdev = 0
        for name in ("uid", "gid"):
            with contextlib.suppress(KeyError, ValueError):
                setattr(self, name, int(meta[name]))
        with contextlib.suppress(KeyError, ValueError):
            self.mtime_ns = parse_time(meta["mtime"])
        self.apply_time_metadata(meta)

    def apply_time_metadata(self, meta: Mapping[str, str]) -> None:
        """atime, ctime, xattrs and the other x-amz-meta-* of the object (its whole map)."""
        self.forget_meta()
        for name in ("atime", "ctime"):
            with contextlib.suppress(KeyError, ValueError):
                setattr(self, name + "_ns", parse_time(meta[name]))
        if xattrcodec.HEADER in meta:
            self.xattrs = xattrcodec.decode(meta[xattrcodec.HEADER])
        self.other_meta = {k: v for k, v in meta.items() if k not in OWN_METADATA}


# x-amz-meta-* names this module writes itself; other names are kept as they are.
OWN_METADATA = frozenset({"mode", "uid", "gid", "mtime", "atime", "ctime", "rdev",
                          xattrcodec.HEADER})
# S3: user metadata (x-amz-meta-* names and values, counted in UTF-8 bytes) at most 2 KB.
# Counting the full header names is at or above S3's own count.
METADATA_MAX = 2048


def metadata_size(meta: Mapping[str, str]) -> int:
    return sum(len(f"x-amz-meta-{k}".encode()) + len(v.encode()) for k, v in meta.items())


def format_time(ns: int) -> str:
    """s3fs's time format: "sec", or "sec.nnnnnnnnn" when there are nanoseconds."""
    sec, nsec = divmod(ns, 1_000_000_000)
    return f"{sec}.{nsec:09d}" if nsec else str(sec)


def parse_time(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


class InodeTable:
    def __init__(self, *, uid: int, gid: int, file_mode: int = 0o644,
                 dir_mode: int = 0o755) -> None:
        self.uid, self.gid = uid, gid
        self.file_mode, self.dir_mode = file_mode, dir_mode
        self._by_ino: dict[InodeT, Inode] = {}
        self._by_path: dict[str, Inode] = {}
        self._next = 2
        root = Inode(ROOT_INODE, "", Kind.DIR, stat.S_IFDIR | dir_mode, uid, gid, lookups=1,
                     status=Status.STORED)
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
        inode.unlinked = True
        self._drop_path(inode)
        inode.expiry.expire()
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
