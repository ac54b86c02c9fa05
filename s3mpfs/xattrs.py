"""Extended attributes: user.* names stored with the object, and the read-only ones the
filesystem computes when asked.

Stored (setxattr/getxattr/listxattr/removexattr): any user.* name outside the reserved
user.s3mpfs.* and user.s3.*, kept in the inode (Inode.xattrs) and in S3 as s3fs-fuse stores
them, in x-amz-meta-xattr (xattrcodec.py); how a change reaches S3 is attrstore.py's. S3
allows 2 KB of user metadata per object: a set beyond it fails with E2BIG and changes
nothing. A set or remove of a reserved name fails with EPERM; other namespaces (security.*,
trusted.*, system.posix_acl_*) are not supported: EOPNOTSUPP on set and remove (and on a
get of a POSIX ACL, as a filesystem mounted without ACLs answers), ENODATA on other gets.

Computed (read-only):

    user.s3mpfs.progress   on a file being written, key=value text:
                           state=writing written=20971520 uploaded=16777216 parts_done=2
                           parts_in_flight=0 buffered=4194304
    user.s3mpfs.status     on the mount's root: JSON of every upload in progress (what
                           `s3mpfs status MOUNTPOINT` reads and prints)

Adding a name is one entry in XATTRS: an async function (fs, inode) -> bytes, or None where
the attribute does not exist on that inode (getxattr answers ENODATA, listxattr leaves it out).
    user.s3.etag           the stored object's ETag (one HEAD)
    user.s3.checksum       the stored object's checksum, "CRC64NVME:<base64>" (one HEAD)
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from s3mpfs import __version__
from s3mpfs.errors import FsError
from s3mpfs.inodes import METADATA_MAX, ROOT_INODE, Inode, metadata_size
from s3mpfs.store.base import ObjectInfo
from s3mpfs.upload import State, Upload

log = logging.getLogger(__name__)

class Source(Protocol):
    """What xattrs needs of the filesystem (fs.Filesystem provides it), and nothing more."""

    def writer(self, inode: Inode) -> Upload | None: ...

    def uploads(self) -> list[tuple[str, Upload]]: ...

    def mount_facts(self) -> dict[str, Any]: ...

    async def stored(self, inode: Inode) -> ObjectInfo | None: ...

    async def read_meta(self, inode: Inode) -> None:
        """Read the x-amz-meta of an inode whose metadata is not known yet (one HEAD)."""
        ...


PROGRESS = "user.s3mpfs.progress"
STATUS = "user.s3mpfs.status"
# Linux refuses xattr values over 64 KiB (XATTR_SIZE_MAX); the status JSON stays below this.
STATUS_MAX_BYTES = 60_000

STATE_NAMES = {
    State.NEW: "open",  # opened, nothing written yet
    State.DIRTY: "writing",  # bytes written that S3 does not hold as an object yet
    State.CLEAN: "stored",  # everything written is in S3 (committed at a close)
    State.FAILED: "failed",
    State.DISCARDED: "discarded",
    State.CLOSED: "closed",
}


def progress(upload: Upload) -> dict[str, Any]:
    """Where a writer stands: bytes written, bytes S3 holds, parts done and in flight."""
    live = upload.state in (State.NEW, State.DIRTY, State.CLEAN)
    return {
        "state": STATE_NAMES.get(upload.state, upload.state.value),
        "written": upload.size,
        "uploaded": upload.bytes_in_s3,
        "parts_done": upload.parts_sent,
        "parts_in_flight": upload.parts_in_flight if live else 0,
        "buffered": upload.buffered_bytes if live else 0,
    }


def format_progress(fields: dict[str, Any]) -> bytes:
    return " ".join(f"{k}={v}" for k, v in fields.items()).encode()


def parse_progress(value: bytes | str) -> dict[str, str]:
    text = value.decode() if isinstance(value, bytes) else value
    return dict(item.partition("=")[::2] for item in text.split())


def mount_status(fs: Source) -> dict[str, Any]:
    uploads = [{"path": path, "key": upload.key, **progress(upload)}
               for path, upload in fs.uploads()]
    uploads.sort(key=lambda u: u["path"])
    status: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        **fs.mount_facts(),  # prefix, read_only, part_size, parts_in_flight, max_...
        "uploads": uploads,
        "more_uploads": 0,
    }
    while len(_json(status)) > STATUS_MAX_BYTES and status["uploads"]:
        status["uploads"].pop()
        status["more_uploads"] += 1
    return status


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _progress(fs: Source, inode: Inode) -> bytes | None:
    writer = fs.writer(inode)
    return None if writer is None else format_progress(progress(writer))


async def _status(fs: Source, inode: Inode) -> bytes | None:
    return _json(mount_status(fs)) if inode.ino == ROOT_INODE else None


async def _stored(fs: Source, inode: Inode) -> ObjectInfo | None:
    """What S3 holds under the file's key now (one HEAD): the truth a backup is checked by."""
    return await fs.stored(inode)


