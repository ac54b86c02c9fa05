"""BotoStore's quick HeadObject (store/heads.py) against the real server: what it returns is
what boto3's head_object returns, a 404 is NotFound after one request, and any other answer is
asked again through boto3 (whose errors are mapped in one place)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import trio

from s3mpfs.config import S3Config
from s3mpfs.errors import AccessDenied, NotFound
from s3mpfs.store.boto import BotoStore
from s3mpfs.store.heads import parse_timestamp
from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import S3Server

KEYS = ["plain", "dir/a b+c~d=e&f?g#h.txt", "ümlaut/日本語", "100% real", "x%2Fy", "a//b"]
MEMBERS = ("ContentLength", "ETag", "LastModified", "Metadata", "ContentType", "StorageClass",
           "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage",
           "Expires", "ChecksumCRC32")


def _put(s3: Any, bucket: str, key: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=b"payload", ChecksumAlgorithm="CRC32",
                  Metadata={"mode": "33188", "md5chksum": "abc", "Mixed-Case": "v a l"},
                  ContentType="text/x-app", CacheControl="max-age=60",
                  ContentDisposition='attachment; filename="r.bin"',
                  ContentEncoding="identity", ContentLanguage="de-CH",
                  Expires=datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))


def test_quick_head_returns_what_head_object_returns(
        server: S3Server, s3: Any, bucket: str) -> None:
    store = BotoStore(S3Config(bucket, endpoint_url=server.url), threads=4)
    assert store.quick.enabled
    for key in KEYS:
        _put(s3, bucket, key)
        quick = store.quick.head(key)
        assert quick is not None, key
        slow = store.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert {m: quick.get(m) for m in MEMBERS} == {m: slow.get(m) for m in MEMBERS}, key
        assert quick["Metadata"]["mode"] == "33188"
        assert quick["ContentType"] == "text/x-app"


def test_a_missing_key_is_not_found_after_one_request(
        server: S3Server, bucket: str, proxy: S3Proxy) -> None:
    store = BotoStore(S3Config(bucket, endpoint_url=proxy.url), threads=4)
    with pytest.raises(NotFound):
        trio.run(store.head, "no/such key")
    assert proxy.counts() == {"HeadObject": 1}


def test_other_answers_are_asked_again_through_boto3(
        server: S3Server, s3: Any, bucket: str, proxy: S3Proxy) -> None:
    _put(s3, bucket, "k")
    store = BotoStore(S3Config(bucket, endpoint_url=proxy.url), threads=4, attempts=1)
    proxy.add_fault(op="HeadObject", action="status", status=503)  # the quick one only
    info = trio.run(store.head, "k")
    assert (info.size, info.metadata["mode"]) == (7, "33188")
    assert proxy.counts() == {"HeadObject": 2}
    proxy.reset()
    proxy.add_fault(op="HeadObject", action="status", status=403, times=2)
    with pytest.raises(AccessDenied):  # boto3's answer, mapped by _map_errors
        trio.run(store.head, "k")
    assert proxy.counts() == {"HeadObject": 2}


@pytest.mark.parametrize(("text", "expected"), [
    ("Thu, 03 Dec 2026 13:09:31 GMT", datetime.datetime(2026, 12, 3, 13, 9, 31,
                                                        tzinfo=datetime.UTC)),
    ("2026-12-03T13:09:31.000Z", datetime.datetime(2026, 12, 3, 13, 9, 31,
                                                   tzinfo=datetime.UTC)),
    ("Thursday, 03-Dec-26 13:09:31 GMT", datetime.datetime(2026, 12, 3, 13, 9, 31,
                                                           tzinfo=datetime.UTC)),
])
def test_timestamps_parse_in_s3s_forms(text: str, expected: datetime.datetime) -> None:
    assert parse_timestamp(text) == expected
