"""Object options (s3mpfs/store/objectargs.py) through BotoStore against the S3 server (moto): what
the objects carry, checked with a plain boto3 client (HeadObject, GetObjectTagging,
GetObjectAcl), and, where moto does not look at a header (SSE-C, If-Match on Complete), what
BotoStore puts on the wire, captured by a botocore before-send hook."""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from s3mpfs.config import MIN_PART_SIZE, ObjectOptions, S3Config
from s3mpfs.errors import NeedsRestore, ObjectExists, errno_for
from s3mpfs.store.boto import BotoStore
from s3mpfs.store.markers import MARKER_PREFIX

PART = MIN_PART_SIZE
KEY = bytes(range(100, 132))  # a 32-byte SSE-C key
KEY_B64 = base64.b64encode(KEY).decode()
KEY_MD5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()


def _store(server: Any, bucket: str, **options: Any) -> BotoStore:
    return BotoStore(S3Config(bucket, endpoint_url=server.url), threads=4,
                     options=ObjectOptions(**options))


async def _multipart(store: BotoStore, key: str, size: int = PART + 10, *,
                     replacing: str | None = None) -> str:
    upload_id = await store.create_upload(key, metadata={"mode": "33188"})
    e1 = await store.upload_part(key, upload_id, 1, b"a" * PART)
    e2 = await store.upload_part(key, upload_id, 2, b"b" * (size - PART))
    return await store.complete_upload(key, upload_id, [(1, e1), (2, e2)], replacing=replacing)


def _class(s3: Any, bucket: str, key: str) -> str:
    return str(s3.head_object(Bucket=bucket, Key=key).get("StorageClass", "STANDARD"))


class Wire:
    """The headers of every request the store sends, by operation (before-send hook)."""

    def __init__(self, store: BotoStore) -> None:
        self.sent: list[tuple[str, str, dict[str, str]]] = []
        store.client.meta.events.register("before-send.s3", self._capture)

    def _capture(self, request: Any, **kw: Any) -> None:
        op = str(kw.get("event_name", "")).rsplit(".", 1)[-1]
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else str(v)
                   for k, v in request.headers.items()}
        self.sent.append((op, request.url, headers))

    def ops(self, header: str, value: str | None = None) -> list[str]:
        return [op for op, _, h in self.sent
                if header in h and (value is None or h[header] == value)]


# -- storage class -----------------------------------------------------------------------------


@pytest.mark.needs("storage_classes")
async def test_storage_class_on_puts_uploads_and_copies(moto_server: Any, s3: Any,
                                                        bucket: str) -> None:
    store = _store(moto_server, bucket, storage_class="STANDARD_IA")
    await store.put("small", b"x", metadata={})
    await _multipart(store, "big")
    etag = (await store.head("big")).etag
    await store.copy("big", "renamed", src_etag=etag)
    await store.copy("small", "small", metadata={"mode": "33152"})  # chmod
    for key in ("small", "big", "renamed"):
        assert _class(s3, bucket, key) == "STANDARD_IA", key
    await store.put("dir/", b"", metadata={})  # directory markers keep S3's default
    assert _class(s3, bucket, "dir/") == "STANDARD"


@pytest.mark.needs("storage_classes")
async def test_copies_keep_the_source_class_when_none_is_configured(
        moto_server: Any, s3: Any, bucket: str) -> None:
    """A CopyObject without x-amz-storage-class makes a STANDARD object (AWS; moto too)."""
    s3.put_object(Bucket=bucket, Key="listed.bin", Body=b"1", StorageClass="ONEZONE_IA")
    s3.put_object(Bucket=bucket, Key="unknown.txt", Body=b"2", StorageClass="STANDARD_IA",
                  ContentType="text/x-custom", Metadata={"mode": "33188"})
    plain = s3.copy_object(Bucket=bucket, Key="by-hand", CopySource=f"{bucket}/listed.bin")
    assert plain and _class(s3, bucket, "by-hand") == "STANDARD"  # what we must avoid
    store = _store(moto_server, bucket)
    await store.list_page("")
    store.counts.clear()
    await store.copy("listed.bin", "moved.bin")  # the class is known from the listing
    assert _class(s3, bucket, "moved.bin") == "ONEZONE_IA"
    assert store.counts["HeadObject"] == 0
    store.options.known.forget("unknown.txt")
    await store.copy("unknown.txt", "unknown.txt", metadata={"mode": "33152"})  # chmod
    assert store.counts["HeadObject"] == 1  # asked once
    head = s3.head_object(Bucket=bucket, Key="unknown.txt")
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ContentType"] == "text/x-custom"  # an attribute change keeps the type
    assert head["Metadata"] == {"mode": "33152"}


