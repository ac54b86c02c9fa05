"""Error types, and the one table that turns them into errnos.

Two families, each mapped once at its boundary (the httpx idea):

    StoreError                 raised by store/ (boto.py maps botocore errors into these)
    ├── NotFound               no such key / upload (HEAD 404, NoSuchKey, NoSuchUpload)
    ├── NoSuchBucket
    ├── AccessDenied           403, bad credentials, signature mismatch
    ├── PreconditionFailed     412: If-Match / If-None-Match refused
    │   └── ObjectExists       412 on a --no-clobber write: an object is there (EEXIST)
    ├── NeedsRestore           InvalidObjectState: archived (GLACIER, DEEP_ARCHIVE) (EACCES)
    ├── Unreachable            endpoint refused, timed out or reset after retries
    └── (StoreError itself)    anything else (5xx after retries, malformed answers)

    FsError(errno, message)    raised by fs.py and below; fuse_ops.py turns it into FUSEError

`errno_for(exc)` decides which errno a StoreError becomes when it reaches a FUSE reply.
"""

from __future__ import annotations

import errno


class StoreError(Exception):
    """An S3 request failed (after the store's own retries)."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code  # S3's error code, or the botocore exception's class name
        self.status = status  # the HTTP status, when the server answered


class NotFound(StoreError):
    pass


class NoSuchBucket(StoreError):
    pass


class AccessDenied(StoreError):
    pass


class PreconditionFailed(StoreError):
    pass


class Unreachable(StoreError):
    pass


class ObjectExists(PreconditionFailed):
    """A --no-clobber write was refused: an object exists under the key (store/objectargs.py)."""


class NeedsRestore(StoreError):
    """The object is archived (GLACIER, DEEP_ARCHIVE): S3 reads or copies it only after a
    RestoreObject has completed (S3: 403 InvalidObjectState)."""


class FsError(Exception):
    """A filesystem-level failure carrying the errno the application will see."""

    def __init__(self, errno_: int, message: str = "") -> None:
        super().__init__(message or errno.errorcode.get(errno_, str(errno_)))
        self.errno = errno_


# Which errno an S3 failure becomes when an operation cannot go on. Anything not listed is EIO:
# "the storage failed", which is what cp/tar report as "Input/output error".
_STORE_ERRNO: dict[type[StoreError], int] = {
    NotFound: errno.ENOENT,
    NoSuchBucket: errno.EIO,
    AccessDenied: errno.EACCES,
    PreconditionFailed: errno.ESTALE,
    Unreachable: errno.EIO,
    ObjectExists: errno.EEXIST,
    NeedsRestore: errno.EACCES,
}


def errno_for(exc: BaseException) -> int:
    if isinstance(exc, FsError):
        return exc.errno
    for cls in type(exc).__mro__:
        if cls in _STORE_ERRNO:
            return _STORE_ERRNO[cls]
    return errno.EIO
