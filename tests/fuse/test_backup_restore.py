"""Issue 15's "done when", as one user does it: a real tree (relative, absolute and dangling
symlinks, a symlink to a directory, a FIFO, an empty file with an owner and an mtime, files
and a directory with binary user.* xattrs, a 0600 key) goes into the mount with rsync -aX,
cp -a or tar --xattrs; after a remount (a fresh daemon knows only what S3 holds) the same
program restores it into a local directory, and `rsync -aXi --dry-run SRC/ RESTORED/` lists
nothing. A second rsync -aX into the mount, on a fresh mount too, transfers nothing.

Default options throughout: the restore sees the stored attributes through listings
(readdirplus) as much as through stat, never defaults."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from s3mpfs import xattrcodec
from tests.fuse.test_links import make_tree as tree_with_links
from tests.helpers.servers import Mount

T = 1_500_000_000  # fixed past times, far from "now"
BINARY = bytes(range(256))
ROOT = os.geteuid() == 0
TAR = "tar --xattrs --xattrs-include='user.*'"

# program: (into the mount, back out of it); {src} and {dst} are directories
PROGRAMS = {
    "rsync": ("rsync -aX {src}/ {dst}/",) * 2,
    "cp": ("cp -a {src}/. {dst}/",) * 2,
    "tar": (f"{TAR} -cf - -C {{src}} . | {TAR} -xpf - -C {{dst}}",) * 2,
}


def sh(cmd: str) -> str:
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def make_tree(src: Path) -> None:
    """test_links' tree (files with modes and owners, relative, absolute and dangling links, a
    link to a directory, a FIFO) plus an empty file with an owner, a deeper directory and
    binary user.* xattrs on files and a directory."""
    tree_with_links(src)
    (src / "sub" / "deeper").mkdir()
    (src / "sub" / "deeper" / "x").write_bytes(b"x")
    (src / "sub" / "blob.bin").write_bytes(os.urandom(70_000))
    (src / "empty").touch()
    os.setxattr(src / "file.txt", "user.bin", BINARY)
    os.setxattr(src / "file.txt", "user.mime_type", b"text/plain")
    os.setxattr(src / "empty", "user.zero", b"\x00")
    os.setxattr(src / "sub" / "blob.bin", "user.checksum", os.urandom(32))
    os.setxattr(src / "sub", "user.dir", b"\xff\xfe")
    if ROOT:
        os.chown(src / "empty", 1234, 2345)
    # Every entry its own mtime (links' own included), deepest first, then the root.
    for i, p in enumerate(sorted(src.rglob("*"), reverse=True)):
        os.utime(p, ns=(T * 10**9 + i, T * 10**9 + i * 1_000_000_007), follow_symlinks=False)
    os.utime(src, (T, T))


def differences(src: Path, other: Path) -> list[str]:
    """What `rsync -aXi --dry-run` would change: types, modes, owners, times, xattrs."""
    return sh(f"rsync -aXi --dry-run {src}/ {other}/").splitlines()


@pytest.fixture(autouse=True)
def _needs_tools() -> None:
    for tool in ("rsync", "tar", "setfattr"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing (scripts/setup.sh installs rsync, tar and attr)")


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_real_tree_goes_in_and_comes_back_exactly(
        program: str, mount: Mount, s3: Any, bucket: str, tmp_path: Path) -> None:
    src, restored = tmp_path / "src", tmp_path / "restored"
    src.mkdir()
    restored.mkdir()
    make_tree(src)
    into, back = PROGRAMS[program]
    dst = mount.mountpoint / "backup"
    dst.mkdir()
    sh(into.format(src=src, dst=dst))
    assert differences(src, dst) == []

    # What S3 holds is s3fs-fuse's format (a few spot checks; test_links has the rest).
    meta = s3.head_object(Bucket=bucket, Key="backup/empty")["Metadata"]
    assert int(meta["mode"]) == stat.S_IFREG | 0o644
    assert xattrcodec.decode(meta["xattr"]) == {"user.zero": b"\x00"}
    if ROOT:
        assert (meta["uid"], meta["gid"]) == ("1234", "2345")
    assert s3.get_object(Bucket=bucket, Key="backup/dangling")["Body"].read() == \
        b"no/such/target"

    mount.remount()
    sh(back.format(src=dst, dst=restored))
    assert differences(src, restored) == []
    assert os.getxattr(restored / "file.txt", "user.bin") == BINARY
    assert os.readlink(restored / "abs") == "/etc/hostname"
    assert stat.S_ISFIFO(os.lstat(restored / "fifo").st_mode)
    if ROOT:
        st = os.lstat(restored / "empty")
        assert (st.st_uid, st.st_gid, st.st_size) == (1234, 2345, 0)

    # A second rsync -aX into the mount (fresh since the remount) transfers nothing.
    assert differences(src, dst) == []
    out = sh(f"rsync -aX --stats {src}/ {dst}/")
    assert "Number of regular files transferred: 0" in out, out
