"""Directories, listing, reads and deletes through a real mount."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import Mount, S3Server

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


def test_5000_key_directory_lists_completely_and_lookups_cost_no_heads(
        fuse: None, bucket: str, s3: Any, proxy: S3Proxy, tmp_path: Path) -> None:
    """ls -l and find of 5,000 objects (plus a prefix without marker) show every name once
    with its size. Attributes are the stored ones, so the first ls -l HEADs each object once
    (a listing carries no x-amz-meta) and the marker-less prefix once; after that, find and
    stat of listed names within the TTL, and names that do not exist, ask S3 no HEAD (but
    for the one object find sees first, in sub/)."""
    names = {f"f{i:05d}.dat" for i in range(5000)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: s3.put_object(Bucket=bucket, Key=f"big/{n}", Body=n.encode()),
                      sorted(names)))
    s3.put_object(Bucket=bucket, Key="big/sub/inner", Body=b"x")
    # A TTL far above the test's duration, so a slow machine cannot expire the listing.
    m = Mount(bucket, tmp_path / "mnt", proxy.url, tmp_path / "s3mpfs.log",
              extra=["--metadata-ttl", "600"])
    try:
        m.start()
        assert os.listdir(m.mountpoint) == ["big"]  # the root is listed: "big" is known
        proxy.reset()
        big = m.mountpoint / "big"
        r = subprocess.run(["ls", "-l", str(big)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        rows = [line.split() for line in r.stdout.splitlines()[1:]]  # after "total N"
        assert len(rows) == 5001
        assert {row[-1] for row in rows} == names | {"sub"}
        assert all(int(row[4]) == len(row[-1]) for row in rows if row[-1] in names)
        counts = proxy.counts()
        print(f"requests for the first ls -l of 5,000 names: {counts}")
        assert counts.get("HeadObject", 0) == 5001, counts  # 5,000 objects + sub/'s marker
        proxy.reset()
        r = subprocess.run(["find", str(big), "-type", "f"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        found = [os.path.relpath(line, big) for line in r.stdout.splitlines()]
        assert len(found) == 5001 and set(found) == names | {"sub/inner"}
        for name in sorted(names)[::10]:
            assert os.stat(big / name).st_size == len(name)
        for i in range(100):
            assert not os.path.exists(big / f"missing{i}")
        counts = proxy.counts()
        print(f"requests for find, 500 stats and 100 missing names: {counts}")
        assert counts.get("HeadObject", 0) == 1, counts  # sub/inner, when find lists sub
        assert set(counts) == {"ListObjectsV2", "HeadObject"}, counts
        assert counts["ListObjectsV2"] <= 20, counts  # ~6 pages per listing of the directory
    finally:
        m.unmount()


@pytest.mark.parametrize("ttl", ["0", "600"])
def test_metadata_ttl_decides_when_other_clients_changes_show(
        fuse: None, bucket: str, s3: Any, server: S3Server, tmp_path: Path, ttl: str) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"a")
    m = Mount(bucket, tmp_path / "mnt", server.url, tmp_path / "s3mpfs.log",
              extra=["--metadata-ttl", ttl])
    try:
        m.start()
        assert os.stat(m.mountpoint / "f").st_size == 1
        s3.put_object(Bucket=bucket, Key="f", Body=b"abc")  # another client replaces it
        s3.put_object(Bucket=bucket, Key="g", Body=b"new")  # and adds a name
        seen = os.stat(m.mountpoint / "f").st_size
        if ttl == "0":  # asked again at once
            assert seen == 3 and os.path.exists(m.mountpoint / "g")
        else:  # within the TTL the cached attributes stand (the kernel's and s3mpfs's)
            assert seen == 1
    finally:
        m.unmount()


@pytest.mark.parametrize("ttl", ["0", "5"])
def test_internal_directory_is_never_visible(
        fuse: None, bucket: str, s3: Any, server: S3Server, tmp_path: Path, ttl: str) -> None:
    """.s3mpfs/ at the bucket's root holds upload markers: no listing shows it, no lookup
    finds it (also with --metadata-ttl 0, where every lookup asks S3), nothing creates it."""
    s3.put_object(Bucket=bucket, Key=".s3mpfs/uploads/0123", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="visible", Body=b"v")
    m = Mount(bucket, tmp_path / "mnt", server.url, tmp_path / "s3mpfs.log",
              extra=["--metadata-ttl", ttl])
    try:
        m.start()
        internal = m.mountpoint / ".s3mpfs"
        for _ in range(2):  # the second time from whatever the first one cached
            assert os.listdir(m.mountpoint) == ["visible"]
            for path in (internal, internal / "uploads", internal / "uploads" / "0123"):
                with pytest.raises(FileNotFoundError):
                    os.stat(path)
        with pytest.raises(PermissionError):
            os.mkdir(internal)
        with pytest.raises(PermissionError):
            (internal).write_bytes(b"x")
        with pytest.raises(PermissionError):
            os.rename(m.mountpoint / "visible", internal)
        assert keys(s3, bucket) == {".s3mpfs/uploads/0123", "visible"}
    finally:
        m.unmount()


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
