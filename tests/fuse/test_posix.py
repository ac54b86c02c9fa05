"""cp, rsync, tar, mv, touch, truncate behave as on a disk (issue: overwrite, rename,
attributes, append, sparse and out-of-order writes), checked through boto3."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import Mount, wait_for

MiB = 1024 * 1024
DATA_OPS = {"PutObject", "CopyObject", "UploadPart", "UploadPartCopy", "GetObject",
            "DeleteObject", "CreateMultipartUpload", "CompleteMultipartUpload"}


def sh(cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def body(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(s3: Any, bucket: str) -> set[str]:
    out: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out |= {o["Key"] for o in page.get("Contents", [])}
    return out


def meta(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return dict(s3.head_object(Bucket=bucket, Key=key)["Metadata"])


# -- overwrite and append ---------------------------------------------------------------

def test_cp_overwrites(mount: Mount, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"old content")
    (tmp_path / "new").write_bytes(b"new")
    assert sh(f"cp {tmp_path}/new {mount.mountpoint}/f").returncode == 0
    assert body(s3, bucket, "f") == b"new"


def test_append_small_object(mount: Mount, s3: Any, bucket: str) -> None:
    # Put before the mount lists the directory: listings are cached for --metadata-ttl.
    s3.put_object(Bucket=bucket, Key="foreign", Body=b"x" * 1000)
    r = sh(f"echo one > {mount.mountpoint}/log && echo two >> {mount.mountpoint}/log")
    assert r.returncode == 0, r.stderr
    assert body(s3, bucket, "log") == b"one\ntwo\n"
    assert sh(f"echo tail >> {mount.mountpoint}/foreign").returncode == 0
    assert body(s3, bucket, "foreign") == b"x" * 1000 + b"tail\n"


def test_append_to_large_object_copies_server_side(
        proxied_mount: Mount, proxy: S3Proxy, s3: Any, bucket: str, tmp_path: Path) -> None:
    old = os.urandom(6 * MiB)
    s3.put_object(Bucket=bucket, Key="big", Body=old, Metadata={"mode": "33152"})
    extra = os.urandom(3 * MiB)
    (tmp_path / "extra").write_bytes(extra)
    proxy.reset()
    r = sh(f"cat {tmp_path}/extra >> {proxied_mount.mountpoint}/big")
    assert r.returncode == 0, r.stderr
    counts = proxy.counts()
    assert counts.get("UploadPartCopy") == 1
    assert "GetObject" not in counts  # the old 6 MiB were not downloaded
    assert body(s3, bucket, "big") == old + extra
    assert meta(s3, bucket, "big")["mode"] == "33152"  # the object's mode survived


def test_header_patch_after_body(mount: Mount, s3: Any, bucket: str, tmp_path: Path) -> None:
    """Formats that write a body and then patch a header at offset 0 (part 1 re-upload)."""
    path = mount.mountpoint / "patched.bin"
    script = textwrap.dedent(f"""
        import os
        fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, b"\\0" * 16)
        for i in range(20):
            os.write(fd, bytes([i]) * {MiB})
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"HEADER:20MiB....")
        os.close(fd)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    expected = b"HEADER:20MiB...." + b"".join(bytes([i]) * MiB for i in range(20))
    assert body(s3, bucket, "patched.bin") == expected


