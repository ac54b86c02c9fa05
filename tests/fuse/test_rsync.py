"""rsync through a real mount: one request per file (its temporaries are held and stored once
under their final names, holds.py), its other modes, and the failures it must see."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from s3mpfs.status import find_mount
from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import Mount, S3Server, wait_for


def sh(cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600)


def keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    for i in range(5):
        (root / f"f{i}").write_bytes(os.urandom(1000 + i))
        (root / "sub" / f"g{i}").write_bytes(os.urandom(200 + i))
    os.chmod(root / "f1", 0o600)
    os.utime(root / "sub" / "g2", (1_100_000_000, 1_100_000_000))


def changes(src: Path, dst: Path, *extra: str) -> list[str]:
    r = sh(f"rsync -ai --dry-run {' '.join(extra)} {src}/ {dst}/")
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line and not line.startswith(".d")]


def test_rsync_modes_keep_working(mount: Mount, s3: Any, bucket: str, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", mount.mountpoint / "dst"
    tree(src)
    assert sh(f"rsync -a {src}/ {dst}/").returncode == 0
    assert changes(src, dst) == []
    assert not any(k.rpartition("/")[2].startswith(".") for k in keys(s3, bucket))
    (src / "f0").write_bytes(b"changed in place")
    r = sh(f"rsync -a --inplace {src}/ {dst}/")
    assert r.returncode == 0, r.stderr
    (src / "f3").write_bytes(b"changed, whole")
    r = sh(f"rsync -a --whole-file {src}/ {dst}/")
    assert r.returncode == 0, r.stderr
    (src / "f4").unlink()
    r = sh(f"rsync -a --delete {src}/ {dst}/")
    assert r.returncode == 0, r.stderr
    assert changes(src, dst, "--checksum", "--delete") == []
    assert "dst/f4" not in keys(s3, bucket)
    body = s3.get_object(Bucket=bucket, Key="dst/f0")["Body"].read()
    assert body == b"changed in place"
    r = sh(f"rsync -a --stats {src}/ {dst}/")
    assert "Number of regular files transferred: 0" in r.stdout, r.stdout


def test_a_failed_store_fails_rsync_and_leaves_no_object(
        proxied_mount: Mount, proxy: S3Proxy, s3: Any, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "precious.dat").write_bytes(os.urandom(3000))
    (proxied_mount.mountpoint / "dst").mkdir()
    proxy.add_fault("PutObject", "status", status=500, times=-1)
    r = sh(f"rsync -a {src}/ {proxied_mount.mountpoint}/dst/")
    assert r.returncode != 0
    assert "precious.dat" in r.stderr and "Input/output error" in r.stderr, r.stderr
    assert keys(s3, bucket) == {"dst/"}  # neither the final nor the temporary name
    assert "precious.dat" in proxied_mount.log()  # the ERROR line names it


def test_a_daemon_killed_between_close_and_rename_stores_nothing_and_says_so(
        fuse: None, bucket: str, s3: Any, server: S3Server, tmp_path: Path) -> None:
    m = Mount(bucket, tmp_path / "mnt", server.url, tmp_path / "s3mpfs.log")
    m.start()
    try:
        temp = m.mountpoint / ".report.pdf.Qw3rTy"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"%PDF" + os.urandom(2000))
        os.close(fd)  # held: nothing stored yet
        assert m.proc is not None
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=30)
        with pytest.raises(OSError) as exc:
            os.rename(temp, m.mountpoint / "report.pdf")
        assert exc.value.errno == errno.ENOTCONN  # rsync reports it and exits non-zero
        assert keys(s3, bucket) == set()
    finally:
        if find_mount(str(m.mountpoint)) is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(m.mountpoint)], check=False)
        wait_for(lambda: find_mount(str(m.mountpoint)) is None, 30, "the dead mount gone")
