"""Directories, listing, reads and deletes through a real mount."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import Mount

MiB = 1024 * 1024


def keys(s3: Any, bucket: str) -> set[str]:
    out: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out |= {o["Key"] for o in page.get("Contents", [])}
    return out


def test_cp_r_tree(mount: Mount, s3: Any, bucket: str, tmp_path: Path) -> None:
    tree = tmp_path / "photos"
    files = {}
    for d in ("a", "a/b", "c"):
        (tree / d).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            data = os.urandom(1000 * (i + 1))
            (tree / d / f"img{i}.jpg").write_bytes(data)
            files[f"photos/{d}/img{i}.jpg"] = data
    r = subprocess.run(["cp", "-r", str(tree), str(mount.mountpoint) + "/"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stored = keys(s3, bucket)
    assert set(files) <= stored
    assert {"photos/", "photos/a/", "photos/a/b/", "photos/c/"} <= stored  # mkdir markers
    for key, data in files.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert sorted(os.listdir(mount.mountpoint / "photos" / "a")) == \
        ["b", "img0.jpg", "img1.jpg", "img2.jpg"]


def test_listing_paginates_past_1000_keys(mount: Mount, s3: Any, bucket: str) -> None:
    names = {f"k{i:05d}" for i in range(1100)}
    for name in names:
        s3.put_object(Bucket=bucket, Key=f"many/{name}", Body=b"")
    s3.put_object(Bucket=bucket, Key="many/sub/deeper", Body=b"x")
    listed = os.listdir(mount.mountpoint / "many")
    assert len(listed) == len(set(listed)) == 1101
    assert set(listed) == names | {"sub"}
    assert os.path.isdir(mount.mountpoint / "many" / "sub")  # a prefix without marker


def test_read_existing_object(mount: Mount, s3: Any, bucket: str) -> None:
    data = os.urandom(9 * MiB + 17)
    s3.put_object(Bucket=bucket, Key="existing.bin", Body=data)
    path = mount.mountpoint / "existing.bin"
    assert os.stat(path).st_size == len(data)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    with open(path, "rb") as f:
        f.seek(5 * MiB + 3)
        assert f.read(100) == data[5 * MiB + 3:5 * MiB + 103]


def test_mkdir_rmdir_unlink(mount: Mount, s3: Any, bucket: str) -> None:
    d = mount.mountpoint / "dir"
    d.mkdir()
    assert "dir/" in keys(s3, bucket)
    (d / "f").write_bytes(b"data")
    with pytest.raises(OSError) as exc:
        d.rmdir()
    assert exc.value.errno == errno.ENOTEMPTY
    (d / "f").unlink()
    assert "dir/f" not in keys(s3, bucket)
    d.rmdir()
    assert "dir/" not in keys(s3, bucket)
    assert not d.exists()
    with pytest.raises(FileNotFoundError):
        (mount.mountpoint / "nothing-here").stat()


def test_statfs_reports_free_space(mount: Mount) -> None:
    st = os.statvfs(mount.mountpoint)
    assert st.f_bavail * st.f_frsize > 2**40
