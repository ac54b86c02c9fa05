"""Reads through a real FUSE mount of s3mpfs against moto: whole objects byte-exact, random
preads, a remote replacement during a read, `head` on a large object, read-after-write, mmap and
exec."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import Mount, S3Server, wait_for

MiB = 1024 * 1024
KiB = 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def put(s3: Any, bucket: str, key: str, data: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=data)


def put_multipart(s3: Any, bucket: str, key: str, data: bytes, part: int = 8 * MiB) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, off in enumerate(range(0, len(data), part), start=1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                           Body=data[off:off + part])
        parts.append({"PartNumber": number, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                 MultipartUpload={"Parts": parts})


@pytest.fixture
def cleanup(s3: Any, bucket: str) -> Iterator[None]:
    """moto keeps objects in memory for the whole session: drop the big ones after a test."""
    yield
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])


def test_200mib_object_reads_byte_exact(mount: Mount, s3: Any, bucket: str,
                                        cleanup: None) -> None:
    data = os.urandom(200 * MiB)
    put(s3, bucket, "big.bin", data)
    want = hashlib.sha256(data).hexdigest()
    del data
    assert os.stat(mount.mountpoint / "big.bin").st_size == 200 * MiB
    assert sha256_file(mount.mountpoint / "big.bin") == want


def test_multipart_object_reads_byte_exact(mount: Mount, s3: Any, bucket: str,
                                           cleanup: None) -> None:
    # moto rebuilds a multipart object for every ranged GET (~0.6 s each): keep it small.
    data = os.urandom(20 * MiB + 12345)
    put_multipart(s3, bucket, "mp.bin", data)
    assert s3.head_object(Bucket=bucket, Key="mp.bin")["ETag"].strip('"').endswith("-3")
    r = subprocess.run(["cat", str(mount.mountpoint / "mp.bin")], capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_1000_random_preads_on_one_descriptor(mount: Mount, s3: Any, bucket: str,
                                              cleanup: None) -> None:
    size = 16 * MiB + 777  # moto pays ~0.8 ms per MiB of the object for every ranged GET
    data = os.urandom(size)
    put(s3, bucket, "rand.bin", data)
    rng = random.Random(42)
    fd = os.open(mount.mountpoint / "rand.bin", os.O_RDONLY)
    try:
        for i in range(1000):
            if i % 20 == 0:  # drop the kernel's cached pages, so reads reach s3mpfs again
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if i % 10 == 0:  # now and then at or across the end of the file
                off = rng.randrange(size - 64 * KiB, size + 4 * KiB)
            else:
                off = rng.randrange(size)
            length = rng.choice([1, 100, 4 * KiB, 64 * KiB, 128 * KiB, MiB, 3 * MiB + 1])
            assert os.pread(fd, length, off) == data[off:off + length], (i, off, length)
    finally:
        os.close(fd)


def test_object_replaced_during_a_read_fails_instead_of_mixing(
        mount: Mount, s3: Any, bucket: str, cleanup: None) -> None:
    size = 64 * MiB
    old = os.urandom(size)
    put(s3, bucket, "v.bin", old)
    with open(mount.mountpoint / "v.bin", "rb", buffering=0) as f:
        assert f.read(MiB) == old[:MiB]
        new = os.urandom(size)
        put(s3, bucket, "v.bin", new)  # replaced remotely while the file is open
        far = size - 2 * MiB  # far beyond anything prefetched so far
        with pytest.raises(OSError) as exc:
            os.pread(f.fileno(), MiB, far)
        assert exc.value.errno in (errno.ESTALE, errno.EIO)
        # Whatever still answers comes from the version opened, never the new one.
        try:
            again = os.pread(f.fileno(), 64 * KiB, 256 * KiB)
        except OSError as err:
            assert err.errno in (errno.ESTALE, errno.EIO)
        else:
            assert again == old[256 * KiB:320 * KiB]
    # A fresh open sees the new version.
    with open(mount.mountpoint / "v.bin", "rb") as f:
        f.seek(far)
        assert f.read(MiB) == new[far:far + MiB]


_GET_RE = re.compile(r"GET big\.bin \[(\d+), (\d+)\)")
_CLOSED_RE = re.compile(r"closed big\.bin: (\d+) GETs, (\d+) bytes fetched")


@pytest.fixture
def debug_mount(fuse: None, bucket: str, proxy: S3Proxy, tmp_path: Path) -> Iterator[Mount]:
    """s3mpfs with --debug (one log line per GET) behind the counting proxy."""
    m = Mount(bucket, tmp_path / "mnt", proxy.url, tmp_path / "s3mpfs.log", extra=["--debug"])
    try:
        m.start()
        yield m
    finally:
        code = m.unmount()
    assert code == 0, f"s3mpfs exited with {code}:\n{m.log()}"


def test_head_of_a_large_object_is_fast_and_fetches_little(
        debug_mount: Mount, proxy: S3Proxy, s3: Any, bucket: str, cleanup: None) -> None:
    data = os.urandom(96 * MiB)
    put(s3, bucket, "big.bin", data)
    assert os.path.getsize(debug_mount.mountpoint / "big.bin") == len(data)
    proxy.reset()
    t0 = time.monotonic()
    r = subprocess.run(["head", "-c", "100", str(debug_mount.mountpoint / "big.bin")],
                       capture_output=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout == data[:100]
    assert elapsed < 5, elapsed
    # The handle's release logs its totals; FUSE sends release after head has exited.
    wait_for(lambda: _CLOSED_RE.search(debug_mount.log()) is not None, 30, "release logged")
    log = debug_mount.log()
    m = _CLOSED_RE.search(log)
    assert m is not None
    gets, fetched = int(m.group(1)), int(m.group(2))
    ranges = [(int(a), int(b)) for a, b in _GET_RE.findall(log)]
    assert len(ranges) == gets
    assert ranges[0][0] == 0 and ranges[0][1] <= 2 * MiB  # a small first GET
    assert fetched <= 4 * MiB, ranges  # not the object: at most the first window or two
    assert proxy.counts().get("GetObject", 0) == gets


_WINDOW_RE = re.compile(r"GET big\.bin \[\d+, \d+\) \d+ bytes \(\w+; window (\d+)\)")


def test_read_options_reach_the_daemons_prefetcher(
        fuse: None, bucket: str, server: S3Server, s3: Any, tmp_path: Path,
        cleanup: None) -> None:
    """-o first_read=,read_ahead= decide the window of a real mount's reads: it starts at
    first_read and stops growing at read_ahead (the default would reach 64 MiB here)."""
    data = os.urandom(24 * MiB)
    put(s3, bucket, "big.bin", data)
    m = Mount(bucket, tmp_path / "mnt", server.url, tmp_path / "s3mpfs.log",
              extra=["--debug", "-o", "first_read=256K,read_ahead=2M"])
    try:
        m.start()
        assert sha256_file(m.mountpoint / "big.bin") == hashlib.sha256(data).hexdigest()
        wait_for(lambda: _CLOSED_RE.search(m.log()) is not None, 30, "release logged")
    finally:
        code = m.unmount()
    assert code == 0, f"s3mpfs exited with {code}:\n{m.log()}"
    windows = [int(w) for w in _WINDOW_RE.findall(m.log())]
    assert windows[0] == 256 * KiB, windows
    assert max(windows) == 2 * MiB, windows


def test_file_written_through_the_mount_reads_back_exactly(mount: Mount) -> None:
    big = os.urandom(21 * MiB + 5)  # three parts, the last one short
    small = b"hello, s3mpfs\n" * 100
    for name, data in (("big.bin", big), ("small.txt", small)):
        path = mount.mountpoint / name
        with open(path, "wb") as f:
            f.write(data)
        with open(path, "rb") as f:  # just closed: the same mount reads it back
            assert f.read() == data
        assert os.stat(path).st_size == len(data)


@pytest.mark.skipif(os.geteuid() != 0, reason="setting a mount's readahead in sysfs needs root")
def test_the_mount_reads_ahead_1_mib(mount: Mount) -> None:
    """Sequential reads arrive as 1 MiB requests only if the mount's readahead is 1 MiB; the
    kernel resets a value written before the FUSE INIT handshake (mount.py READ_AHEAD_KB)."""
    escaped = str(mount.mountpoint).replace(" ", "\\040")
    with open("/proc/self/mountinfo") as f:
        (device,) = [line.split()[2] for line in f if line.split()[4] == escaped]
    ra = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
    wait_for(lambda: ra.read_text().strip() == "1024", 10,
             f"read_ahead_kb of {mount.mountpoint} to be 1024")


def test_mapped_reads_and_exec_of_a_stored_program(mount: Mount, s3: Any, bucket: str,
                                                    cleanup: None) -> None:
    """mmap (ripgrep, sqlite, git) and exec (an ELF binary is mapped, not read) are served
    by the same read path through the page cache: byte-exact, and the binary runs."""
    data = os.urandom(6 * MiB + 4321)  # a short last page
    put(s3, bucket, "mapped.bin", data)
    path = mount.mountpoint / "mapped.bin"
    rng = random.Random(7)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert len(m) == len(data)
        for _ in range(200):  # scattered page faults first, then the whole mapping
            off = rng.randrange(len(data))
            assert m[off:off + 5000] == data[off:off + 5000], off
        assert hashlib.sha256(m).hexdigest() == hashlib.sha256(data).hexdigest()

    program = shutil.which("true")
    assert program is not None
    stored = mount.mountpoint / "bin" / "true-copy"
    stored.parent.mkdir()
    shutil.copy(program, stored)  # copies the mode too: 0755
    assert s3.get_object(Bucket=bucket, Key="bin/true-copy")["Body"].read() == \
        Path(program).read_bytes()
    assert subprocess.run([str(stored)], timeout=30).returncode == 0
    # The copy through the mount holds the program's bytes, not just something executable.
    r = subprocess.run([str(stored), "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "true" in r.stdout
