"""An open file behaves like a file: the window between close() and the release that stores
it (FUSE sends RELEASE after close() has returned) is invisible to the next command."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import Mount


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_touch_then_cat_and_touch_then_mv_never_fail(mount: Mount, s3: Any,
                                                     bucket: str) -> None:
    # 100 times each in a row: before, 4-8 in 20 cats said ENOENT and 3-5 in 20 mvs EIO.
    r = sh("for i in $(seq 100); do touch f$i && cat f$i && flock f$i true || exit 1; done",
           mount.mountpoint)
    assert r.returncode == 0, r.stderr
    r = sh("for i in $(seq 100); do touch g$i && mv g$i h$i || exit 1; "
           ": > x$i.tmp && mv x$i.tmp x$i || exit 1; done", mount.mountpoint)
    assert r.returncode == 0, r.stderr
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}
    assert keys == ({f"f{i}" for i in range(1, 101)} | {f"h{i}" for i in range(1, 101)}
                    | {f"x{i}" for i in range(1, 101)})


def test_attributes_set_right_after_close_reach_s3(mount: Mount, s3: Any, bucket: str) -> None:
    """`touch f; chmod 600 f` (and chown, touch -d) on an empty file just closed: the change
    used to be lost when it arrived while the release's PutObject was on its way."""
    r = sh("for i in $(seq 20); do touch e$i && chmod 600 e$i && touch -d @1500000000 e$i "
           "|| exit 1; done", mount.mountpoint)
    assert r.returncode == 0, r.stderr
    for i in range(1, 21):
        meta = s3.head_object(Bucket=bucket, Key=f"e{i}")["Metadata"]
        assert stat.S_IMODE(int(meta["mode"])) == 0o600, (i, meta)
        assert meta["mtime"] == "1500000000", (i, meta)
    st = os.stat(mount.mountpoint / "e20")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime == 1500000000


def test_a_file_replaced_elsewhere_after_a_listing_reads_the_new_bytes(
        mount: Mount, s3: Any, bucket: str) -> None:
    """ls, then another client replaces the objects, then a program opens them (within the
    TTL: the open uses the listed ETag): the first read's 412 makes s3mpfs read the new
    version instead of failing with ESTALE."""
    s3.put_object(Bucket=bucket, Key="same", Body=b"old contents")
    s3.put_object(Bucket=bucket, Key="shorter", Body=b"old, longer contents")
    assert sorted(os.listdir(mount.mountpoint)) == ["same", "shorter"]
    assert os.stat(mount.mountpoint / "same").st_size == 12  # attributes cached
    s3.put_object(Bucket=bucket, Key="same", Body=b"new contents")  # same size, other bytes
    s3.put_object(Bucket=bucket, Key="shorter", Body=b"new, short")
    assert (mount.mountpoint / "same").read_bytes() == b"new contents"
    assert (mount.mountpoint / "shorter").read_bytes() == b"new, short"


def test_append_to_an_object_stored_elsewhere_after_a_listing_keeps_it(
        mount: Mount, s3: Any, bucket: str) -> None:
    """ls caches the directory; another client then stores k (6 MiB); `echo tail >> k` within
    the TTL used to create a new 5-byte object over it. Now the create confirms with a HEAD."""
    s3.put_object(Bucket=bucket, Key="d/other", Body=b"o")
    assert os.listdir(mount.mountpoint / "d") == ["other"]
    big = os.urandom(6 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="d/k", Body=big)
    s3.put_object(Bucket=bucket, Key="d/t", Body=b"touch me not")
    r = sh("echo tail >> k && touch t", mount.mountpoint / "d")
    assert r.returncode == 0, r.stderr
    assert s3.get_object(Bucket=bucket, Key="d/k")["Body"].read() == big + b"tail\n"
    assert s3.get_object(Bucket=bucket, Key="d/t")["Body"].read() == b"touch me not"


def test_a_file_being_written_reads_back_through_any_descriptor(
        mount: Mount, s3: Any, bucket: str) -> None:
    r = sh("exec 7>f; echo foo >&7; cat f; exec 7>&-", mount.mountpoint)
    assert (r.returncode, r.stdout) == (0, "foo\n"), r.stderr  # was ENOENT
    path = mount.mountpoint / "rw.db"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pread(fd, 4, 2) == b"2345"  # was EINVAL, even before any write
        os.pwrite(fd, b"ab", 4)
        assert os.pread(fd, 100, 0) == b"0123ab6789"
        with open(path, "rb") as other:  # another reader, before the close
            assert other.read() == b"0123ab6789"
    finally:
        os.close(fd)
    assert s3.get_object(Bucket=bucket, Key="rw.db")["Body"].read() == b"0123ab6789"


def test_a_file_unlinked_while_open_keeps_its_bytes_until_closed(
        mount: Mount, s3: Any, bucket: str) -> None:
    path = mount.mountpoint / "scratch"
    with open(path, "w+b", buffering=0) as f:
        f.write(b"first")
        os.unlink(path)
        assert not path.exists()
        f.write(b" second")
        st = os.fstat(f.fileno())
        assert (st.st_size, st.st_nlink) == (12, 0)  # were 0 and 1
        f.seek(0)
        assert f.read() == b"first second"  # was b""
    keys = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert keys == []  # nothing stored, then or at the close
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_o_excl_over_an_object_stored_after_a_listing_fails(
        mount: Mount, s3: Any, bucket: str) -> None:
    assert os.listdir(mount.mountpoint) == []  # the root's listing, cached
    s3.put_object(Bucket=bucket, Key="k", Body=b"theirs")
    try:
        fd = os.open(mount.mountpoint / "k", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        pass  # the kernel looked it up afresh: refused at once
    else:
        os.write(fd, b"mine")
        with pytest.raises(FileExistsError):
            os.close(fd)  # the commit's If-None-Match: * refuses it
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"theirs"
