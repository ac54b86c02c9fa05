"""BotoStore: the ObjectStore on boto3, each call in a trio worker thread.

One boto3 client serves every thread (clients are thread-safe, sessions are not: boto/boto3#1592).
Threads are bounded by one CapacityLimiter, and botocore's connection pool is sized to match it:
with more requests than pooled connections, botocore queues them invisibly (its default is 10).

Retries live here, in `_call`, and nowhere else: botocore makes one attempt per call, and a
transient failure (HTTP 500/502/503/504, throttling, a reset or timed-out connection, a damaged
body) is retried with jittered exponential backoff, up to `attempts` in all, each retry logged
as a WARNING. Not botocore's "standard" mode: its retry quota is per client (500 tokens, 14 per
retried 5xx, refunded only by successes), so after an outage of ~35 failed retries a mount would
stop retrying altogether. A request that raises out of `_call` has failed for good.
`_map_errors` is the one place botocore's exceptions become StoreError types.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import boto3
import botocore.auth
import botocore.config
import botocore.exceptions
import botocore.utils
import trio

from s3mpfs import requestlog
from s3mpfs.checksums import Checksum
from s3mpfs.config import ObjectOptions, S3Config
from s3mpfs.errors import (
    AccessDenied,
    NeedsRestore,
    NoSuchBucket,
    NoSuchUpload,
    NotFound,
    ObjectExists,
    PreconditionFailed,
    StoreError,
    Unreachable,
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
from s3mpfs.store.heads import QuickHeads, parse_timestamp
from s3mpfs.store.markers import Markers
from s3mpfs.store.objectargs import (
    ObjectArgs,
    Source,
    no_clobber_errors,
    system_headers,
    warn_refused,
)

log = logging.getLogger(__name__)
# Requests on an upload id: their "not found" is the upload's.
_UPLOAD_ID_OPS = {"UploadPart", "ListParts", "CompleteMultipartUpload", "AbortMultipartUpload"}
T = TypeVar("T")

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "InvalidToken", "ExpiredToken", "AllAccessDisabled"}
_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)
_EXPLAIN = {
    "InvalidAccessKeyId": "the access key id is not known to the server",
    "SignatureDoesNotMatch": "the secret access key is wrong",
    "AccessDenied": "access denied",
    "403": "access denied (HTTP 403)",
    "NoSuchBucket": "the bucket does not exist",
}
# An archived object (GLACIER, DEEP_ARCHIVE) not restored: GET says InvalidObjectState, a copy
# from it ObjectNotInActiveTierError (both HTTP 403, which must not read as "access denied").
_ARCHIVED = {"InvalidObjectState", "ObjectNotInActiveTierError"}


@contextlib.contextmanager
def _map_errors(what: str) -> Iterator[None]:
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"{what}: {_EXPLAIN.get(code, code)}" if what else _EXPLAIN.get(code, code)
        if err.get("Message") and code not in _EXPLAIN:
            text += f" ({err['Message']})"
        if code == "NoSuchBucket":
            raise NoSuchBucket(text, code=code) from exc
        if code in _ARCHIVED:
            where = err.get("StorageClass") or "an archive storage class (GLACIER, DEEP_ARCHIVE)"
            raise NeedsRestore(
                f"{what}: the object is in {where} and needs a restore before it can be read "
                "or copied (S3 RestoreObject, e.g. aws s3api restore-object; then wait until "
                "HeadObject's Restore says ongoing-request=\"false\")", code=code,
                status=status) from exc
        # Ceph 16 answers NoSuchKey where S3 says NoSuchUpload (a part, a listing or the
        # Complete of an upload that is gone); UploadPartCopy's NoSuchKey is its source's.
        if code == "NoSuchUpload" or (code == "NoSuchKey"
                                      and what.partition(" ")[0] in _UPLOAD_ID_OPS):
            raise NoSuchUpload(text, code=code, status=status) from exc
        if code in _NOT_FOUND or status == 404:
            raise NotFound(text, code=code) from exc
        if code in _DENIED or status == 403:
            raise AccessDenied(text, code=code) from exc
        if code in ("PreconditionFailed", "412") or status == 412:
            raise PreconditionFailed(text, code=code, status=status) from exc
        raise StoreError(text, code=code, status=status) from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise AccessDenied(f"{what}: no AWS credentials found".lstrip(": "),
                           code="NoCredentials") from exc
    except _UNREACHABLE as exc:
        raise Unreachable(f"{what}: {exc}".lstrip(": "), code=type(exc).__name__) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise StoreError(f"{what}: {exc}".lstrip(": "), code=type(exc).__name__) from exc


# botocore signs with awscrt whenever awscrt is installed (s3mpfs needs it for CRC64NVME), and
# its CRT signer copies every body (BytesIO(request.body), botocore/crt/auth.py) and reads it
# back through Python callbacks: +8 MiB of RSS per part in flight and ~20 % more CPU in a
# profile. botocore's pure-Python SigV4 signers hash the bytearray in place.
_PURE_PYTHON_SIGNERS = {
    "v4": botocore.auth.SigV4Auth, "v4-query": botocore.auth.SigV4QueryAuth,
    "s3v4": botocore.auth.S3SigV4Auth, "s3v4-query": botocore.auth.S3SigV4QueryAuth,
}


def make_client(cfg: S3Config, *, max_connections: int = 32, attempts: int = 1) -> Any:
    """A client for BotoStore (attempts=1: BotoStore retries) or for one-off scripts."""
    session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
    s3_opts: dict[str, Any] = {}
    if cfg.endpoint_url:
        # S3-compatible stores rarely resolve bucket.host names; path style always works.
        s3_opts["addressing_style"] = "path"
    conf = botocore.config.Config(
        region_name=cfg.region or session.region_name or "us-east-1",
        max_pool_connections=max_connections,
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=10,
        # A hung server must not hang close() forever; a part of 8 MiB takes well under 60 s.
        read_timeout=60,
        s3=s3_opts,  # type: ignore[arg-type]
        # boto3 >= 1.36 adds trailing CRC32 checksums by default; Ceph 16 rejects those bodies
        # and they cost CPU. Checksums are a separate, explicit choice (see README).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    botocore.auth.AUTH_TYPE_MAPS.update(_PURE_PYTHON_SIGNERS)
    session._session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp)
    client = session.client("s3", endpoint_url=cfg.endpoint_url, config=conf)
    for op in ("CopyObject", "UploadPartCopy"):
        client.meta.events.register(f"before-sign.s3.{op}", _legacy_copy_if_match)
    requestlog.install(client)  # a WARNING per retry; per-request DEBUG lines
    return client


def _legacy_copy_if_match(request: Any, **_: Any) -> None:
    """Ceph RGW reads a copy's condition from the original (2006) header name,
    x-amz-copy-if-match, and ignores x-amz-copy-source-if-match: send both, so a copy pinned to
    an ETag fails with 412 on either kind of store when the source changed meanwhile. AWS
    ignores x-amz-* headers it does not know."""
    value = request.headers.get("x-amz-copy-source-if-match")
    if value is not None and "x-amz-copy-if-match" not in request.headers:
        request.headers["x-amz-copy-if-match"] = value


def _checksum_args(checksum: Checksum | None, *, declare: bool = True) -> dict[str, str]:
    """A checksum as the request parameters botocore turns into headers. S3 (and moto) store
    a PutObject's checksum only when the algorithm is declared beside the value."""
    if checksum is None:
        return {}
    if checksum.algorithm == "MD5":
        return {"ContentMD5": checksum.value}
    args = {f"Checksum{checksum.algorithm}": checksum.value}
    if declare:
        args["ChecksumAlgorithm"] = checksum.algorithm
    return args


