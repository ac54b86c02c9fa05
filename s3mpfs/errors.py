"""Error types, and the one table that turns them into errnos.

Two families, each mapped once at its boundary (the httpx idea):

    StoreError                 raised by store/ (boto.py maps botocore errors into these)
    ├── NotFound               no such key (HEAD 404, NoSuchKey)
    │   └── NoSuchUpload       the multipart upload is gone (aborted by someone else, expired)
    ├── NoSuchBucket
    ├── AccessDenied           403, bad credentials, signature mismatch
    ├── PreconditionFailed     412: If-Match / If-None-Match refused
    │   └── ObjectExists       412 on a --no-clobber write: an object is there (EEXIST)
    ├── NeedsRestore           InvalidObjectState: archived (GLACIER, DEEP_ARCHIVE) (EACCES)
    ├── Unreachable            endpoint refused, timed out or reset after retries
    └── (StoreError itself)    anything else (5xx after retries, malformed answers)

    FsError(errno, message)    raised by fs.py and below; fuse_ops.py turns it into FUSEError

`errno_for(exc)` is the one table deciding which errno a StoreError becomes, wherever it ends an
operation: a FUSE reply (fuse_ops.py), a read (prefetch.py), a write, close or fsync (upload.py
wraps it in an FsError carrying that errno). Nothing else picks an errno for a store error.

    NotFound            ENOENT  the key is gone: lookup, read, and a write continuing or
                                appending to an object deleted meanwhile
    NoSuchUpload        EIO     the upload vanished under us (another client or a lifecycle rule
                                aborted it): the written bytes are lost, a genuine upload failure
    NoSuchBucket        EIO     the whole store is gone; ENOENT would blame one name
    AccessDenied        EACCES  S3 refused the request (policy, credentials, SSE-C key), on any
                                request: also a part, a PutObject or a Complete of an upload
    PreconditionFailed  ESTALE  the object this handle stands on was replaced (If-Match refused):
                                a read, a copy for chmod/rename, or a write continuing the object
    ObjectExists        EEXIST  --no-clobber refused to replace an object
    NeedsRestore        EACCES  an archived object (GLACIER, DEEP_ARCHIVE) read or copied
    Unreachable         EIO     connection refused, timed out, reset (after retries)
    StoreError          EIO     anything else: 5xx after retries, bad digests, malformed answers

EIO means "the storage failed" (`cp`, `tar` report "Input/output error"): an upload failing
that way (5xx, timeouts, connection errors) fails close() with EIO; refused, it fails with
EACCES. An FsError keeps its own errno. Once an upload has failed, every later write and close
of that handle repeats the errno of the failure (EIO after an EINVAL/EFBIG write: upload.py).
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


class NoSuchUpload(NotFound):
    """S3's NoSuchUpload: a NotFound (code that retries an abort or Complete treats it as one),
    but EIO for the writer (see the table above)."""


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


# The table of the module docstring. Anything not listed is EIO; the most specific class wins.
_STORE_ERRNO: dict[type[StoreError], int] = {
    NotFound: errno.ENOENT,
    NoSuchUpload: errno.EIO,
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
