"""Extended attributes the filesystem serves itself: read-only, computed when asked.

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

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from s3mpfs import __version__
from s3mpfs.inodes import ROOT_INODE, Inode
from s3mpfs.store.base import ObjectInfo
from s3mpfs.upload import State, Upload


class Source(Protocol):
    """What xattrs needs of the filesystem (fs.Filesystem provides it), and nothing more."""

    def writer(self, inode: Inode) -> Upload | None: ...

    def uploads(self) -> list[tuple[str, Upload]]: ...

    def mount_facts(self) -> dict[str, Any]: ...

    async def stored(self, inode: Inode) -> ObjectInfo | None: ...


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


# listxattr must stay cheap (cp -a, rsync -X and getfattr -d call it per file): the S3 names
# are listed for every stored file without asking S3; reading one does the HEAD.
_LISTED_WITHOUT_LOOKUP = {"user.s3.etag", "user.s3.checksum"}


async def names(fs: Source, inode: Inode) -> list[str]:
    out = []
    for name, getter in XATTRS.items():
        if name in _LISTED_WITHOUT_LOOKUP:
            present = not inode.is_dir and inode.etag is not None
        else:
            present = await getter(fs, inode) is not None
        if present:
            out.append(name)
    return out