def _stored_checksum(response: Mapping[str, Any]) -> Checksum | None:
    for algorithm in ("CRC64NVME", "CRC32C", "CRC32", "SHA256", "SHA1"):
        value = response.get(f"Checksum{algorithm}")
        if value:
            return Checksum(algorithm, str(value))
    return None


def _quoted(etag: object) -> str:
    """ETags as S3 sends them, in quotes: Ceph 16 leaves them off copy results, and every
    If-Match we send later compares the quoted form."""
    text = "" if etag is None else str(etag)
    return text if not text or text.startswith('"') else f'"{text}"'


def multipart_etag(part_etags: Sequence[str]) -> str:
    """S3's ETag of a completed multipart upload: md5 of the parts' binary md5s, "-N"."""
    digest = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for e in part_etags))
    return f"{digest.hexdigest()}-{len(part_etags)}"


def _mtime(value: Any) -> float:
    return float(value.timestamp()) if value is not None else time.time()


# S3's codes for "try again" (AWS SDKs' standard retry set) and for "slow down".
_THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
               "BandwidthLimitExceeded", "TooManyRequestsException"}
_TRANSIENT = _THROTTLING | {
    "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException",
    "PriorRequestNotComplete", "BadDigest", "IncompleteBody",
    # botocore's names for a body cut off on the way
    "ResponseStreamingError", "IncompleteReadError", "ChecksumError"}
