"""Does the process that opened a file still hold it? Tells a flush that a forked copy of the
descriptor sends apart from the opener's own close.

The kernel sends FLUSH on every close() of a descriptor of an open file, including the copies a
fork() inherits: a child's exit, or the close-on-exec sweep when one thread of a program spawns a
process while another thread writes (Python's subprocess closes every descriptor in the child).
s3mpfs commits on flush so that errors reach close(); committing on such a flush would store a
half-written file, and if a later part then failed, close() would report EIO with a truncated
object already in S3. mountpoint-s3 compares the flush's pid with the opener's; pyfuse3 gives
flush no pid, so we look at the opener instead: if it still holds a writable descriptor of the
file, this close was not its last, another flush will follow (its own close, or its exit), and
the commit waits for that one. The kernel removes a descriptor from the closer's table before it
sends FLUSH, so the opener's own close never finds itself.

Any doubt answers "not held", which commits as before: /proc not readable (another user's
process), a kernel older than 5.14 (no `ino:` in fdinfo), an opener with more descriptors than
we are willing to scan.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# Reading fdinfo costs ~10 us a descriptor; beyond this many we commit rather than scan.
MAX_FDS_SCANNED = 4096


def process_of(tid: int) -> int | None:
    """The process (thread group) of the thread FUSE names as the caller: the fd table is per
    process, and the opening thread may be gone (a thread pool) while the process holds on."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def holds_writable(pid: int, mnt: int, ino: int) -> bool:
    """True if process `pid` has a descriptor open for writing on inode `ino` of mount `mnt`."""
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return False
    if len(fds) > MAX_FDS_SCANNED:
        return False
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                info = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
            if int(info[b"mnt_id"]) != mnt or int(info[b"ino"]) != ino:
                continue
            flags = int(info[b"flags"], 8)
        except (OSError, KeyError, ValueError):
            continue  # closed meanwhile, or an fdinfo without `ino:`
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR) and not flags & os.O_PATH:
            return True
    return False


__all__ = ["holds_writable", "process_of"]


def signal_pending(pid: int | None) -> bool:
    """Has process/thread `pid` (the caller of a FUSE request) a signal pending that it does
    not block, or is it gone? The kernel waits for a FUSE reply even after a signal (it sends
    FUSE_INTERRUPT, which pyfuse3 does not pass on), so a long operation asks this between
    steps and stops with EINTR (zerofill.py). A fatal signal (Ctrl-C without a handler) shows
    as SIGKILL pending. Unknown (no pid, /proc not readable): False."""
    if pid is None:
        return False
    masks: dict[bytes, int] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                name, _, value = line.partition(b":")
                if name in (b"SigPnd", b"ShdPnd", b"SigBlk"):
                    masks[name] = int(value.strip(), 16)
    except FileNotFoundError:
        return True  # the caller is gone: nobody waits for the result
    except (OSError, ValueError):
        return False
    pending = masks.get(b"SigPnd", 0) | masks.get(b"ShdPnd", 0)
    return bool(pending & ~masks.get(b"SigBlk", 0))
