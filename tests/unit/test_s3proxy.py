"""Tests for the counting / fault-injecting S3 proxy in tests/helpers/s3proxy.py.

Everything runs for real: moto's server in one subprocess, the proxy in another, and
boto3 talking to the proxy over loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.helpers.s3proxy import S3Proxy, classify  # noqa: E402

MIB = 1024 * 1024
CONNECTION_ERRORS = (ConnectionClosedError, EndpointConnectionError)


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        mp.delenv(var, raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def moto_url(aws_env: None) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30.0
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2) as resp:
                    resp.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"moto server on port {port} did not come up") from None
            # Pause between polls by waiting on the process itself: returns early (and
            # fails the fixture) if moto died instead of starting.
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"moto server exited early with status {proc.returncode}")
        yield url
    finally:
        _stop_process(proc)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[S3Proxy]:
    p = S3Proxy(moto_url)
    try:
        p.start()
        yield p
    finally:
        p.stop()


def _client(url: str, **cfg: Any) -> Any:
    config = Config(
        s3={"addressing_style": "path"},
        # In client config botocore's "max_attempts" counts *retries* (1 -> two attempts);
        # "total_max_attempts" includes the first one, so 1 means "never retry".
        retries={"total_max_attempts": 1, "mode": "standard"},
        **cfg,
    )
    return boto3.client("s3", endpoint_url=url, config=config)


@pytest.fixture
def direct(moto_url: str) -> Iterator[Any]:
    c = _client(moto_url)
    yield c
    c.close()


@pytest.fixture
def s3(proxy: S3Proxy) -> Iterator[Any]:
    c = _client(proxy.url)
    yield c
    c.close()


@pytest.fixture
def bucket(direct: Any) -> str:
    name = f"proxy-test-{uuid.uuid4().hex[:12]}"
    direct.create_bucket(Bucket=name)
    return name


def _error_code(exc: ClientError) -> str:
    code: str = exc.response["Error"]["Code"]
    return code


# --------------------------------------------------------------------------------------
# Operation classification (pure function)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "copy", "expected"),
    [
        ("HEAD", "/b", False, "HeadBucket"),
        ("HEAD", "/b/", False, "HeadBucket"),
        ("HEAD", "/b/k/x.txt", False, "HeadObject"),
        ("GET", "/b?list-type=2&prefix=a%2F", False, "ListObjectsV2"),
        ("GET", "/b?uploads", False, "ListMultipartUploads"),
        ("GET", "/b/k?uploadId=u1", False, "ListParts"),
        ("GET", "/b/k", False, "GetObject"),
        ("GET", "/b/dir/k?partNumber=1", False, "GetObject"),
        ("GET", "/b", False, "ListObjects"),
        ("GET", "/b?prefix=x&delimiter=%2F", False, "ListObjects"),
        ("GET", "/b?location", False, "Other"),
        ("GET", "/", False, "ListBuckets"),
        ("PUT", "/b/k?partNumber=3&uploadId=u1", False, "UploadPart"),
        ("PUT", "/b/k?uploadId=u1&partNumber=3", True, "UploadPartCopy"),
        ("PUT", "/b/k", True, "CopyObject"),
        ("PUT", "/b/k", False, "PutObject"),
        ("PUT", "/b", False, "CreateBucket"),
        ("PUT", "/b/k?tagging", False, "PutObjectTagging"),
        ("POST", "/b/k?uploads", False, "CreateMultipartUpload"),
        ("POST", "/b/k?uploadId=u1", False, "CompleteMultipartUpload"),
        ("POST", "/b?delete", False, "DeleteObjects"),
        ("DELETE", "/b/k?uploadId=u1", False, "AbortMultipartUpload"),
        ("DELETE", "/b/k", False, "DeleteObject"),
        ("DELETE", "/b", False, "DeleteBucket"),
        ("OPTIONS", "/b/k", False, "Other"),
        ("POST", "/b/k", False, "Other"),
    ],
)
def test_classify(method: str, target: str, copy: bool, expected: str) -> None:
    assert classify(method, target, copy) == expected


# --------------------------------------------------------------------------------------
# Process lifecycle and control API
# --------------------------------------------------------------------------------------


def test_start_stop_idempotent(moto_url: str) -> None:
    p = S3Proxy(moto_url)
    p.start()
    try:
        assert p.url == f"http://127.0.0.1:{p.port}"
        assert p.pid > 0
        assert p.counts() == {}
    finally:
        p.stop()
    assert p.returncode == 0  # SIGTERM is a clean shutdown
    p.stop()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(p.pid, 0)  # reaped


def test_control_api_rules_and_reset(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    proxy.add_fault("UploadPart", "status", status=503, nth=2, times=3)
    proxy.add_fault("*", "stall", seconds=0.0, fraction=0.5, seed=7)
    rules = proxy.faults()
    assert [(r["op"], r["action"], r["fired"]) for r in rules] == [
        ("UploadPart", "status", 0),
        ("*", "stall", 0),
    ]
    assert rules[0]["status"] == 503 and rules[0]["nth"] == 2 and rules[0]["times"] == 3
    assert rules[1]["fraction"] == 0.5 and rules[1]["seed"] == 7 and rules[1]["times"] == -1

    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert proxy.counts() == {"PutObject": 1}
    assert proxy.faults()[1]["seen"] == 1

    proxy.reset()
    assert proxy.counts() == {}
    assert proxy.faults() == []


@pytest.mark.parametrize(
    "rule",
    [
        {"op": "PutObject", "action": "explode"},
        {"op": "", "action": "status"},
        {"op": "PutObject", "action": "stall"},  # needs seconds
        {"op": "PutObject", "action": "status", "nth": 0},
        {"op": "PutObject", "action": "status", "fraction": 1.5},
        {"op": "PutObject", "action": "status", "times": 0},
        {"op": "PutObject", "action": "status", "bogus": 1},
    ],
)
def test_control_api_rejects_bad_rules(proxy: S3Proxy, rule: dict[str, Any]) -> None:
    req = urllib.request.Request(
        f"{proxy.url}/__proxy__/faults",
        data=json.dumps(rule).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    info.value.close()
    assert proxy.faults() == []


# --------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------


def test_counts_are_exact(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a/one", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="a/one")["Body"].read() == b"hello"
    assert s3.head_object(Bucket=bucket, Key="a/one")["ContentLength"] == 5
    s3.head_bucket(Bucket=bucket)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/one"]
    s3.list_objects(Bucket=bucket)

    part = os.urandom(5 * MIB)
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="big")
    parts = []
    for n in (1, 2):
        etag = s3.upload_part(
            Bucket=bucket, Key="big", UploadId=mpu["UploadId"], PartNumber=n, Body=part
        )["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=mpu["UploadId"], MultipartUpload={"Parts": parts}
    )
    s3.copy_object(Bucket=bucket, Key="a/two", CopySource={"Bucket": bucket, "Key": "a/one"})
    s3.delete_object(Bucket=bucket, Key="a/two")

    assert proxy.counts() == {
        "PutObject": 1,
        "GetObject": 1,
        "HeadObject": 1,
        "HeadBucket": 1,
        "ListObjectsV2": 1,
        "ListObjects": 1,
        "CreateMultipartUpload": 1,
        "UploadPart": 2,
        "CompleteMultipartUpload": 1,
        "CopyObject": 1,
        "DeleteObject": 1,
    }
    proxy.reset()
    assert proxy.counts() == {}


def test_large_body_round_trips_byte_exact(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    data = os.urandom(8 * MIB)
    put = s3.put_object(Bucket=bucket, Key="blob", Body=data)
    assert put["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    got = s3.get_object(Bucket=bucket, Key="blob")
    assert got["ContentLength"] == len(data)
    body = got["Body"].read()
    assert len(body) == len(data)
    assert body == data
    ranged = s3.get_object(Bucket=bucket, Key="blob", Range="bytes=1000-1999")
    assert ranged["Body"].read() == data[1000:2000]
    assert proxy.counts() == {"PutObject": 1, "GetObject": 2}


def test_chunked_request_body_is_dechunked(proxy: S3Proxy, direct: Any, bucket: str) -> None:
    pieces = [b"alpha-", os.urandom(70_000), b"-omega"]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request(
            "PUT",
            f"/{bucket}/chunked",
            body=iter(pieces),
            headers={"Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    finally:
        conn.close()
    stored = direct.get_object(Bucket=bucket, Key="chunked")["Body"].read()
    assert stored == b"".join(pieces)
    assert proxy.counts() == {"PutObject": 1}


# --------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------


def test_status_fault_on_second_upload_part(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    proxy.add_fault("UploadPart", "status", status=500, nth=2, times=1)
    part = os.urandom(5 * MIB)
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    uid = mpu["UploadId"]

    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=part)["ETag"]
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=2, Body=part)
    assert _error_code(info.value) == "InternalError"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=2, Body=part)["ETag"]

    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    assert s3.head_object(Bucket=bucket, Key="mp")["ContentLength"] == 2 * len(part)
    assert proxy.counts()["UploadPart"] == 3
    [rule] = proxy.faults()
    assert rule["fired"] == 1 and rule["seen"] == 3


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (403, "AccessDenied"), (404, "NoSuchKey"), (418, "InjectedFault")],
)
def test_status_fault_error_codes(
    proxy: S3Proxy, s3: Any, bucket: str, status: int, code: str
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    proxy.add_fault("GetObject", "status", status=status)
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="k")
    assert _error_code(info.value) == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


def test_status_fault_on_head_has_no_body(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    proxy.add_fault("HeadObject", "status", status=404)
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key="k")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # The keep-alive connection is still usable: no stray body bytes were sent.
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == 1


def test_wildcard_rule_with_nth_and_times(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    proxy.add_fault("*", "status", status=503, nth=2, times=2)
    outcomes: list[str] = []
    for _ in range(5):
        try:
            s3.get_object(Bucket=bucket, Key="k")["Body"].read()
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(_error_code(exc))
    assert outcomes == ["ok", "SlowDown", "SlowDown", "ok", "ok"]


def test_times_forever(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    proxy.add_fault("HeadBucket", "status", status=503, times=-1)
    for _ in range(4):
        with pytest.raises(ClientError):
            s3.head_bucket(Bucket=bucket)
    assert proxy.faults()[0]["fired"] == 4


def test_reset_fault_gives_connection_error(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    proxy.add_fault("PutObject", "reset")
    with pytest.raises(CONNECTION_ERRORS):
        s3.put_object(Bucket=bucket, Key="k", Body=b"payload")
    # The next request (on a fresh connection) goes through.
    s3.put_object(Bucket=bucket, Key="k", Body=b"payload")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"payload"
    assert proxy.counts() == {"PutObject": 2, "GetObject": 1}
    assert proxy.faults()[0]["fired"] == 1


def test_reset_fault_with_large_body(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    proxy.add_fault("UploadPart", "reset")
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    with pytest.raises(CONNECTION_ERRORS):
        s3.upload_part(
            Bucket=bucket,
            Key="mp",
            UploadId=mpu["UploadId"],
            PartNumber=1,
            Body=os.urandom(8 * MIB),
        )
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=mpu["UploadId"])
    assert proxy.counts() == {
        "CreateMultipartUpload": 1,
        "UploadPart": 1,
        "AbortMultipartUpload": 1,
    }


def test_stall_delays_request(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"slow")
    stall = 0.6
    proxy.add_fault("GetObject", "stall", seconds=stall)
    t0 = time.monotonic()
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"slow"
    assert time.monotonic() - t0 >= stall
    # Only the first one is stalled (times defaults to 1).
    t1 = time.monotonic()
    s3.get_object(Bucket=bucket, Key="k")["Body"].read()
    assert time.monotonic() - t1 < stall
    assert proxy.faults()[0]["fired"] == 1


def test_drop_with_seconds_closes_without_answer(proxy: S3Proxy, bucket: str) -> None:
    c = _client(proxy.url, read_timeout=30)
    try:
        proxy.add_fault("HeadBucket", "drop", seconds=0.5)
        t0 = time.monotonic()
        with pytest.raises(CONNECTION_ERRORS):
            c.head_bucket(Bucket=bucket)
        assert time.monotonic() - t0 >= 0.5
        c.head_bucket(Bucket=bucket)
    finally:
        c.close()


def test_drop_forever_times_out_client(proxy: S3Proxy, bucket: str) -> None:
    c = _client(proxy.url, read_timeout=0.5)
    try:
        proxy.add_fault("HeadBucket", "drop")
        with pytest.raises(ReadTimeoutError):
            c.head_bucket(Bucket=bucket)
    finally:
        c.close()
    # A dropped request parked in the proxy must not hold up a clean shutdown.
    t0 = time.monotonic()
    proxy.stop()
    assert proxy.returncode == 0
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(("fraction", "seed", "times"), [(0.3, 1234, None), (0.5, 99, 3)])
def test_fraction_rule_is_deterministic(
    proxy: S3Proxy, s3: Any, bucket: str, fraction: float, seed: int, times: int | None
) -> None:
    n = 60
    rng = random.Random(seed)
    draws = [rng.random() < fraction for _ in range(n)]
    expected = [i for i, hit in enumerate(draws) if hit]
    if times is not None:
        expected = expected[:times]
    assert 0 < len(expected) < n

    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    kw: dict[str, Any] = {"status": 503, "fraction": fraction, "seed": seed}
    if times is not None:
        kw["times"] = times
    proxy.add_fault("GetObject", "status", **kw)

    failed: list[int] = []
    for i in range(n):
        try:
            s3.get_object(Bucket=bucket, Key="k")["Body"].read()
        except ClientError as exc:
            assert _error_code(exc) == "SlowDown"
            failed.append(i)
    assert failed == expected
    [rule] = proxy.faults()
    assert rule["fired"] == len(expected) and rule["seen"] == n
    assert proxy.counts() == {"PutObject": 1, "GetObject": n}


# --------------------------------------------------------------------------------------
# Killing the endpoint
# --------------------------------------------------------------------------------------


def test_kill_makes_next_request_fail(proxy: S3Proxy, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    pid = proxy.pid
    proxy.kill()
    assert proxy.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(CONNECTION_ERRORS):
        s3.get_object(Bucket=bucket, Key="k")
    proxy.stop()  # no-op after kill