ATTEMPTS = 5
# Backoff before retry n (1-based): base * 2**(n-1), capped, times a jitter in [0.5, 1.5).
# 0.25 s: a 5xx blip is usually over within a second; throttling (503 SlowDown) wants seconds.
BACKOFF_BASE = 0.25
THROTTLE_BASE = 1.0
BACKOFF_CAP = 20.0


def transient(exc: StoreError) -> bool:
    return (isinstance(exc, Unreachable) or exc.status in (500, 502, 503, 504)
            or exc.code in _TRANSIENT)


def _cause(exc: StoreError) -> str:
    if exc.status is not None:
        return f"HTTP {exc.status} {exc.code}".rstrip()
    return f"{exc.code}: {requestlog.strip_query(str(exc))}"


def _raw_response(body: Any) -> Any | None:
    """The http.client response under botocore's StreamingBody (urllib3's HTTPResponse._fp):
    its readinto() reads the socket straight into our buffer, where StreamingBody.read() makes
    a new bytes object per piece and urllib3's readinto() reads into one and copies. botocore
    asks urllib3 for the raw, undecoded body (decode_content=False), so both give the same
    bytes. None if this botocore/urllib3 is not built that way: then body.read() is used
    (tests/store/test_contract.py checks the fast path is taken with the pinned versions)."""
    fp = getattr(getattr(body, "_raw_stream", None), "_fp", None)
    return fp if callable(getattr(fp, "readinto", None)) else None


def _read_into(raw: Any, view: memoryview, what: str) -> memoryview:
    """Fill view from the response (fewer bytes only at the end of the body)."""
    got = 0
    with _map_errors(what), _map_read_errors(what):
        while got < len(view):
            n = raw.readinto(view[got:])
            if not n:
                break
            got += n
    return view[:got]


def _read_bytes(body: Any, n: int, what: str, buffers: Buffers | None) -> bytes | memoryview:
    with _map_errors(what):
        return fill(buffers, bytes(body.read(n)), n)


@contextlib.contextmanager
def _map_read_errors(what: str) -> Iterator[None]:
    """A body read below botocore fails with the socket's or http.client's own errors (a reset,
    a timeout, a body cut short); body.read() would have raised botocore's versions of them."""
    try:
        yield
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"{what}: reading the body failed: {exc!r}",
                          code=type(exc).__name__) from exc


