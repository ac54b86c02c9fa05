"""Streaming writes through a real FUSE mount, checked through boto3 against moto."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fuse.conftest import hand_over
from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import Mount, wait_for

MiB = 1024 * 1024


def object_bytes(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def no_object(s3: Any, bucket: str, key: str) -> bool:
    return "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=key)


def sh(cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cp_100mib_is_byte_exact(mount: Mount, s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(100 * MiB))
    r = sh(f"cp {src} {mount.mountpoint}/big.bin")
    assert r.returncode == 0, r.stderr
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == 100 * MiB
    assert head["ETag"].strip('"').endswith("-13")  # 12 full 8 MiB parts + a 4 MiB tail
    assert hashlib.sha256(object_bytes(s3, bucket, "big.bin")).hexdigest() == sha256_file(src)
    # and read back through the mount
    assert sha256_file(mount.mountpoint / "big.bin") == sha256_file(src)


def test_parts_upload_while_the_file_is_open(mount: Mount, s3: Any, bucket: str) -> None:
    data = os.urandom(24 * MiB + 123)
    path = mount.mountpoint / "stream.bin"
    with open(path, "wb", buffering=0) as f:
        f.write(data[: 24 * MiB])

        def parts_seen() -> bool:
            uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if not uploads:
                return False
            parts = s3.list_parts(Bucket=bucket, Key="stream.bin",
                                  UploadId=uploads[0]["UploadId"]).get("Parts", [])
            return len(parts) >= 2

        wait_for(parts_seen, 30, "two parts uploaded while the file is open")
        assert no_object(s3, bucket, "stream.bin")
        assert os.stat(path).st_size == 24 * MiB  # stat shows the bytes written so far
        assert "stream.bin" in os.listdir(mount.mountpoint)  # and ls lists it
        f.write(data[24 * MiB:])
    assert os.stat(path).st_size == len(data)
    assert object_bytes(s3, bucket, "stream.bin") == data
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_tar_through_cat_is_byte_exact(mount: Mount, s3: Any, bucket: str,
                                       tmp_path: Path) -> None:
    tree = tmp_path / "data"
    (tree / "sub").mkdir(parents=True)
    (tree / "big.bin").write_bytes(os.urandom(20 * MiB))
    (tree / "sub" / "mid.bin").write_bytes(os.urandom(3 * MiB + 7))
    for i in range(50):
        (tree / "sub" / f"small{i}.txt").write_text(f"file {i}\n" * i)
    r = sh(f"tar cf - data | cat > {mount.mountpoint}/backup.tar", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    expected = sh("tar cf - data | sha256sum", cwd=tmp_path).stdout.split()[0]
    assert hashlib.sha256(object_bytes(s3, bucket, "backup.tar")).hexdigest() == expected


def test_small_file_is_one_put(proxied_mount: Mount, proxy: S3Proxy, s3: Any,
                               bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "small.txt"
    src.write_bytes(b"hello world\n" * 100)
    proxy.reset()
    r = sh(f"cp {src} {proxied_mount.mountpoint}/small.txt")
    assert r.returncode == 0, r.stderr
    counts = proxy.counts()
    assert counts.get("PutObject") == 1
    assert not {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"} & set(counts)
    head = s3.head_object(Bucket=bucket, Key="small.txt")
    assert "-" not in head["ETag"]
    assert object_bytes(s3, bucket, "small.txt") == src.read_bytes()


def test_empty_file_is_a_zero_byte_object(mount: Mount, s3: Any, bucket: str) -> None:
    r = sh(f"touch {mount.mountpoint}/empty && : > {mount.mountpoint}/empty2")
    assert r.returncode == 0, r.stderr

    def both_exist() -> bool:  # an empty file is stored on release, just after close()
        keys = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)
                .get("Contents", [])}
        return keys.get("empty") == 0 and keys.get("empty2") == 0

    wait_for(both_exist, 10, "the empty objects")


def test_subshell_and_group_redirections_store_the_whole_file(
        mount: Mount, s3: Any, bucket: str) -> None:
    # A child (sleep, /bin/echo) closes its inherited copy of the descriptor while the shell
    # keeps writing: each such close flushes, and the file must still end up complete.
    r = sh(f"( echo a; sleep 1; echo b ) > {mount.mountpoint}/f")
    assert r.returncode == 0, r.stderr
    assert object_bytes(s3, bucket, "f") == b"a\nb\n"
    r = sh(f"{{ /bin/echo one; /bin/echo two; echo three; }} > {mount.mountpoint}/g")
    assert r.returncode == 0, r.stderr
    assert object_bytes(s3, bucket, "g") == b"one\ntwo\nthree\n"


def test_a_forked_childs_close_does_not_commit_a_half_written_file(
        mount: Mount, s3: Any, bucket: str) -> None:
    """A process that spawns children while it writes (a thread running subprocess, a shell
    running a command): each child closes its copy of the descriptor, which the kernel sends
    as a FLUSH. While the opener still holds the file, such a flush must not store the half
    written file: if a later part failed, close() would fail with a truncated object in S3."""
    first, rest = os.urandom(MiB), os.urandom(2 * MiB)
    with open(mount.mountpoint / "forked.bin", "wb", buffering=0) as f:
        f.write(first)
        subprocess.run(["true"], check=True)  # close-on-exec in the child: a FLUSH
        subprocess.run(["sh", "-c", "exit 0"], pass_fds=(f.fileno(),), check=True)  # at exit
        # close() in the child waits for the FLUSH answer, so a commit would be visible now.
        assert no_object(s3, bucket, "forked.bin")
        f.write(rest)
    assert object_bytes(s3, bucket, "forked.bin") == first + rest


def test_writes_after_the_openers_close_continue_the_upload(
        mount: Mount, s3: Any, bucket: str, tmp_path: Path) -> None:
    # The opener's close() commits its 10 MiB (one full part + tail); the child's bytes then
    # continue the object (server-side copy of the committed part) and its exit commits all.
    a, b = os.urandom(10 * MiB), tmp_path / "b"
    b.write_bytes(os.urandom(9 * MiB))
    fd = os.open(mount.mountpoint / "joined", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, a)
        child = hand_over(fd, b)
    finally:
        os.close(fd)
    assert object_bytes(s3, bucket, "joined") == a
    child.communicate(b"go\n", timeout=120)
    assert child.returncode == 0
    assert object_bytes(s3, bucket, "joined") == a + b.read_bytes()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_write_past_the_end_fills_the_gap_with_zeros(mount: Mount, s3: Any,
                                                     bucket: str) -> None:
    fd = os.open(mount.mountpoint / "holey", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, b"x" * 100)
        os.pwrite(fd, b"y", 5000)
        os.pwrite(fd, b"z", 50)  # inside the part still being filled: rewritten in place
    finally:
        os.close(fd)
    assert object_bytes(s3, bucket, "holey") == b"x" * 50 + b"z" + b"x" * 49 + \
        b"\0" * 4900 + b"y"


def test_server_dying_mid_write_fails_close_and_stores_nothing(
        proxied_mount: Mount, proxy: S3Proxy, s3: Any, bucket: str) -> None:
    path = proxied_mount.mountpoint / "doomed.bin"
    f = open(path, "wb", buffering=0)  # noqa: SIM115 - closed explicitly below
    try:
        f.write(os.urandom(20 * MiB))
        proxy.kill()  # the S3 endpoint the mount talks to is gone
        with pytest.raises(OSError) as exc:
            f.write(os.urandom(20 * MiB))
            f.close()
        assert exc.value.errno == errno.EIO
    finally:
        if not f.closed:
            try:
                f.close()
            except OSError as exc2:
                assert exc2.errno == errno.EIO
    assert no_object(s3, bucket, "doomed.bin")


@pytest.mark.parametrize("size", [100, 20 * MiB])
def test_failed_overwrite_keeps_the_old_object(
        proxied_mount: Mount, proxy: S3Proxy, s3: Any, bucket: str, tmp_path: Path,
        size: int) -> None:
    old = os.urandom(1234)
    s3.put_object(Bucket=bucket, Key="keep.bin", Body=old)
    src = tmp_path / "new.bin"
    src.write_bytes(os.urandom(size))
    op = "PutObject" if size < 8 * MiB else "CompleteMultipartUpload"
    proxy.add_fault(op, "status", status=500, times=-1)
    r = sh(f"cp {src} {proxied_mount.mountpoint}/keep.bin")
    assert r.returncode != 0
    assert "Input/output error" in r.stderr
    assert object_bytes(s3, bucket, "keep.bin") == old
    if size >= 8 * MiB:  # the failed upload was aborted, not left behind
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("size", [100, 20 * MiB])
def test_refused_upload_fails_close_with_eacces(
        proxied_mount: Mount, proxy: S3Proxy, s3: Any, bucket: str, tmp_path: Path,
        size: int) -> None:
    """S3 refusing the upload (403, an IAM policy without s3:PutObject) is "Permission
    denied" for the writer, not EIO (errors.errno_for); the old object stays."""
    old = os.urandom(1234)
    s3.put_object(Bucket=bucket, Key="denied.bin", Body=old)
    src = tmp_path / "new.bin"
    src.write_bytes(os.urandom(size))
    op = "PutObject" if size < 8 * MiB else "CompleteMultipartUpload"
    proxy.add_fault(op, "status", status=403, times=-1)
    r = sh(f"cp {src} {proxied_mount.mountpoint}/denied.bin")
    proxy.reset()
    assert r.returncode != 0
    assert "Permission denied" in r.stderr, r.stderr
    assert object_bytes(s3, bucket, "denied.bin") == old
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert any("denied.bin" in line and " ERROR " in line
               for line in proxied_mount.log().splitlines()), proxied_mount.log()


def test_stat_after_close_shows_final_size(mount: Mount) -> None:
    path = mount.mountpoint / "sized"
    with open(path, "wb") as f:
        f.write(b"z" * 12345)
    assert os.stat(path).st_size == 12345