# -- content type, tags, ACL, SSE ------------------------------------------------------------


async def test_content_type_from_the_name(moto_server: Any, s3: Any, bucket: str) -> None:
    store = _store(moto_server, bucket)
    await store.put("notes.txt", b"hello", metadata={})
    await _multipart(store, "backup.tar")
    await store.put("db.sql.gz", b"z", metadata={})
    await store.put(".backup2.tar.Xy12Zq", b"rsync temp", metadata={"mode": "33188"})
    await store.copy(".backup2.tar.Xy12Zq", "backup2.tar")  # rsync's rename
    expected = {"notes.txt": "text/plain", "backup.tar": "application/x-tar",
                "db.sql.gz": "application/gzip",
                ".backup2.tar.Xy12Zq": "application/octet-stream",
                "backup2.tar": "application/x-tar"}
    for key, ctype in expected.items():
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentType"] == ctype, key
        assert "ContentEncoding" not in head
    assert s3.head_object(Bucket=bucket, Key="backup2.tar")["Metadata"] == {"mode": "33188"}
    fixed = _store(moto_server, bucket, content_type="application/x-backup")
    await fixed.put("any.txt", b"x", metadata={})
    assert s3.head_object(Bucket=bucket, Key="any.txt")["ContentType"] == "application/x-backup"


@pytest.mark.needs("multipart_tagging")
async def test_tags_and_acl(moto_server: Any, s3: Any, bucket: str) -> None:
    store = _store(moto_server, bucket, tags=(("backup", "daily"), ("team", "ops/infra x")),
                   acl="public-read")
    await store.put("small", b"x", metadata={})
    await _multipart(store, "big")
    await store.copy("big", "copied")
    tags = [{"Key": "backup", "Value": "daily"}, {"Key": "team", "Value": "ops/infra x"}]
    for key in ("small", "big", "copied"):
        got = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        assert sorted(got, key=lambda t: t["Key"]) == tags, key
        grants = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        assert any(g["Grantee"].get("URI", "").endswith("/global/AllUsers")
                   and g["Permission"] == "READ" for g in grants), (key, grants)
    plain = _store(moto_server, bucket)
    await plain.put("untagged", b"x", metadata={})
    assert s3.get_object_tagging(Bucket=bucket, Key="untagged")["TagSet"] == []