def test_write_into_a_long_uploaded_part_fails_and_stores_nothing(
        mount: Mount, s3: Any, bucket: str) -> None:
    fd = os.open(mount.mountpoint / "bad.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        # parts 1 to 12 uploaded: part 2's buffer is long reused (the pool keeps at most 5
        # and spares the newest 4 parts for rewrites, heldparts.py)
        os.write(fd, os.urandom(100 * MiB))
        with pytest.raises(OSError) as exc:
            os.pwrite(fd, b"x", 9 * MiB)  # inside part 2
        assert exc.value.errno == errno.EINVAL
    finally:
        with pytest.raises(OSError) as exc2:
            os.close(fd)
        assert exc2.value.errno == errno.EIO
    assert "bad.bin" not in keys(s3, bucket)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "offset 9437184" in mount.log()


def test_sparse_copy_is_byte_exact(mount: Mount, s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "sparse"
    with open(src, "wb") as f:
        f.write(b"start")
        f.seek(12 * MiB)
        f.write(b"middle")
        f.truncate(20 * MiB)  # ends in a hole
    r = sh(f"cp --sparse=always {src} {mount.mountpoint}/sparse")
    assert r.returncode == 0, r.stderr
    assert body(s3, bucket, "sparse") == src.read_bytes()


def test_ftruncate_grows_a_file_being_written(mount: Mount, s3: Any, bucket: str) -> None:
    with open(mount.mountpoint / "grown", "wb") as f:
        f.write(b"abc")
        f.truncate(10)
        f.seek(10)
        f.write(b"!")
    assert body(s3, bucket, "grown") == b"abc" + b"\0" * 7 + b"!"


def test_truncate_stored_files(mount: Mount, s3: Any, bucket: str) -> None:
    data = os.urandom(7 * MiB)
    s3.put_object(Bucket=bucket, Key="t", Body=data)
    assert sh(f"truncate -s 6M {mount.mountpoint}/t").returncode == 0  # copy of 6 MiB
    assert body(s3, bucket, "t") == data[:6 * MiB]
    assert sh(f"truncate -s 100 {mount.mountpoint}/t").returncode == 0  # fetched
    assert body(s3, bucket, "t") == data[:100]
    assert sh(f"truncate -s 200 {mount.mountpoint}/t").returncode == 0  # zero-filled
    assert body(s3, bucket, "t") == data[:100] + b"\0" * 100
    assert sh(f": > {mount.mountpoint}/t").returncode == 0
    wait_for(lambda: s3.head_object(Bucket=bucket, Key="t")["ContentLength"] == 0, 10,
             "the empty object")


# -- rename ------------------------------------------------------------------------------

def test_mv_file_and_onto_existing(mount: Mount, s3: Any, bucket: str) -> None:
    m = mount.mountpoint
    assert sh(f"echo A > {m}/a && echo B > {m}/b && chmod 600 {m}/a").returncode == 0
    assert sh(f"mv {m}/a {m}/c").returncode == 0
    assert body(s3, bucket, "c") == b"A\n" and "a" not in keys(s3, bucket)
    assert meta(s3, bucket, "c")["mode"] == str(stat.S_IFREG | 0o600)  # metadata moved
    assert sh(f"mv {m}/c {m}/b").returncode == 0
    assert body(s3, bucket, "b") == b"A\n" and "c" not in keys(s3, bucket)
    assert sorted(os.listdir(m)) == ["b"]


def test_rename_noreplace_and_exchange(mount: Mount, s3: Any, bucket: str) -> None:
    m = mount.mountpoint
    (m / "x").write_bytes(b"x")
    (m / "y").write_bytes(b"y")
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100

    def renameat2(a: Path, b: Path, flags: int) -> int:
        rc = libc.renameat2(at_fdcwd, str(a).encode(), at_fdcwd, str(b).encode(), flags)
        return 0 if rc == 0 else ctypes.get_errno()

    assert renameat2(m / "x", m / "y", 1) == errno.EEXIST  # RENAME_NOREPLACE
    assert renameat2(m / "x", m / "y", 2) == errno.EINVAL  # RENAME_EXCHANGE
    assert renameat2(m / "x", m / "z", 1) == 0
    assert body(s3, bucket, "y") == b"y" and body(s3, bucket, "z") == b"x"
    assert "x" not in keys(s3, bucket)


def test_rename_directory_tree(mount: Mount, s3: Any, bucket: str) -> None:
    m = mount.mountpoint
    assert sh(f"mkdir -p {m}/d/e && echo 1 > {m}/d/one && echo 2 > {m}/d/e/two "
              f"&& mkdir {m}/d/empty").returncode == 0
    s3.put_object(Bucket=bucket, Key="d/e/foreign", Body=b"3")  # not known to the mount
    assert sh(f"mv {m}/d {m}/moved").returncode == 0
    stored = keys(s3, bucket)
    assert not {k for k in stored if k.startswith("d/")}
    assert {"moved/", "moved/one", "moved/e/two", "moved/e/foreign", "moved/empty/"} <= stored
    assert (m / "moved" / "e" / "two").read_bytes() == b"2\n"
    assert sorted(os.listdir(m / "moved")) == ["e", "empty", "one"]
    assert not (m / "d").exists()


def test_rename_of_a_file_still_being_written(mount: Mount, s3: Any, bucket: str) -> None:
    m = mount.mountpoint
    data = os.urandom(12 * MiB)
    with open(m / "inflight.part", "wb") as f:
        f.write(data[:9 * MiB])  # a multipart upload is open under the old key
        os.rename(m / "inflight.part", m / "final.bin")
        f.write(data[9 * MiB:])
    stored = keys(s3, bucket)
    assert "final.bin" in stored and "inflight.part" not in stored
    assert body(s3, bucket, "final.bin") == data
    with open(m / "early.part", "wb") as f:  # renamed before any part went out
        f.write(b"small")
        os.rename(m / "early.part", m / "early.txt")
    assert body(s3, bucket, "early.txt") == b"small"
    assert "early.part" not in keys(s3, bucket)


# -- attributes --------------------------------------------------------------------------

def make_tree(root: Path, files: int, dirs: int, size: int = 4096) -> None:
    for d in range(dirs):
        sub = root / f"dir{d}"
        sub.mkdir(parents=True)
        for i in range(files // dirs):
            (sub / f"file{i}").write_bytes(os.urandom(size))
    os.utime(root / "dir0" / "file0", (1_000_000_000, 1_000_000_000))
    os.chmod(root / "dir0" / "file0", 0o600)


def test_rsync_twice_transfers_nothing(mount: Mount, s3: Any, bucket: str,
                                       tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 40, 4)
    r = sh(f"rsync -a --stats {src}/ {mount.mountpoint}/dst/")
    assert r.returncode == 0, r.stderr
    assert "Number of regular files transferred: 40" in r.stdout
    r = sh(f"rsync -a --stats {src}/ {mount.mountpoint}/dst/")
    assert r.returncode == 0, r.stderr
    assert "Number of regular files transferred: 0" in r.stdout, r.stdout
    m = meta(s3, bucket, "dst/dir0/file0")
    assert m["mtime"].split(".")[0] == "1000000000"
    assert int(m["mode"]) == stat.S_IFREG | 0o600
    assert not {k for k in keys(s3, bucket) if "/." in k}  # no rsync temp files left


def test_rsync_request_economy(fuse: None, bucket: str, proxy: S3Proxy, s3: Any,
                               tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, 1000, 10)
    # --debug: one log line per S3 request, to tell directory markers from files.
    m = Mount(bucket, tmp_path / "mnt", proxy.url, tmp_path / "s3mpfs.log", extra=["--debug"])
    try:
        m.start()
        offset = len(m.log())
        proxy.reset()
        r = sh(f"rsync -a --stats {src}/ {m.mountpoint}/dst/")
        assert r.returncode == 0, r.stderr
        counts = proxy.counts()
        puts = re.findall(r"S3 PutObject (\S+): HTTP 200", m.log()[offset:])
        assert len(puts) == counts.get("PutObject"), counts  # the log and the proxy agree
        dir_puts = Counter(key for key in puts if key.endswith("/"))
        file_puts = [key for key in puts if not key.endswith("/")]
        listings = counts.get("ListObjectsV2", 0)
        # Each file: one PutObject under its final name, with its mode and mtime (rsync's
        # temporary is held until its rename: holds.py); nothing copied or deleted.
        per_file = (sum(counts.values()) - listings - sum(dir_puts.values())) / 1000
        all_per_file = sum(counts.values()) / 1000  # directories and listings included
        print(f"rsync of 1,000 x 4 KiB: {counts} -> {per_file:.2f} requests per file "
              f"({all_per_file:.3f} in all); directory marker PUTs: {dict(dir_puts)}")
        assert len(file_puts) == 1000 and not any("/." in k for k in file_puts), counts
        assert "CopyObject" not in counts and "DeleteObject" not in counts, counts
        assert per_file == 1.0 and all_per_file <= 1.1, counts
        for key in ("dst/dir0/file0", "dst/dir3/file33"):
            head = s3.head_object(Bucket=bucket, Key=key)
            st = os.stat(src / key.removeprefix("dst/"))
            assert head["Metadata"]["mode"] == str(st.st_mode), head["Metadata"]
            assert head["Metadata"]["mtime"].startswith(str(int(st.st_mtime))), head
        # Each of the 11 directories: its mkdir marker and the PUT of its times (rsync sets them
        # last); rsync sets a directory's times again when entries landed in it after it had
        # set them, which moves its mtime as on a disk (a third PUT, and timing-dependent a
        # fourth for some directories in some runs).
        assert len(dir_puts) == 11 and max(dir_puts.values()) <= 4, dir_puts
        assert listings <= 3 * 11, counts  # about one listing per directory
        proxy.reset()
        r = sh(f"rsync -a --stats {src}/ {m.mountpoint}/dst/")
        assert "Number of regular files transferred: 0" in r.stdout, r.stdout
        counts = proxy.counts()
        print(f"second rsync: {counts}")
        assert not DATA_OPS & set(counts), counts
    finally:
        m.unmount()


def test_small_cp_is_one_request(proxied_mount: Mount, proxy: S3Proxy, tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(b"small")
    os.listdir(proxied_mount.mountpoint)
    proxy.reset()
    assert sh(f"cp {tmp_path}/s {proxied_mount.mountpoint}/s").returncode == 0
    assert proxy.counts() == {"PutObject": 1}


def test_cp_p_touch_and_tar_keep_times_and_modes(mount: Mount, s3: Any, bucket: str,
                                                 tmp_path: Path) -> None:
    m = mount.mountpoint
    src = tmp_path / "p"
    src.write_bytes(b"p")
    os.chmod(src, 0o640)
    os.utime(src, (1_234_567_890, 1_234_567_890))
    assert sh(f"cp -p {src} {m}/p").returncode == 0
    st = os.stat(m / "p")
    assert (int(st.st_mtime), stat.S_IMODE(st.st_mode)) == (1_234_567_890, 0o640)
    assert meta(s3, bucket, "p")["mtime"].startswith("1234567890")
    assert sh(f"touch -d '2010-05-06 07:08:09 UTC' {m}/p").returncode == 0
    assert int(os.stat(m / "p").st_mtime) == 1273129689
    assert meta(s3, bucket, "p")["mtime"].startswith("1273129689")
    tree = tmp_path / "t"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"f")
    os.chmod(tree / "sub" / "f", 0o751)
    os.utime(tree / "sub" / "f", (1_111_111_111, 1_111_111_111))
    assert sh(f"tar cf {tmp_path}/t.tar -C {tree} sub").returncode == 0
    r = sh(f"tar -xpf {tmp_path}/t.tar -C {m}")
    assert r.returncode == 0, r.stderr
    st = os.stat(m / "sub" / "f")
    assert (int(st.st_mtime), stat.S_IMODE(st.st_mode)) == (1_111_111_111, 0o751)
    stored = meta(s3, bucket, "sub/f")
    assert stored["mtime"].startswith("1111111111") and int(stored["mode"]) & 0o777 == 0o751


def test_objects_without_metadata_get_defaults(mount: Mount, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="plain", Body=b"p")
    st = os.stat(mount.mountpoint / "plain")
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_uid == os.getuid()
    head = s3.head_object(Bucket=bucket, Key="plain")
    assert int(st.st_mtime) == int(head["LastModified"].timestamp())
