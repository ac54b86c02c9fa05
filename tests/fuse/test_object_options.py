"""Backup-grade object options through a real mount (README "Backup-grade objects"): `cp`,
`cat` and Python file I/O on s3mpfs mounted with --storage-class, --sse, --tag, --acl,
--content-type, --no-clobber, --sse-c-key-file; the objects checked with boto3 against moto."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuse.conftest import hand_over
from tests.helpers.servers import CREDENTIALS, Mount

MiB = 1024 * 1024

MountWith = Callable[..., Mount]


@pytest.fixture
def mount_with(fuse: None, bucket: str, server: Any, tmp_path: Path) -> Iterator[MountWith]:
    """mount_with("--opt", ...) mounts the test bucket with these options; every mount made
    is unmounted afterwards and must have exited cleanly."""
    mounts: list[Mount] = []

    def start(*extra: str) -> Mount:
        n = len(mounts)
        m = Mount(bucket, tmp_path / f"mnt{n}", server.url, tmp_path / f"s3mpfs{n}.log",
                  extra=list(extra))
        mounts.append(m)
        m.start()
        return m

    try:
        yield start
    finally:
        codes = [(m, m.unmount()) for m in mounts]
    for m, code in codes:
        assert code == 0, f"s3mpfs exited with {code}:\n{m.log()}"
        assert "Traceback" not in m.log(), m.log()


def sh(cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)


def body(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def uploads(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.mark.needs("storage_classes")
def test_storage_class_and_content_type(mount_with: MountWith, s3: Any, bucket: str,
                                        tmp_path: Path) -> None:
    m = mount_with("--storage-class", "STANDARD_IA")
    (tmp_path / "x.txt").write_text("hello\n")
    (tmp_path / "x.tar").write_bytes(os.urandom(20 * MiB))
    r = sh(f"cp {tmp_path}/x.txt {tmp_path}/x.tar {m.mountpoint}/ && "
           f"mv {m.mountpoint}/x.txt {m.mountpoint}/y.txt")
    assert r.returncode == 0, r.stderr
    for key, ctype in (("y.txt", "text/plain"), ("x.tar", "application/x-tar")):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head.get("StorageClass") == "STANDARD_IA", (key, head)
        assert head["ContentType"] == ctype, key
    assert s3.head_object(Bucket=bucket, Key="x.tar")["ETag"].strip('"').endswith("-3")
    assert body(s3, bucket, "x.tar") == (tmp_path / "x.tar").read_bytes()
    assert "new objects: storage class STANDARD_IA" in m.log()


@pytest.mark.needs("sse", "multipart_tagging")
def test_tags_acl_and_sse(mount_with: MountWith, s3: Any, bucket: str,
                          tmp_path: Path) -> None:
    m = mount_with("--sse", "AES256", "--tag", "backup=daily", "-o",
                   "tag=team=ops,acl=public-read,content_type=application/x-backup")
    (tmp_path / "small").write_bytes(b"small")
    (tmp_path / "big").write_bytes(os.urandom(12 * MiB))
    r = sh(f"cp {tmp_path}/small {tmp_path}/big {m.mountpoint}/")
    assert r.returncode == 0, r.stderr
    for key in ("small", "big"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
        assert head["ContentType"] == "application/x-backup", key
        tags = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        assert sorted((t["Key"], t["Value"]) for t in tags) == [("backup", "daily"),
                                                                ("team", "ops")], key
        grants = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
        assert any(g["Grantee"].get("URI", "").endswith("/global/AllUsers")
                   and g["Permission"] == "READ" for g in grants), (key, grants)


def test_no_clobber(mount_with: MountWith, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="old.txt", Body=b"precious")
    s3.put_object(Bucket=bucket, Key="other.txt", Body=b"other")
    m = mount_with("-o", "noclobber")
    mnt = m.mountpoint
    (tmp_path / "new").write_bytes(b"new bytes")
    (tmp_path / "big").write_bytes(os.urandom(20 * MiB))
    r = sh(f"cp {tmp_path}/new {mnt}/old.txt")
    assert r.returncode != 0
    assert "File exists" in r.stderr, r.stderr
    assert body(s3, bucket, "old.txt") == b"precious"
    fd = os.open(mnt / "old.txt", os.O_WRONLY | os.O_APPEND)  # `>>`: would replace it too
    try:
        os.write(fd, b" more")
    finally:
        with pytest.raises(OSError) as exc:
            os.close(fd)
    assert exc.value.errno == errno.EEXIST
    assert body(s3, bucket, "old.txt") == b"precious"
    with pytest.raises(OSError) as exc:
        os.rename(mnt / "other.txt", mnt / "old.txt")
    assert exc.value.errno == errno.EEXIST
    r = sh(f"cp {tmp_path}/new {tmp_path}/big {mnt}/ && mv {mnt}/other.txt {mnt}/moved.txt")
    assert r.returncode == 0, r.stderr
    assert body(s3, bucket, "new") == b"new bytes"
    assert body(s3, bucket, "big") == (tmp_path / "big").read_bytes()
    assert body(s3, bucket, "moved.txt") == b"other"
    assert body(s3, bucket, "old.txt") == b"precious"
    assert uploads(s3, bucket) == []
    assert "--no-clobber keeps it" in m.log()


# A small file is one PutObject with If-None-Match; a large one a conditional Complete.
@pytest.mark.parametrize("size", [100, pytest.param(20 * MiB, marks=pytest.mark.needs(
    "complete_if_none_match"))])
def test_no_clobber_close_fails_if_the_name_was_taken_meanwhile(
        mount_with: MountWith, s3: Any, bucket: str, size: int) -> None:
    m = mount_with("--no-clobber")
    fd = os.open(m.mountpoint / "race.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, os.urandom(size))
        s3.put_object(Bucket=bucket, Key="race.bin", Body=b"the other writer's")
    finally:
        with pytest.raises(OSError) as exc:
            os.close(fd)  # the fd is released even when close() fails
    assert exc.value.errno == errno.EEXIST
    assert body(s3, bucket, "race.bin") == b"the other writer's"
    assert uploads(s3, bucket) == []  # the multipart upload was aborted


# A small file's second commit is a PutObject with If-Match on its own ETag.
@pytest.mark.parametrize("size", [pytest.param(100, marks=pytest.mark.needs("put_if_match")),
                                  9 * MiB])
def test_no_clobber_a_file_continues_after_its_own_close(
        mount_with: MountWith, s3: Any, bucket: str, size: int, tmp_path: Path) -> None:
    """The opener's close() stores its bytes; a child that inherited the descriptor writes on
    and its close() stores the whole file, replacing the writer's own object (If-Match on its
    ETag)."""
    m = mount_with("--no-clobber")
    first, more = os.urandom(size), tmp_path / "more"
    more.write_bytes(os.urandom(size))
    fd = os.open(m.mountpoint / "log.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, first)
        child = hand_over(fd, more)
    finally:
        os.close(fd)
    assert body(s3, bucket, "log.bin") == first
    child.communicate(b"go\n", timeout=120)
    assert child.returncode == 0
    assert body(s3, bucket, "log.bin") == first + more.read_bytes()


@pytest.mark.needs("storage_classes")
@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_reading_an_archived_object_fails_with_eacces(
        mount_with: MountWith, s3: Any, bucket: str, storage_class: str) -> None:
    s3.put_object(Bucket=bucket, Key="cold.tar", Body=b"frozen" * 1000,
                  StorageClass=storage_class)
    m = mount_with()
    assert os.stat(m.mountpoint / "cold.tar").st_size == 6000  # stat works (HEAD)
    r = sh(f"cat {m.mountpoint}/cold.tar")
    assert r.returncode != 0 and r.stdout == ""
    assert "Permission denied" in r.stderr, r.stderr
    assert "cold.tar: the object is in" in m.log() and "needs a restore" in m.log(), m.log()


@pytest.mark.needs("sse_c")
def test_sse_c_key_is_never_logged(mount_with: MountWith, s3: Any, bucket: str,
                                   tmp_path: Path) -> None:
    """moto ignores SSE-C (tests/store/test_object_options.py checks the headers BotoStore
    sends); here: every path works with the key configured and --debug never logs it."""
    key = os.urandom(32)
    (tmp_path / "key").write_bytes(key)
    os.chmod(tmp_path / "key", 0o600)
    m = mount_with("--sse-c-key-file", str(tmp_path / "key"), "--debug")
    data = os.urandom(12 * MiB)
    (tmp_path / "big").write_bytes(data)
    mnt = m.mountpoint
    r = sh(f"cp {tmp_path}/big {mnt}/big && echo small > {mnt}/small && "
           f"cat {mnt}/big > {tmp_path}/back && chmod 600 {mnt}/small && "
           f"mv {mnt}/big {mnt}/moved && echo tail >> {mnt}/moved && mkdir {mnt}/d")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back").read_bytes() == data
    assert body(s3, bucket, "moved") == data + b"tail\n"
    log = m.log()
    assert "S3 UploadPart big part 1: HTTP 200" in log  # --debug is on
    assert "new objects: storage class default, SSE-C" in log
    md5 = hashlib.md5(key).digest()
    for secret in (base64.b64encode(key).decode(), key.hex(), base64.b64encode(md5).decode(),
                   md5.hex()):
        assert secret not in log
    assert key not in m.log_path.read_bytes()


@pytest.mark.parametrize(("argv", "message"), [
    (["--storage-class", "COLD"], "--storage-class COLD: unknown storage class"),
    (["-o", "sse_c_key_file={short}"], "it must hold exactly 32 raw bytes"),
    (["--sse-kms-key-id", "alias/x"], "--sse-kms-key-id needs --sse aws:kms"),
    (["--tag", "nokey"], "--tag 'nokey': use KEY=VALUE"),
    (["--acl", "world"], "--acl world: unknown canned ACL"),
])
def test_bad_options_exit_2_before_mounting(bucket: str, server: Any, tmp_path: Path,
                                            argv: list[str], message: str) -> None:
    (tmp_path / "short").write_bytes(b"k" * 16)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "s3mpfs", bucket, str(mnt), "--endpoint-url", server.url,
           *(a.format(short=tmp_path / "short") for a in argv)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       env={**os.environ, **CREDENTIALS})
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert errors == [errors[-1]] and message in errors[0], r.stderr
    assert r.stderr.rstrip().endswith(errors[0])
    assert not os.path.ismount(mnt)
