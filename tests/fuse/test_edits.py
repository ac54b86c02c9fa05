"""Writes anywhere S3 allows (issue 17) through a real FUSE mount, checked against moto:
in-place edits of stored objects (dd conv=notrunc, rsync --inplace), random writes in small
files (sqlite3), rewrites of held parts (zip), bounded and interruptible growth (truncate)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import Mount, wait_for

MiB = 1024 * 1024

pytestmark = pytest.mark.fuse


def object_bytes(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def sh(cmd: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def needs(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")


SIZE = 25 * MiB  # blocks of 8 MiB: [0, 8) [8, 16) [16, 25)


@pytest.mark.parametrize(("where", "offset", "copies"), [
    ("start", 0, 1), ("middle", 12 * MiB + 5, 2), ("near the end", SIZE - 100, 1)])
def test_dd_notrunc_edits_in_place_and_copies_the_rest_server_side(
        proxied_mount: Mount, proxy: S3Proxy, s3: Any, bucket: str, tmp_path: Path,
        where: str, offset: int, copies: int) -> None:
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(SIZE))
    s3.put_object(Bucket=bucket, Key="big.bin", Body=local.read_bytes())
    patch = tmp_path / "patch"
    patch.write_bytes(b"0123456789abcdef")
    proxy.reset()
    for target in (local, proxied_mount.mountpoint / "big.bin"):
        r = sh(f"dd if={patch} of={target} bs=1 seek={offset} conv=notrunc status=none")
        assert r.returncode == 0, (where, r.stderr)
    assert object_bytes(s3, bucket, "big.bin") == local.read_bytes()
    counts = proxy.counts()
    assert counts.get("UploadPartCopy") == copies  # the untouched blocks, server side
    assert counts.get("UploadPart") == 1  # the touched block only
    assert counts.get("GetObject") == 1  # its ranged GET
    assert counts.get("CompleteMultipartUpload") == 1


def test_edit_and_append_complete_with_part_number_gaps(
        proxied_mount: Mount, proxy: S3Proxy, s3: Any, bucket: str, tmp_path: Path) -> None:
    """An edit near the start and 20 MiB appended: the appended parts stream after the part
    numbers the stored object reserves (edits.py), and S3 completes across the gap."""
    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(SIZE))
    s3.put_object(Bucket=bucket, Key="grow.bin", Body=local.read_bytes())
    extra = tmp_path / "extra.bin"
    extra.write_bytes(os.urandom(20 * MiB))
    proxy.reset()
    for target in (local, proxied_mount.mountpoint / "grow.bin"):
        r = sh(f"printf HEAD | dd of={target} bs=1 seek=3 conv=notrunc status=none && "
               f"cat {extra} >> {target}")
        assert r.returncode == 0, r.stderr
    assert object_bytes(s3, bucket, "grow.bin") == local.read_bytes()
    # the edit copies [8 MiB, 25 MiB), the append the whole edited object: both server side
    assert proxy.counts().get("UploadPartCopy") == 2


def test_rsync_inplace_of_a_changed_file(mount: Mount, s3: Any, bucket: str,
                                         tmp_path: Path) -> None:
    needs("rsync")
    src = tmp_path / "src.bin"
    data = bytearray(os.urandom(40 * MiB))
    src.write_bytes(data)
    s3.put_object(Bucket=bucket, Key="sync.bin", Body=bytes(data))
    data[3 * MiB:3 * MiB + 10] = b"x" * 10
    data[30 * MiB:30 * MiB + 5000] = os.urandom(5000)
    src.write_bytes(data)
    os.utime(src, (1, 1))  # differs from the object's mtime: rsync sends it
    r = sh(f"rsync --inplace --no-whole-file {src} {mount.mountpoint}/sync.bin")
    assert r.returncode == 0, r.stderr
    assert object_bytes(s3, bucket, "sync.bin") == data


def test_sqlite_database_on_the_mount(mount: Mount, tmp_path: Path) -> None:
    needs("sqlite3")
    db = mount.mountpoint / "test.db"
    sql = ("create table t(id integer primary key, v text);"
           "insert into t(v) select hex(randomblob(200)) from generate_series(1, 2000);"
           "update t set v = 'changed' where id % 7 = 0;")
    r = sh(f"sqlite3 {db} \"{sql}\"")
    assert r.returncode == 0, r.stderr
    r = sh(f"sqlite3 {db} \"update t set v = 'again' where id < 10; pragma integrity_check;"
           f" select count(*), sum(v = 'changed'), sum(v = 'again') from t;\"")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "2000|284|9"]


@pytest.mark.parametrize("member", [12 * MiB, 16 * MiB])
def test_zip_of_three_files_passes_unzip_t(mount: Mount, tmp_path: Path, member: int) -> None:
    """zip writes a member, then seeks back to patch its local header: a rewrite of a part
    already uploaded whose buffer the pool still holds (heldparts.py)."""
    needs("zip", "unzip")
    src = tmp_path / "dir"
    src.mkdir()
    for i in range(3):
        (src / f"m{i}.bin").write_bytes(os.urandom(member))
    r = sh(f"zip -q -0 -r {mount.mountpoint}/a.zip dir", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shutil.copy(mount.mountpoint / "a.zip", tmp_path / "a.zip")
    r = sh(f"unzip -t {tmp_path}/a.zip")
    assert r.returncode == 0, r.stdout + r.stderr


def test_truncate_to_a_petabyte_is_efbig_at_once(mount: Mount, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="small.txt", Body=b"hello")
    t0 = time.monotonic()
    r = sh(f"truncate -s 1P {mount.mountpoint}/small.txt", timeout=10)
    assert r.returncode != 0
    assert "File too large" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 2
    assert object_bytes(s3, bucket, "small.txt") == b"hello"
    with pytest.raises(OSError) as exc:
        os.truncate(mount.mountpoint / "small.txt", 6 * 1024**4)
    assert exc.value.errno == errno.EFBIG
    assert os.stat(mount.mountpoint / "small.txt").st_size == 5


def test_truncate_20g_is_interrupted_by_sigint(mount: Mount, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="grow.bin", Body=b"old object")
    # Ctrl-C's SIGINT at its default action even where the test run was started with `&`
    # by a shell without job control, which makes every child ignore SIGINT (POSIX).
    proc = subprocess.Popen(["truncate", "-s", "20G", str(mount.mountpoint / "grow.bin")],
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: os.stat(mount.mountpoint / "grow.bin").st_size > 16 * MiB, 60,
             "the fill under way")
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    # Not a speed check: uninterrupted, 20 GiB of zeros take minutes (moto: ~15 MB/s here).
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert os.stat(mount.mountpoint / "grow.bin").st_size == len(b"old object")
    assert object_bytes(s3, bucket, "grow.bin") == b"old object"
    deadline = time.monotonic() + 10
    while s3.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        assert time.monotonic() < deadline, "the fill's multipart upload was not aborted"


def test_sigterm_stops_a_long_fill_and_the_daemon(mount: Mount, s3: Any, bucket: str) -> None:
    """`systemctl stop` during `truncate -s 20G`: the daemon stops the fill at its next MiB
    (pyfuse3 ends only when every request has answered, so it waited for all 20 GiB), aborts
    the upload, unmounts and exits 0; S3 keeps the old object."""
    s3.put_object(Bucket=bucket, Key="grow.bin", Body=b"old object")
    proc = subprocess.Popen(["truncate", "-s", "20G", str(mount.mountpoint / "grow.bin")],
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: "grow.bin" in str(s3.list_multipart_uploads(Bucket=bucket)), 60,
                 "the fill's multipart upload")
        daemon = mount.proc
        assert daemon is not None
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)  # uninterrupted, the fill takes minutes
        assert daemon.returncode == 0, mount.log()
        proc.wait(timeout=60)
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "zero-fill stopped" in mount.log()
    assert object_bytes(s3, bucket, "grow.bin") == b"old object"
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


@pytest.mark.parametrize("old", [b"old object", None])
def test_failed_part_stops_the_fill_and_keeps_the_old_object(
        proxied_mount: Mount, proxy: S3Proxy, s3: Any, bucket: str,
        old: bytes | None) -> None:
    """A part of a zero-fill failing for good (after botocore's retries): the fill stops
    there (a few parts, not 2 GiB of them), ftruncate or close() fails with EIO, and S3 keeps
    the old object, or none."""
    if old is not None:
        s3.put_object(Bucket=bucket, Key="fill.bin", Body=old)
    proxy.add_fault("UploadPart", "status", status=500, times=-1)
    path = proxied_mount.mountpoint / "fill.bin"
    with pytest.raises(OSError) as exc:  # noqa: PT012 - either call may report it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        try:
            os.ftruncate(fd, 2 * 1024 * MiB)
        finally:
            os.close(fd)
    assert exc.value.errno == errno.EIO
    # 5 attempts (botocore) of at most the 4 parts in flight and the one waiting for a slot
    assert proxy.counts().get("UploadPart", 0) <= 5 * (4 + 1)
    proxy.reset()
    if old is None:
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="fill.bin")
    else:
        assert object_bytes(s3, bucket, "fill.bin") == old
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert any("zero-fill stopped" in line for line in proxied_mount.log().splitlines())
