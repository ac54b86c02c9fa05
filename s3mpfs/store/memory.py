"""MemoryStore: an in-process ObjectStore with S3's rules, for fast unit tests.

It keeps the rules the filesystem relies on and that tests/store/test_contract.py checks against
moto as well: non-last parts must be >= 5 MiB (EntityTooSmall), parts listed in ascending order,
re-uploading a part number replaces it, no object until Complete, abort forgets the parts,
If-Match on reads and copies, multipart ETags of the form md5(md5s)-N.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import trio

from s3mpfs.checksums import Checksum, compute
from s3mpfs.config import MIN_PART_SIZE
from s3mpfs.errors import NotFound, PreconditionFailed, StoreError
from s3mpfs.store.base import Data, ListPage, ObjectInfo, PartInfo, UploadInfo


@dataclass
class _Object:
    data: bytes
    etag: str
    mtime: float
    metadata: dict[str, str]
    checksum: Checksum | None = None


@dataclass
class _Upload:
    key: str
    metadata: dict[str, str]
    initiated: float
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    algorithm: str | None = None


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


class MemoryStore:
    def __init__(self, *, min_part_size: int = MIN_PART_SIZE) -> None:
        self.objects: dict[str, _Object] = {}
        self.uploads: dict[str, _Upload] = {}
        self.counts: Counter[str] = Counter()
        self.min_part_size = min_part_size
        self._ids = itertools.count(1)

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
            raise NotFound(f"no such upload: {upload_id}", code="NoSuchUpload")
        return up

    async def head(self, key: str) -> ObjectInfo:
        await self._op("HeadObject")
        obj = self._get(key)
        return ObjectInfo(key, len(obj.data), obj.etag, obj.mtime, dict(obj.metadata),
                          obj.checksum)

    async def list_page(
        self, prefix: str, *, delimiter: str | None = "/", token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        await self._op("ListObjectsV2")
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last = ""
        for key in sorted(self.objects):
            if not key.startswith(prefix) or (token is not None and key <= token):
                continue
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
        data = self._get(key, if_match).data
        if start >= len(data):
            raise StoreError(f"range starts past the end of {key}", code="InvalidRange")
        return data[start:end]

    async def put(self, key: str, data: Data, *, metadata: Mapping[str, str],
                  checksum: Checksum | None = None) -> str:
        await self._op("PutObject")
        body = bytes(data)
        stored = _verify(checksum, body)
        etag = _md5_etag(body)
        self.objects[key] = _Object(body, etag, time.time(), _meta(metadata),
                                    stored if stored and stored.algorithm != "MD5" else None)
        return etag

    async def copy(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None,
        src_etag: str | None = None,
    ) -> str:
        await self._op("CopyObject")
        src = self._get(src_key, src_etag)
        if src_key == dst_key and metadata is None:
            raise StoreError("copying an object onto itself must change its metadata",
                             code="InvalidRequest")
        meta = dict(src.metadata) if metadata is None else _meta(metadata)
        self.objects[dst_key] = _Object(src.data, src.etag, time.time(), meta)
        return src.etag

    async def delete(self, key: str) -> None:
        await self._op("DeleteObject")
        self.objects.pop(key, None)

    async def create_upload(self, key: str, *, metadata: Mapping[str, str],
                            checksum_algorithm: str | None = None) -> str:
        await self._op("CreateMultipartUpload")
        upload_id = f"mem-upload-{next(self._ids)}"
        self.uploads[upload_id] = _Upload(key, _meta(metadata), time.time(),
                                          algorithm=checksum_algorithm)
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: Data,
                          checksum: Checksum | None = None) -> str:
        await self._op("UploadPart")
        body = bytes(data)
        _verify(checksum, body)
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
        src = self._get(src_key, src_etag)
        if end > len(src.data):
            raise StoreError("copy range beyond the source object", code="InvalidRange")
        return self._store_part(key, upload_id, number, src.data[start:end])

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
        part_checksums: Mapping[int, Checksum] | None = None,
        checksum: Checksum | None = None,
    ) -> str:
        await self._op("CompleteMultipartUpload")
        up = self._upload(key, upload_id)
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
        self.objects[key] = _Object(data, etag, time.time(), up.metadata, full)
        del self.uploads[upload_id]
        return etag

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self._op("AbortMultipartUpload")
        self.uploads.pop(upload_id, None)  # aborting a gone upload succeeds, as in BotoStore

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        await self._op("ListParts")
        up = self._upload(key, upload_id)
        return [PartInfo(n, len(b), e) for n, (b, e) in sorted(up.parts.items())]

    async def list_uploads(self, prefix: str = "") -> list[UploadInfo]:
        await self._op("ListMultipartUploads")
        return sorted(
            (UploadInfo(u.key, uid, u.initiated) for uid, u in self.uploads.items()
             if u.key.startswith(prefix)),
            key=lambda u: (u.key, u.initiated),
        )
