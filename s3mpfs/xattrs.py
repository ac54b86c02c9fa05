"""Extended attributes the filesystem serves itself: read-only, computed when asked.

    user.s3mpfs.progress   on a file being written, key=value text:
                           state=writing written=20971520 uploaded=16777216 parts_done=2
                           parts_in_flight=0 buffered=4194304
    user.s3mpfs.status     on the mount's root: JSON of every upload in progress (what
                           `s3mpfs status MOUNTPOINT` reads and prints)

Adding a name is one entry in XATTRS: an async function (fs, inode) -> bytes, or None where
the attribute does not exist on that inode (getxattr answers ENODATA, listxattr leaves it out).
The user.s3.* names are reserved for S3's own attributes (ETag, checksums).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from s3mpfs import __version__
from s3mpfs.inodes import ROOT_INODE, Inode
from s3mpfs.upload import State, Upload

if TYPE_CHECKING:
    from s3mpfs.fs import Filesystem

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
    """Where a writer stands: bytes written, bytes S3 holds, parts done and in flight.

    `uploaded` counts parts S3 acknowledged (every part but a file's last is part_size bytes,
    and after a close() they are the first parts of the continued file), or the whole file
    once a close() committed everything written. Parts in flight are the parts of the open
    multipart upload that were started and not acknowledged yet (upload.py numbers them from
    1 and records each acknowledged one).
    """
    live = upload.state in (State.NEW, State.DIRTY, State.CLEAN)
    in_flight = 0
    if live and upload._upload_id is not None:
        in_flight = max(0, upload._next_part - 1 - len(upload._parts))
    if upload.state is State.CLEAN:
        uploaded = upload.size
    else:
        uploaded = max(upload.committed_size, upload.parts_sent * upload.cfg.part_size)
    return {
        "state": STATE_NAMES.get(upload.state, upload.state.value),
        "written": upload.size,
        "uploaded": min(uploaded, upload.size) if live else uploaded,
        "parts_done": upload.parts_sent,
        "parts_in_flight": in_flight,
        "buffered": upload.buffered_bytes if live else 0,
    }


def format_progress(fields: dict[str, Any]) -> bytes:
    return " ".join(f"{k}={v}" for k, v in fields.items()).encode()


def parse_progress(value: bytes | str) -> dict[str, str]:
    text = value.decode() if isinstance(value, bytes) else value
    return dict(item.partition("=")[::2] for item in text.split())


def mount_status(fs: Filesystem) -> dict[str, Any]:
    uploads = [{"path": h.inode.path, "key": h.upload.key, **progress(h.upload)}
               for h in fs.handles.writers()]
    uploads.sort(key=lambda u: u["path"])
    status: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        "prefix": fs.opts.prefix,
        "read_only": fs.opts.read_only,
        "part_size": fs.opts.upload.part_size,
        "parts_in_flight": fs.budget.in_flight,
        "max_parts_in_flight": fs.budget.max_parts,
        "uploads": uploads,
        "more_uploads": 0,
    }
    while len(_json(status)) > STATUS_MAX_BYTES and status["uploads"]:
        status["uploads"].pop()
        status["more_uploads"] += 1
    return status


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _progress(fs: Filesystem, inode: Inode) -> bytes | None:
    return None if inode.writer is None else format_progress(progress(inode.writer))


async def _status(fs: Filesystem, inode: Inode) -> bytes | None:
    return _json(mount_status(fs)) if inode.ino == ROOT_INODE else None


Getter = Callable[["Filesystem", Inode], Awaitable[bytes | None]]

XATTRS: dict[str, Getter] = {
    PROGRESS: _progress,
    STATUS: _status,
}


async def get(fs: Filesystem, inode: Inode, name: str) -> bytes | None:
    getter = XATTRS.get(name)
    return None if getter is None else await getter(fs, inode)


async def names(fs: Filesystem, inode: Inode) -> list[str]:
    return [name for name, getter in XATTRS.items() if await getter(fs, inode) is not None]