async def _etag(fs: Source, inode: Inode) -> bytes | None:
    info = await _stored(fs, inode)
    return None if info is None else info.etag.strip('"').encode()


async def _checksum(fs: Source, inode: Inode) -> bytes | None:
    info = await _stored(fs, inode)
    if info is None or info.checksum is None:
        return None
    return f"{info.checksum.algorithm}:{info.checksum.value}".encode()


Getter = Callable[[Source, Inode], Awaitable[bytes | None]]

XATTRS: dict[str, Getter] = {
    PROGRESS: _progress,
    STATUS: _status,
    "user.s3.etag": _etag,  # S3's ETag (md5 of the part md5s, "-N", for multipart objects)
    "user.s3.checksum": _checksum,  # e.g. CRC64NVME:base64, as S3 stored and verified it
}


async def get(fs: Source, inode: Inode, name: str) -> bytes | None:
    getter = XATTRS.get(name)
    return None if getter is None else await getter(fs, inode)


# listxattr must stay cheap (cp -a, rsync -X and getfattr -d call it per file), and it lists
# only what a copy of the file should carry: the stored user.* names. s3mpfs's own attributes
# (user.s3mpfs.progress/status, user.s3.*) are read by name only: listed, every cp -a / rsync -X
# out of the mount would copy them onto the restored files, and every rsync -X into it would
# try to remove them (rsync -X lists its temporary file while writing it: progress was there).

# -- stored user.* attributes -----------------------------------------------------------------

USER = "user."
RESERVED = ("user.s3mpfs.", "user.s3.")
POSIX_ACLS = ("system.posix_acl_access", "system.posix_acl_default")
XATTR_CREATE, XATTR_REPLACE = 1, 2  # setxattr(2) flags


def stored_name(name: str) -> bool:
    """A name kept with the object (user.*, not reserved)."""
    return name.startswith(USER) and not name.startswith(RESERVED) and name not in XATTRS


def check_settable(name: str) -> None:
    if name in XATTRS or name.startswith(RESERVED):
        raise FsError(errno.EPERM, f"{name} is s3mpfs's, read-only")
    if not name.startswith(USER):
        raise FsError(errno.EOPNOTSUPP, f"{name}: only user.* attributes are supported")


def set_stored(inode: Inode, name: str, value: bytes, flags: int = 0) -> None:
    """Set a stored attribute in memory (ctime moves), or raise and change nothing."""
    check_settable(name)
    exists = name in inode.xattrs
    if flags & XATTR_CREATE and exists:
        raise FsError(errno.EEXIST)
    if flags & XATTR_REPLACE and not exists:
        raise FsError(errno.ENODATA)
    old, ctime = dict(inode.xattrs), inode.ctime_ns
    inode.xattrs[name] = bytes(value)
    inode.changed_now()
    size = metadata_size(inode.metadata())
    if size > METADATA_MAX:
        inode.xattrs, inode.ctime_ns = old, ctime
        log.warning("%s: %s not set: the object's metadata would be %d bytes, S3 allows %d "
                    "(E2BIG)", inode.path, name, size, METADATA_MAX)
        raise FsError(errno.E2BIG, f"S3 keeps at most {METADATA_MAX} bytes of metadata")


def remove_stored(inode: Inode, name: str) -> None:
    check_settable(name)
    if name not in inode.xattrs:
        raise FsError(errno.ENODATA)
    del inode.xattrs[name]
    inode.changed_now()


async def get_any(fs: Source, inode: Inode, name: str) -> bytes:
    """getxattr: a computed attribute, a stored one (x-amz-meta read first), or the errno."""
    if name in XATTRS:
        value = await get(fs, inode, name)
    elif stored_name(name):
        if not inode.known:
            await fs.read_meta(inode)
        value = inode.xattrs.get(name)
    elif name in POSIX_ACLS:
        raise FsError(errno.EOPNOTSUPP)
    else:
        value = None
    if value is None:
        raise FsError(errno.ENODATA)
    return value


async def names(fs: Source, inode: Inode) -> list[str]:
    if not inode.known:
        await fs.read_meta(inode)
    return sorted(inode.xattrs)
