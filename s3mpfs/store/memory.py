"""MemoryStore: an in-process ObjectStore with S3's rules, for fast unit tests.

It keeps the rules the filesystem relies on and that tests/store/test_contract.py checks against
moto as well: non-last parts must be >= 5 MiB (EntityTooSmall), parts listed in ascending order,
re-uploading a part number replaces it, no object until Complete, abort forgets the parts,
If-Match on reads and copies, multipart ETags of the form md5(md5s)-N.

Object options (objectargs.py) go through the same ObjectArgs as in BotoStore: every request's
extra parameters are recorded in `sent` (what BotoStore would send), objects keep theirs in
`props`, and the rules S3 applies to them hold here too: If-None-Match: * / If-Match on writes
(412), reads and copies of an archived object (GLACIER, DEEP_ARCHIVE) refused until restored,
an SSE-C object read only with its key (a plain object read with one is served, as BotoStore's
retry without the key does), every part and the Complete of an SSE-C upload carrying the key.
Upload markers (markers.py) are written and deleted with the same requests as BotoStore's.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from s3mpfs.checksums import Checksum, compute
from s3mpfs.config import ARCHIVE_CLASSES, MIN_PART_SIZE, ObjectOptions
from s3mpfs.errors import (
    AccessDenied,
    NeedsRestore,
    NoSuchUpload,
    NotFound,
    ObjectExists,
    PreconditionFailed,
    StoreError,
)
from s3mpfs.store.base import (
    Buffers,
    Data,
    Deliver,
    ListPage,
    ObjectInfo,
    PartInfo,
    UploadInfo,
    fill,
)
from s3mpfs.store.markers import Markers
from s3mpfs.store.objectargs import (
    SYSTEM_HEADERS,
    ObjectArgs,
    Source,
    no_clobber_errors,
    system_headers,
    warn_refused,
)


@dataclass
class _Object:
    data: bytes
    etag: str
    mtime: float
    metadata: dict[str, str]
    checksum: Checksum | None = None
    # StorageClass, ServerSideEncryption, SSECustomerKey, ContentType, Tagging, ACL as given
    # (objectargs.py); "Restored": True makes an archived object readable.
    props: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Upload:
    key: str
    metadata: dict[str, str]
    initiated: float
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    algorithm: str | None = None
    props: dict[str, Any] = field(default_factory=dict)


# Sorts after every key that shares a prefix: keys are UTF-8 text, this is the last code point.
_AFTER_ALL = "\U0010ffff"


def _md5_etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def _verify(checksum: Checksum | None, body: bytes) -> Checksum | None:
    """What S3 does with a checksum header: recompute it and refuse the body on mismatch."""
    if checksum is None:
        return None
    actual = compute(checksum.algorithm.lower(), body)
    if actual is None or actual.value != checksum.value:
        raise StoreError(f"{checksum.algorithm} mismatch: the body was damaged",
                         code="BadDigest")
    return actual


def _meta(metadata: Mapping[str, str]) -> dict[str, str]:
    """x-amz-meta-* travel as HTTP headers: S3 hands their names back in lower case."""
    return {k.lower(): v for k, v in metadata.items()}


_CONDITIONS = ("IfNoneMatch", "IfMatch")
_NOT_KEPT = _CONDITIONS + ("Metadata", "MetadataDirective")


class MemoryStore:
    def __init__(self, *, min_part_size: int = MIN_PART_SIZE,
                 options: ObjectOptions | None = None) -> None:
        self.objects: dict[str, _Object] = {}
        self.uploads: dict[str, _Upload] = {}
        self.counts: Counter[str] = Counter()
        self.min_part_size = min_part_size
        self._ids = itertools.count(1)
        self.options = ObjectArgs(options)
        self.markers = Markers()  # of the uploads created with mark=True
        # (operation, key, the extra parameters objectargs gave it): what BotoStore would send.
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def _send(self, op: str, key: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        self.sent.append((op, key, dict(extra)))
        return dict(extra)

    @staticmethod
    def _readable(key: str, obj: _Object, extra: Mapping[str, Any], prefix: str = "",
                  *, archived_ok: bool = False) -> None:
        """S3's rules for reading an object: its SSE-C key, and no archived class."""
        stored = obj.props.get("SSECustomerKey")
        given = extra.get(prefix + "SSECustomerKey")
        if stored is not None and given is None:
            raise StoreError(f"{key}: the object was stored using a form of Server Side "
                             "Encryption; the correct parameters must be provided",
                             code="InvalidRequest", status=400)
        if stored is not None and given != stored:
            raise AccessDenied(f"{key}: wrong SSE-C key", code="AccessDenied", status=403)
        if (not archived_ok and obj.props.get("StorageClass") in ARCHIVE_CLASSES
                and not obj.props.get("Restored")):
            raise NeedsRestore(f"{key}: the object is in {obj.props['StorageClass']} and needs "
                               "a restore", code="InvalidObjectState", status=403)

    def _check_condition(self, op: str, key: str, extra: Mapping[str, Any]) -> None:
        existing = self.objects.get(key)
        with no_clobber_errors(op, key, extra):
            if extra.get("IfNoneMatch") == "*" and existing is not None:
                raise PreconditionFailed(f"{key} exists", code="PreconditionFailed", status=412)
            if_match = extra.get("IfMatch")
            if if_match is not None:
                if existing is None:
                    raise NotFound(f"no such key: {key}", code="NoSuchKey", status=404)
                if existing.etag.strip('"') != str(if_match).strip('"'):
                    raise PreconditionFailed(f"{key} changed", code="PreconditionFailed",
                                             status=412)

    @staticmethod
    def _part_key(key: str, up: _Upload, extra: Mapping[str, Any]) -> None:
        """Every part (and the Complete) of an SSE-C upload carries the upload's key."""
        if up.props.get("SSECustomerKey") != extra.get("SSECustomerKey"):
            raise StoreError(f"{key}: the SSE-C parameters differ from the upload's",
                             code="InvalidRequest", status=400)

    async def _op(self, name: str) -> None:
        self.counts[name] += 1
        await trio.lowlevel.checkpoint()

    def _get(self, key: str, if_match: str | None = None) -> _Object:
        obj = self.objects.get(key)
        if obj is None:
            raise NotFound(f"no such key: {key}", code="NoSuchKey")
        if if_match is not None and obj.etag != if_match:
            raise PreconditionFailed(f"{key} changed", code="PreconditionFailed")
        return obj

    def _upload(self, key: str, upload_id: str) -> _Upload:
        up = self.uploads.get(upload_id)
        if up is None or up.key != key:
            raise NoSuchUpload(f"no such upload: {upload_id}", code="NoSuchUpload")
        return up

    async def head(self, key: str) -> ObjectInfo:
        await self._op("HeadObject")
        extra = self._send("HeadObject", key, self.options.sse_c(key))
        obj = self._get(key)
        self._readable(key, obj, extra, archived_ok=True)  # HEAD works on archived objects
        headers = system_headers(obj.props)
        if obj.props.get("ContentType"):
            headers["ContentType"] = obj.props["ContentType"]
        return ObjectInfo(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata),
                          obj.checksum, headers)

    async def list_page(
        self, prefix: str, *, delimiter: str | None = "/", token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        await self._op("ListObjectsV2")
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last = ""
        keys = sorted(self.objects)
        # Start at the first key after the token (or at the prefix), not at the beginning:
        # a directory of 100,000 keys would otherwise cost O(n) per page.
        first = bisect.bisect_right(keys, token) if token is not None else 0
        for key in keys[max(first, bisect.bisect_left(keys, prefix)):]:
            if not key.startswith(prefix):
                break  # sorted: the prefix's keys are contiguous
            rest = key[len(prefix):]
            common = None
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                if prefixes and prefixes[-1] == common:
                    continue
            if len(objects) + len(prefixes) == max_keys:
                return ListPage(objects, prefixes, last)
            if common is not None:
                prefixes.append(common)
                last = common + _AFTER_ALL  # the next page resumes after the whole prefix
            else:
                obj = self.objects[key]
                objects.append(ObjectInfo(key, len(obj.data), obj.etag, obj.mtime))
                last = key
        return ListPage(objects, prefixes, None)

    async def get_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        if end <= start:
            return b""  # as BotoStore: no request for an empty range
        await self._op("GetObject")
        extra = self._send("GetObject", key, self.options.sse_c(key))
        obj = self._get(key, if_match)
        self._readable(key, obj, extra)
        data = obj.data
        if start >= len(data):
            raise StoreError(f"range starts past the end of {key}", code="InvalidRange")
        return data[start:end]

    async def get_pieces(
        self, key: str, start: int, sizes: Sequence[int], deliver: Deliver, *,
        if_match: str | None = None, buffers: Buffers | None = None,
    ) -> None:
        data = await self.get_range(key, start, start + sum(sizes), if_match=if_match)
        pos = 0
        for i, size in enumerate(sizes):
            await trio.lowlevel.checkpoint()  # pieces arrive over time, as from a socket
            if not deliver(i, fill(buffers, data[pos:pos + size], size)):
                return
            pos += size

    async def put(self, key: str, data: Data, *, metadata: Mapping[str, str],
                  checksum: Checksum | None = None, replacing: str | None = None,
                  create_only: bool = False) -> str:
        await self._op("PutObject")
        condition = self.options.condition(key, replacing, create_only)
        extra = self._send("PutObject", key, {**self.options.new_object(key), **condition})
        body = bytes(data)
        stored = _verify(checksum, body)
        try:
            self._check_condition("PutObject", key, extra)
        except ObjectExists as exc:
            warn_refused(exc)
            raise
        etag = _md5_etag(body)
        self.objects[key] = _Object(body, etag, time.time(), _meta(metadata),
                                    stored if stored and stored.algorithm != "MD5" else None,
                                    {k: v for k, v in extra.items() if k not in _NOT_KEPT})
        return etag

    async def copy(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None,
        src_etag: str | None = None,
    ) -> str:
        await self._op("CopyObject")
        src = self._get(src_key, src_etag)
        source = Source(src.etag, src.props.get("StorageClass", "STANDARD"),
                       src.props.get("ContentType"), dict(src.metadata),
                       system_headers(src.props))
        extra = self._send("CopyObject", dst_key,
                           self.options.copy(src_key, dst_key, metadata, source))
        self._readable(src_key, src, extra, "CopySource")
        if src_key == dst_key and "MetadataDirective" not in extra:
            raise StoreError("copying an object onto itself must change its metadata",
                             code="InvalidRequest")
        try:
            self._check_condition("CopyObject", dst_key, extra)
        except ObjectExists as exc:
            warn_refused(exc)
            raise
        replaced = extra.get("MetadataDirective") == "REPLACE"
        meta = _meta(extra["Metadata"]) if replaced else dict(src.metadata)
        props = {k: v for k, v in extra.items()
                 if k not in _NOT_KEPT and not k.startswith("CopySource")}
        if not replaced:  # S3 copies Content-Type & co. with the metadata
            props.update({k: v for k, v in src.props.items()
                          if k == "ContentType" or k in SYSTEM_HEADERS})
        if "Tagging" in src.props:
            props["Tagging"] = src.props["Tagging"]  # x-amz-tagging-directive COPY
        self.objects[dst_key] = _Object(src.data, src.etag, time.time(), meta, None, props)
        return src.etag

    async def delete(self, key: str) -> None:
        await self._op("DeleteObject")
        self.objects.pop(key, None)

    async def create_upload(self, key: str, *, metadata: Mapping[str, str],
                            checksum_algorithm: str | None = None, mark: bool = False,
                            headers: Mapping[str, Any] | None = None) -> str:
        await self._op("CreateMultipartUpload")
        extra = self._send("CreateMultipartUpload", key,
                           self.options.new_object(key, headers))
        upload_id = f"mem-upload-{next(self._ids)}"
        self.uploads[upload_id] = _Upload(key, _meta(metadata), time.time(),
                                          algorithm=checksum_algorithm, props=extra)
        if mark:
            await self.markers.register(self, key, upload_id)
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: Data,
                          checksum: Checksum | None = None) -> str:
        await self._op("UploadPart")
        extra = self._send("UploadPart", key, self.options.sse_c(key))
        body = bytes(data)
        _verify(checksum, body)
        self._part_key(key, self._upload(key, upload_id), extra)
        return self._store_part(key, upload_id, number, body)

    def _store_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        up = self._upload(key, upload_id)
        if not 1 <= number <= 10_000:
            raise StoreError(f"part number {number} out of range", code="InvalidArgument")
        etag = _md5_etag(body)
        up.parts[number] = (body, etag)
        return etag

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, src_key: str, start: int, end: int,
        *, src_etag: str | None = None,
    ) -> str:
        await self._op("UploadPartCopy")
        extra = self._send("UploadPartCopy", key, {**self.options.sse_c(key),
                                                   **self.options.copy_source_sse_c(src_key)})
        src = self._get(src_key, src_etag)
        self._readable(src_key, src, extra, "CopySource")
        self._part_key(key, self._upload(key, upload_id), extra)
        if end > len(src.data):
            raise StoreError("copy range beyond the source object", code="InvalidRange")
        return self._store_part(key, upload_id, number, src.data[start:end])

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
        part_checksums: Mapping[int, Checksum] | None = None,
        checksum: Checksum | None = None, replacing: str | None = None,
        create_only: bool = False,
    ) -> str:
        await self._op("CompleteMultipartUpload")
        condition = self.options.condition(key, replacing, create_only)
        extra = self._send("CompleteMultipartUpload", key,
                           {**self.options.sse_c(key), **condition})
        up = self._upload(key, upload_id)
        self._part_key(key, up, extra)
        if not parts:
            raise StoreError("no parts", code="MalformedXML")
        numbers = [n for n, _ in parts]
        if numbers != sorted(set(numbers)):
            raise StoreError("parts not in ascending order", code="InvalidPartOrder")
        bodies = []
        for i, (number, etag) in enumerate(parts):
            stored = up.parts.get(number)
            if stored is None or stored[1] != etag:
                raise StoreError(f"part {number} missing or changed", code="InvalidPart")
            if i < len(parts) - 1 and len(stored[0]) < self.min_part_size:
                raise StoreError(f"part {number} is too small", code="EntityTooSmall")
            _verify((part_checksums or {}).get(number), stored[0])
            bodies.append(stored[0])
        digest = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for _, e in parts))
        etag = f'"{digest.hexdigest()}-{len(parts)}"'
        data = b"".join(bodies)
        # A FULL_OBJECT CRC64NVME upload: S3 checks the client's value, or computes its own.
        full = _verify(checksum, data)
        if full is None and up.algorithm == "CRC64NVME":
            full = compute("crc64nvme", data)
        try:
            self._check_condition("CompleteMultipartUpload", key, extra)
        except ObjectExists as exc:
            warn_refused(exc)
            raise
        self.objects[key] = _Object(data, etag, time.time(), up.metadata, full, up.props)
        del self.uploads[upload_id]
        await self.markers.unregister(self, upload_id)  # best effort
        return etag

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self._op("AbortMultipartUpload")
        self.uploads.pop(upload_id, None)  # aborting a gone upload succeeds, as in BotoStore
        await self.markers.unregister(self, upload_id)

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        await self._op("ListParts")
        up = self._upload(key, upload_id)
        return [PartInfo(n, len(b), e) for n, (b, e) in sorted(up.parts.items())]

    async def list_uploads(self, prefix: str = "", *,
                           max_uploads: int | None = None) -> list[UploadInfo]:
        await self._op("ListMultipartUploads")
        uploads = sorted(
            (UploadInfo(u.key, uid, u.initiated) for uid, u in self.uploads.items()
             if u.key.startswith(prefix)),
            key=lambda u: (u.key, u.initiated),
        )
        return uploads if max_uploads is None else uploads[:min(max_uploads, 1000)]
