"""The ObjectStore protocol: the only way the filesystem talks to S3.

Two implementations stand behind it: boto.py (boto3 in trio worker threads, the real one) and
memory.py (a dict with S3's multipart rules, for fast unit tests). tests/store/test_contract.py
runs one suite against both so the fake stays honest.

Every method raises errors.StoreError subclasses only; keys are full S3 keys (prefix included).
Ranges are half-open [start, end). Checksums (checksums.Checksum) are verified by the store:
a mismatch raises StoreError (S3: BadDigest / InvalidRequest). Every store counts its calls
per operation in `counts` (S3 bills per request, so tests and the debug log look at these).

Beside the protocol, the store side holds what only stores use: objectargs.py (the per-request
parameters of the object options, and --no-clobber's conditions: the store applies
If-None-Match: * itself, callers pass only `replacing=ETAG`, the one object a write may
replace) and markers.py (the upload markers a store writes for `create_upload(mark=True)`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from s3mpfs.checksums import Checksum

# get_pieces' callbacks: where a piece goes (size -> a writable view of that many bytes), and
# what to do with it: (index, bytes) -> whether to go on reading.
Buffers = Callable[[int], memoryview]
Deliver = Callable[[int, bytes | memoryview], bool]

Data = bytes | bytearray | memoryview


def fill(buffers: Buffers | None, piece: bytes, size: int) -> bytes | memoryview:
    """A piece as get_pieces delivers it: copied into buffers(size) if given, else the bytes
    (for stores that cannot read straight into the buffer)."""
    if buffers is None:
        return piece
    view = buffers(size)
    view[:len(piece)] = piece
    return view[:len(piece)]


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    mtime: float  # LastModified, seconds since the epoch
    metadata: Mapping[str, str] = field(default_factory=dict)  # x-amz-meta-*, HEAD only
    checksum: Checksum | None = None  # the stored object's checksum, HEAD only
    # Content-Type, Cache-Control, Content-Disposition, Content-Encoding, Content-Language,
    # Expires as boto3 names them (ContentType, CacheControl, ...), HEAD only
    headers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("ContentType")
        return None if value is None else str(value)


@dataclass(frozen=True)
class ListPage:
    objects: list[ObjectInfo]
    prefixes: list[str]  # common prefixes, each ending in the delimiter
    next_token: str | None  # None on the last page


@dataclass(frozen=True)
class UploadInfo:
    key: str
    upload_id: str
    initiated: float


@dataclass(frozen=True)
class PartInfo:
    number: int
    size: int
    etag: str


class ObjectStore(Protocol):
    counts: Counter[str]

    async def head(self, key: str) -> ObjectInfo: ...

    async def list_page(
        self, prefix: str, *, delimiter: str | None = "/", token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage: ...

    async def get_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes: ...

    async def get_pieces(
        self, key: str, start: int, sizes: Sequence[int], deliver: Deliver, *,
        if_match: str | None = None, buffers: Buffers | None = None,
    ) -> None:
        """One GET of [start, start + sum(sizes)), its body handed over as it arrives:
        deliver(i, piece) for each size in order (a piece may come short if the object does).
        With `buffers`, each piece is read into buffers(size) and delivered as (a slice of)
        that view; without, as bytes. Stops early, closing the response, when deliver returns
        False. Errors as get_range; a failure part way leaves the rest undelivered."""
        ...

    async def put(self, key: str, data: Data, *, metadata: Mapping[str, str],
                  checksum: Checksum | None = None, replacing: str | None = None,
                  create_only: bool = False) -> str:
        """With --no-clobber the write carries If-None-Match: * (raising ObjectExists if an
        object is there), or with `replacing`, If-Match: that ETag (objectargs.py).
        `create_only`: If-None-Match: * also without --no-clobber (O_EXCL)."""
        ...

    async def copy(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None,
        src_etag: str | None = None,
    ) -> str: ...

    async def delete(self, key: str) -> None: ...

    async def create_upload(self, key: str, *, metadata: Mapping[str, str],
                            checksum_algorithm: str | None = None, mark: bool = False,
                            headers: Mapping[str, Any] | None = None) -> str:
        """mark: also write the upload's marker (best effort, markers.py), which this store
        deletes once it completes or aborts the upload. headers: Cache-Control & co.
        (objectargs.SYSTEM_HEADERS, boto3's names) for the new object."""
        ...

    async def upload_part(self, key: str, upload_id: str, number: int, data: Data,
                          checksum: Checksum | None = None) -> str: ...

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, src_key: str, start: int, end: int,
        *, src_etag: str | None = None,
    ) -> str: ...

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
        part_checksums: Mapping[int, Checksum] | None = None,
        checksum: Checksum | None = None, replacing: str | None = None,
        create_only: bool = False,
    ) -> str:
        """--no-clobber's condition, and create_only, as put()'s."""
        ...

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Idempotent: aborting an upload that is already gone succeeds."""

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]: ...

    async def list_uploads(self, prefix: str = "", *,
                           max_uploads: int | None = None) -> list[UploadInfo]:
        """Multipart uploads in progress under prefix: all of them, or with max_uploads only
        one ListMultipartUploads page of at most that many (S3 caps a page at 1000)."""
        ...