@pytest.mark.needs("sse")
@pytest.mark.parametrize(("options", "expected"), [
    ({"sse": "AES256"}, ("AES256", None)),
    ({"sse": "aws:kms", "sse_kms_key_id": "alias/backups"}, ("aws:kms", "alias/backups")),
])
async def test_server_side_encryption(moto_server: Any, s3: Any, bucket: str,
                                      options: dict[str, str],
                                      expected: tuple[str, str | None]) -> None:
    store = _store(moto_server, bucket, **options)
    await store.put("small", b"x", metadata={})
    await _multipart(store, "big")
    await store.copy("small", "copied")
    for key in ("small", "big", "copied"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == expected[0], key
        if expected[1]:
            assert expected[1] in head["SSEKMSKeyId"], key


# -- no-clobber --------------------------------------------------------------------------------


@pytest.mark.needs("complete_if_none_match", "put_if_match")
async def test_no_clobber_put_and_complete(moto_server: Any, s3: Any, bucket: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    store = _store(moto_server, bucket, no_clobber=True)
    first = await store.put("k", b"first", metadata={})
    with pytest.raises(ObjectExists) as exc:
        await store.put("k", b"second", metadata={})
    assert errno_for(exc.value) == errno.EEXIST
    assert "PutObject k: not stored: an object under this key already exists" in caplog.text
    upload_id = await store.create_upload("k", metadata={})
    part = await store.upload_part("k", upload_id, 1, b"m")
    with pytest.raises(ObjectExists):
        await store.complete_upload("k", upload_id, [(1, part)])
    await store.abort_upload("k", upload_id)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"
    second = await store.put("k", b"second", metadata={}, replacing=first)  # a re-commit
    with pytest.raises(ObjectExists):  # no longer ours: refused
        await store.put("k", b"third", metadata={}, replacing=first)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second"
    assert second != first
    await store.put("dir/", b"", metadata={})
    await store.put("dir/", b"", metadata={"mode": "16877"})  # a directory's chmod: allowed


async def test_no_clobber_a_retried_put_finds_its_own_object(moto_server: Any, s3: Any,
                                                             bucket: str) -> None:
    """A PutObject whose answer was lost is retried; the 412 it then gets is for its own
    bytes (same ETag), which is success. Other bytes under the key are a real refusal."""
    store = _store(moto_server, bucket, no_clobber=True)
    s3.put_object(Bucket=bucket, Key="k", Body=b"same bytes")
    etag = await store.put("k", b"same bytes", metadata={})
    assert etag.strip('"') == hashlib.md5(b"same bytes").hexdigest()
    with pytest.raises(ObjectExists):
        await store.put("k", b"other bytes", metadata={})


async def test_no_clobber_headers_on_the_wire(moto_server: Any, server: Any,
                                              bucket: str) -> None:
    store = _store(moto_server, bucket, no_clobber=True)
    wire = Wire(store)
    etag = await _multipart(store, "mp")
    await _multipart(store, "mp", PART + 20, replacing=etag)
    await store.copy("mp", "moved")
    await store.copy("moved", "moved", metadata={"mode": "33152"})
    assert wire.ops("if-none-match", "*") == ["CompleteMultipartUpload", "CopyObject"]
    assert wire.ops("if-match", etag) == ["CompleteMultipartUpload"]
    await store.put(MARKER_PREFIX + "0" * 32, b"{}", metadata={})  # our marker: no condition
    assert wire.sent[-1][0] == "PutObject" and "if-none-match" not in wire.sent[-1][2]
    if server.has("conditional_complete"):  # moto ignores If-Match on Complete
        with pytest.raises(ObjectExists):
            await _multipart(store, "mp", replacing=etag)


# -- archived objects --------------------------------------------------------------------------


@pytest.mark.needs("storage_classes")
@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
async def test_archived_objects_need_a_restore(moto_server: Any, s3: Any, bucket: str,
                                               storage_class: str) -> None:
    s3.put_object(Bucket=bucket, Key="cold.tar", Body=b"frozen", StorageClass=storage_class)
    store = _store(moto_server, bucket)
    assert (await store.head("cold.tar")).size == 6  # HEAD works
    with pytest.raises(NeedsRestore) as exc:
        await store.get_range("cold.tar", 0, 6)
    assert errno_for(exc.value) == errno.EACCES
    assert "GetObject cold.tar: the object is in" in str(exc.value)
    assert "needs a restore" in str(exc.value)
    with pytest.raises(NeedsRestore):
        await store.copy("cold.tar", "warm.tar")


# -- SSE-C: moto ignores the headers, so the wire is what is checked --------------------------


@pytest.mark.needs("sse_c")
async def test_sse_c_key_on_every_request_that_needs_it(moto_server: Any, bucket: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    store = _store(moto_server, bucket, sse_c_key=KEY)
    wire = Wire(store)
    with caplog.at_level(logging.DEBUG, logger="s3mpfs"):  # the request log (--debug) too
        etag = await store.put("small", b"x" * 10, metadata={})
        await _multipart(store, "big")
        await store.head("small")
        assert await store.get_range("small", 0, 10) == b"x" * 10
        await store.copy("small", "copied", src_etag=etag)
        upload_id = await store.create_upload("cont", metadata={})
        await store.upload_part_copy("cont", upload_id, 1, "small", 0, 10, src_etag=etag)
        await store.abort_upload("cont", upload_id)
        await store.put("dir/", b"", metadata={})
        await store.put(MARKER_PREFIX + "1" * 32, b"{}", metadata={})
        await store.get_range(MARKER_PREFIX + "1" * 32, 0, 2)
        await store.list_page("")
    algorithm = "x-amz-server-side-encryption-customer-algorithm"
    with_key = {op for op, _, h in wire.sent
                if h.get(algorithm) == "AES256"
                and h.get("x-amz-server-side-encryption-customer-key") == KEY_B64
                and h.get("x-amz-server-side-encryption-customer-key-md5") == KEY_MD5}
    assert with_key == {"PutObject", "CreateMultipartUpload", "UploadPart",
                        "CompleteMultipartUpload", "HeadObject", "GetObject", "CopyObject",
                        "UploadPartCopy"}
    source = {op for op, _, h in wire.sent
              if h.get("x-amz-copy-source-server-side-encryption-customer-key") == KEY_B64
              and h.get("x-amz-copy-source-server-side-encryption-customer-key-md5") == KEY_MD5}
    assert source == {"CopyObject", "UploadPartCopy"}
    marker = MARKER_PREFIX + "1" * 32
    without = [(op, _key(url, bucket)) for op, url, h in wire.sent if algorithm not in h]
    assert without == [("AbortMultipartUpload", "cont"), ("PutObject", "dir/"),
                       ("PutObject", marker), ("GetObject", marker), ("ListObjectsV2", "")]
    assert "S3 PutObject small: HTTP 200" in caplog.text
    assert KEY_B64 not in caplog.text and KEY_MD5 not in caplog.text
    assert repr(KEY)[2:-1] not in caplog.text


def _key(url: str, bucket: str) -> str:
    """The object key of a path-style request URL ("" for a bucket request)."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return path.split(f"/{bucket}/", 1)[1] if f"/{bucket}/" in path else ""


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def _refuse_sse_c_for(key: str) -> Callable[..., Any]:
    """Answer like S3 does for an object stored without SSE-C that is read with a key."""
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    def handler(request: Any, **_: Any) -> Any:
        source = request.headers.get("x-amz-copy-source", b"")
        source = source.decode() if isinstance(source, bytes) else str(source)
        reads = (urllib.parse.urlsplit(request.url).path.endswith("/" + key)
                 and "x-amz-server-side-encryption-customer-key" in request.headers)
        copies = (urllib.parse.unquote(source).endswith("/" + key)
                  and "x-amz-copy-source-server-side-encryption-customer-key" in request.headers)
        if reads or copies:
            body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidRequest</Code>"
                    b"<Message>The encryption parameters are not applicable to this object."
                    b"</Message></Error>")
            return AWSResponse(request.url, 400, HTTPHeaders(),
                               _Raw(body if request.method == "GET" else b""))
        return None

    return handler


async def test_sse_c_objects_stored_without_it_stay_readable(moto_server: Any, s3: Any,
                                                             bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="plain.txt", Body=b"written before SSE-C")
    store = _store(moto_server, bucket, sse_c_key=KEY)
    store.client.meta.events.register_first("before-send.s3", _refuse_sse_c_for("plain.txt"))
    wire = Wire(store)
    assert (await store.head("plain.txt")).size == 20
    assert await store.get_range("plain.txt", 0, 7) == b"written"
    await store.copy("plain.txt", "now-encrypted.txt")
    # every request goes with the key, and once more without it for the object it reads
    # (botocore's region redirector also re-sends a HEAD answered 400 after a HeadBucket)
    tries = [(op, "x-amz-server-side-encryption-customer-key" in h,
              "x-amz-copy-source-server-side-encryption-customer-key" in h)
             for op, _, h in wire.sent if op != "HeadBucket"]
    tries = [t for i, t in enumerate(tries) if i == 0 or t != tries[i - 1]]
    assert tries == [("HeadObject", True, False), ("HeadObject", False, False),
                     ("GetObject", True, False), ("GetObject", False, False),
                     ("CopyObject", True, True), ("CopyObject", True, False)]
    assert store.counts["HeadObject"] == 2 and store.counts["GetObject"] == 2
    # the copy is encrypted with the key (as far as moto tells: it ignores SSE-C)
    assert s3.get_object(Bucket=bucket, Key="now-encrypted.txt")["Body"].read() == \
        b"written before SSE-C"