class BotoStore:
    def __init__(self, cfg: S3Config, *, threads: int = 32, attempts: int = ATTEMPTS,
                 options: ObjectOptions | None = None) -> None:
        self.bucket = cfg.bucket
        # Storage class, encryption, no-clobber, content type, tags, ACL: objectargs.py.
        self.options = ObjectArgs(options)
        self.markers = Markers()  # of the uploads created with mark=True
        self.client = make_client(cfg, max_connections=threads)
        self.quick = QuickHeads(self.client, cfg.bucket, cfg.endpoint_url)  # heads.py: why
        self.limiter = trio.CapacityLimiter(threads)
        self.counts: Counter[str] = Counter()
        self.attempts = attempts

    async def _call(self, op: str, what: str, fn: Callable[[], T]) -> T:
        self.counts[op] += 1

        def run() -> T:
            with _map_errors(f"{op} {what}"):
                return fn()

        for attempt in range(1, self.attempts + 1):
            try:
                # Never abandon_on_cancel: a mutating S3 call must finish before we decide
                # what it did.
                return await trio.to_thread.run_sync(run, limiter=self.limiter)
            except StoreError as exc:
                if attempt == self.attempts or not transient(exc):
                    raise
                base = THROTTLE_BASE if exc.code in _THROTTLING or exc.status == 503 \
                    else BACKOFF_BASE
                delay = min(BACKOFF_CAP, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                requestlog.log.warning("S3 %s %s: retrying (attempt %d of %d) after %s", op,
                                       what, attempt + 1, self.attempts, _cause(exc))
                await trio.sleep(delay)
        raise AssertionError("unreachable")

    def check_bucket(self) -> None:
        """Synchronous start-up check: the bucket exists and these credentials may list it."""
        with _map_errors(""):
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)

    async def _sse_c_call(self, op: str, what: str, sse: dict[str, Any],
                          fn: Callable[[dict[str, Any]], T]) -> T:
        """A request carrying the SSE-C key for an object it reads (GET, HEAD, a copy's
        source). S3 answers 400 when that object was stored without SSE-C (written before the
        key was configured, or by another tool): such an object is read without the key."""
        try:
            return await self._call(op, what, lambda: fn(sse))
        except StoreError as exc:
            if not sse or not (exc.status == 400 or exc.code in ("400", "InvalidRequest")):
                raise
        log.debug("%s %s: stored without SSE-C; read without the key", op, what)
        return await self._call(op, what, lambda: fn({}))

    async def head(self, key: str) -> ObjectInfo:
        sse = self.options.sse_c(key)
        quick = None
        if self.quick.enabled and not sse:
            quick = await self._call("HeadObject", key, lambda: self.quick.head(key))
        # None: not a 200 or a 404, which boto3 knows what to make of
        r: dict[str, Any] = quick if quick is not None else await self._sse_c_call(
            "HeadObject", key, sse, lambda sse: self.client.head_object(
                Bucket=self.bucket, Key=key, ChecksumMode="ENABLED", **sse))
        metadata = dict(r.get("Metadata", {}))
        headers = system_headers(r)
        self.options.known.learn(key, Source(
            r["ETag"], r.get("StorageClass") or "STANDARD", r.get("ContentType"), metadata,
            headers))
        if r.get("ContentType"):
            headers["ContentType"] = r["ContentType"]
        return ObjectInfo(key, r["ContentLength"], r["ETag"], _mtime(r.get("LastModified")),
                          metadata, _stored_checksum(r), headers)

    async def list_page(
        self, prefix: str, *, delimiter: str | None = "/", token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kw["Delimiter"] = delimiter
        if token:
            kw["ContinuationToken"] = token
        r = await self._call("ListObjectsV2", prefix, lambda: self.client.list_objects_v2(**kw))
        objects = [ObjectInfo(o["Key"], o["Size"], o.get("ETag", ""), _mtime(o["LastModified"]))
                   for o in r.get("Contents", [])]
        for o in r.get("Contents", []):
            self.options.learn_listed(o["Key"], o.get("ETag", ""), o.get("StorageClass"))
        prefixes = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
        nxt = r.get("NextContinuationToken") if r.get("IsTruncated") else None
        return ListPage(objects, prefixes, nxt)

    async def get_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        if end <= start:
            return b""
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key,
                              "Range": f"bytes={start}-{end - 1}"}
        if if_match:
            kw["IfMatch"] = if_match

        def get(sse: dict[str, Any]) -> bytes:
            body = self.client.get_object(**kw, **sse)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return await self._sse_c_call("GetObject", key, self.options.sse_c(key), get)

    async def get_pieces(
        self, key: str, start: int, sizes: Sequence[int], deliver: Deliver, *,
        if_match: str | None = None, buffers: Buffers | None = None,
    ) -> None:
        # One request for several of the prefetcher's chunks: botocore costs ~1-2 ms of CPU
        # per request, and fewer threads contend for the GIL (1 GiB on Ceph in 8 MiB pieces:
        # 0.39-0.44 CPU-s as 64 MiB GETs, 0.58-0.65 as 8 MiB GETs).
        end = start + sum(sizes)
        if end <= start:
            return
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key,
                              "Range": f"bytes={start}-{end - 1}"}
        if if_match:
            kw["IfMatch"] = if_match
        r = await self._sse_c_call("GetObject", key, self.options.sse_c(key),
                                   lambda sse: self.client.get_object(**kw, **sse))
        body = r["Body"]
        raw = _raw_response(body) if buffers is not None else None
        what = f"GetObject {key}"
        try:
            for i, size in enumerate(sizes):
                piece: Callable[[], bytes | memoryview]
                if raw is not None and buffers is not None:
                    piece = functools.partial(_read_into, raw, buffers(size), what)
                else:
                    piece = functools.partial(_read_bytes, body, size, what, buffers)
                if not deliver(i, await trio.to_thread.run_sync(piece, limiter=self.limiter)):
                    return
        finally:
            body.close()  # a response not read to its end is not reused

    async def _ours(self, key: str, etag: str) -> str | None:
        """After a 412 (--no-clobber) or a NoSuchUpload: the stored ETag if key holds exactly
        what we sent (a request whose answer was lost, retried, finds its own object there)."""
        try:
            info = await self.head(key)
        except NotFound:
            return None
        return info.etag if info.etag.strip('"') == etag.strip('"') else None

    async def put(self, key: str, data: Data, *, metadata: Mapping[str, str],
                  checksum: Checksum | None = None, replacing: str | None = None,
                  create_only: bool = False) -> str:
        extra = {**self.options.new_object(key),
                 **self.options.condition(key, replacing, create_only)}
        try:
            with no_clobber_errors("PutObject", key, extra):
                r = await self._call("PutObject", key, lambda: self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, Metadata=dict(metadata),
                    **_checksum_args(checksum), **extra))
            etag = str(r["ETag"])
        except ObjectExists as exc:
            ours = None
            if self.options.etag_is_md5:
                ours = await self._ours(key, hashlib.md5(data).hexdigest())
            if ours is None:
                warn_refused(exc)
                raise
            log.warning("%s: already stored (a lost answer, retried)", key)
            etag = ours
        self.options.learn_written(key, etag, extra, metadata)
        return etag

    async def _source(self, key: str, etag: str | None,
                      needs: frozenset[str]) -> Source | None:
        """What a copy must keep of its source: known, or one HeadObject."""
        if not needs:
            return None
        known = self.options.known.get(key, etag)
        if self.options.satisfies(known, needs):
            return known
        await self.head(key)
        return self.options.known.get(key, None)

    async def copy(
        self, src_key: str, dst_key: str, *, metadata: Mapping[str, str] | None = None,
        src_etag: str | None = None,
    ) -> str:
        source = await self._source(src_key, src_etag,
                                    self.options.copy_needs(src_key, dst_key, metadata))
        extra = self.options.copy(src_key, dst_key, metadata, source)
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": dst_key,
                              "CopySource": {"Bucket": self.bucket, "Key": src_key}}
        kw.update({k: v for k, v in extra.items() if not k.startswith("CopySourceSSE")})
        if src_etag:
            kw["CopySourceIfMatch"] = src_etag
        what = f"{src_key} -> {dst_key}"
        try:
            with no_clobber_errors("CopyObject", dst_key, extra):
                r = await self._sse_c_call(
                    "CopyObject", what, self.options.copy_source_sse_c(src_key),
                    lambda sse: self.client.copy_object(**kw, **sse))
        except ObjectExists as exc:
            warn_refused(exc)
            raise
        etag = _quoted(r["CopyObjectResult"].get("ETag"))
        self.options.learn_copied(dst_key, etag, extra, source)
        return etag

    async def delete(self, key: str) -> None:
        self.options.known.forget(key)
        await self._call("DeleteObject", key,
                         lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    async def create_upload(self, key: str, *, metadata: Mapping[str, str],
                            checksum_algorithm: str | None = None, mark: bool = False,
                            headers: Mapping[str, Any] | None = None) -> str:
        extra = self.options.new_object(key, headers)
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Metadata": dict(metadata),
                              **extra}
        if checksum_algorithm:
            kw["ChecksumAlgorithm"] = checksum_algorithm
            if checksum_algorithm == "CRC64NVME":
                kw["ChecksumType"] = "FULL_OBJECT"  # CRC64NVME uploads are full-object only
        r = await self._call("CreateMultipartUpload", key,
                             lambda: self.client.create_multipart_upload(**kw))
        upload_id = str(r["UploadId"])
        self.options.started(upload_id, extra, metadata)
        if mark:
            await self.markers.register(self, key, upload_id)
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: Data,
                          checksum: Checksum | None = None) -> str:
        r = await self._call("UploadPart", f"{key} part {number}", lambda: self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data,
            **_checksum_args(checksum), **self.options.sse_c(key)))
        return str(r["ETag"])

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, src_key: str, start: int, end: int,
        *, src_etag: str | None = None,
    ) -> str:
        kw: dict[str, Any] = {
            "Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
            "CopySource": {"Bucket": self.bucket, "Key": src_key},
            "CopySourceRange": f"bytes={start}-{end - 1}",
            **self.options.sse_c(key),
        }
        if src_etag:
            kw["CopySourceIfMatch"] = src_etag
        r = await self._sse_c_call("UploadPartCopy", f"{key} part {number}",
                                   self.options.copy_source_sse_c(src_key),
                                   lambda sse: self.client.upload_part_copy(**kw, **sse))
        return _quoted(r["CopyPartResult"].get("ETag"))

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
        part_checksums: Mapping[int, Checksum] | None = None,
        checksum: Checksum | None = None, replacing: str | None = None,
        create_only: bool = False,
    ) -> str:
        sums = part_checksums or {}
        body = {"Parts": [{"PartNumber": n, "ETag": e,
                           **_checksum_args(sums.get(n), declare=False)} for n, e in parts]}
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                              "MultipartUpload": body,
                              **_checksum_args(checksum, declare=False)}
        if checksum is not None and checksum.algorithm == "CRC64NVME":
            kw["ChecksumType"] = "FULL_OBJECT"
        # SSE-C: S3 needs the key on Complete when the upload carries checksums.
        condition = self.options.condition(key, replacing, create_only)
        kw.update(self.options.sse_c(key), **condition)
        try:
            with no_clobber_errors("CompleteMultipartUpload", key, condition):
                r = await self._call("CompleteMultipartUpload", key,
                                     lambda: self.client.complete_multipart_upload(**kw))
            etag = _quoted(r.get("ETag"))
            if not etag:  # Ceph 16 answers an empty <ETag/> (Red Hat BZ 2266579)
                etag = (f'"{multipart_etag([e for _, e in parts])}"'
                        if self.options.etag_is_md5 else (await self.head(key)).etag)
        except (NotFound, ObjectExists) as exc:
            # NoSuchUpload (or, with --no-clobber, 412): if a retry follows a Complete whose
            # answer was lost, the upload is already the object. Its ETag (md5 of the part
            # md5s, "-N") proves it is ours.
            ours = await self._ours(key, multipart_etag([e for _, e in parts]))
            if ours is None:
                if isinstance(exc, ObjectExists):
                    warn_refused(exc)
                raise
            log.warning("%s: upload %s was already complete (a lost answer, retried)", key,
                        upload_id)
            etag = ours
        self.options.completed(key, upload_id, etag)
        await self.markers.unregister(self, upload_id)  # best effort
        return etag

    async def abort_upload(self, key: str, upload_id: str) -> None:
        self.options.finished(upload_id)
        # NoSuchUpload: already gone, e.g. a retry after an abort whose answer was lost.
        with contextlib.suppress(NotFound):
            await self._call("AbortMultipartUpload", key,
                             lambda: self.client.abort_multipart_upload(
                                 Bucket=self.bucket, Key=key, UploadId=upload_id))
        await self.markers.unregister(self, upload_id)  # not reached if the abort failed

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        def run() -> list[PartInfo]:
            out: list[PartInfo] = []
            pager = self.client.get_paginator("list_parts")
            for page in pager.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                out += [PartInfo(p["PartNumber"], p["Size"], p["ETag"])
                        for p in page.get("Parts", [])]
            return out

        return await self._call("ListParts", key, run)

    async def list_uploads(self, prefix: str = "", *,
                           max_uploads: int | None = None) -> list[UploadInfo]:
        def run() -> list[UploadInfo]:
            if max_uploads is not None:
                pages: Iterable[Mapping[str, Any]] = [self.client.list_multipart_uploads(
                    Bucket=self.bucket, Prefix=prefix, MaxUploads=max_uploads)]
            else:
                pages = self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=prefix)
            out: list[UploadInfo] = []
            for page in pages:
                out += [UploadInfo(u["Key"], u["UploadId"], _mtime(u.get("Initiated")))
                        for u in page.get("Uploads", [])]
            return out

        return await self._call("ListMultipartUploads", prefix, run)
