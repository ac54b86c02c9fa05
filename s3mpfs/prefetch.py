"""Reads of existing objects: ranged GETs through a window that grows while reads are
sequential and shrinks back on a seek.

The first request is small (INITIAL_WINDOW) so `head`/`file` get their first bytes fast; each
sequential read that runs past the window doubles it up to MAX_WINDOW; a read elsewhere resets
it, so random reads never download the rest of the object. Every GET carries If-Match with the
ETag seen at open: if the object is replaced while it is read, S3 answers 412 and the read
fails with ESTALE instead of returning bytes spliced from two versions.
"""

from __future__ import annotations

import errno

from s3mpfs.config import MiB
from s3mpfs.errors import FsError, PreconditionFailed
from s3mpfs.store.base import ObjectStore

# 1 MiB + 128 KiB is mountpoint-s3's first request size (prefetch.rs INITIAL_REQUEST_SIZE):
# big enough for one kernel read burst, small enough to answer `head` quickly.
INITIAL_WINDOW = 1 * MiB + 128 * 1024
MAX_WINDOW = 32 * MiB


class Reader:
    def __init__(self, store: ObjectStore, key: str, etag: str | None, size: int) -> None:
        self.store, self.key, self.etag, self.size = store, key, etag, size
        self._start = 0
        self._data = b""
        self._window = INITIAL_WINDOW

    async def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        buf_end = self._start + len(self._data)
        if self._start <= offset and end <= buf_end:
            return self._data[offset - self._start:end - self._start]
        if offset == buf_end and self._data:
            self._window = min(self._window * 2, MAX_WINDOW)  # sequential: grow
        elif not (self._start <= offset < buf_end):
            self._window = INITIAL_WINDOW  # a seek: start small again
        fetch_end = min(max(end, offset + self._window), self.size)
        try:
            data = await self.store.get_range(self.key, offset, fetch_end, if_match=self.etag)
        except PreconditionFailed as exc:
            raise FsError(errno.ESTALE, f"{self.key} changed while it was read") from exc
        self._start, self._data = offset, data
        return data[:end - offset]
