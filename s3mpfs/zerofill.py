"""Zero-fill for a file grown past its end (ftruncate, fallocate, a write far past the end).

The zeros stream as parts like written bytes (sparse files are stored dense), but bounded and
interruptible:
  * a size past the largest file (parts.max_file_size: S3's 5 TiB, or the part tiers' limit
    with --max-parts) is EFBIG before anything changes (parts.check_file_size);
  * a FUSE request cannot be interrupted once the daemon has it (the kernel waits for the
    reply, and pyfuse3 does not pass FUSE_INTERRUPT on), so the fill asks before every MiB
    whether the calling process has a signal pending (openers.signal_pending) and stops with
    EINTR: Ctrl-C ends `truncate -s 20G` within a part's upload time;
  * it stops at the first failed part with that part's errno.
The upload is then aborted (upload.py): S3 keeps its previous object, if any.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator

from s3mpfs.config import MiB
from s3mpfs.errors import FsError, errno_for

log = logging.getLogger(__name__)

_ZEROS = bytes(1 * MiB)

Interrupted = Callable[[], bool]  # True once the calling process has a signal pending


def never() -> bool:
    return False


def chunks(key: str, count: int, failed: Callable[[], BaseException | None],
           interrupted: Interrupted) -> Iterator[memoryview]:
    """`count` zeros, 1 MiB at a time. Raises FsError (the failed part's errno, or EINTR)
    before the next chunk once `failed()` returns an error or `interrupted()` is true."""
    done = 0
    while done < count:
        error = failed()
        if error is None and interrupted():
            error = FsError(errno.EINTR, "interrupted (a signal for the calling process, or "
                            "the mount is stopping)")
        if error is not None:
            log.error("%s: zero-fill stopped after %d of %d bytes: %s; the upload is aborted "
                      "and S3 keeps its previous object (if any)", key, done, count, error)
            raise FsError(errno_for(error), f"zero-fill of {key} stopped: {error}")
        n = min(count - done, len(_ZEROS))
        yield memoryview(_ZEROS)[:n]
        done += n
