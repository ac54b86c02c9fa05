"""Symbolic links, FIFOs, sockets, mknod and hard links through a real mount, with real
programs (rsync -a, cp -a, tar), across a remount, in s3fs-fuse's on-S3 format."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import Mount, S3Server, wait_for

T = 1_500_000_000  # a fixed past mtime, far from "now"


def _run(*argv: str, cwd: Path | None = None) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=300, cwd=cwd)
    assert r.returncode == 0, f"{argv}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def make_tree(src: Path) -> None:
    """Regular files with modes and times, relative, absolute and dangling links, a link to
    a directory and a FIFO, every one with its own mtime (links' own included)."""
    (src / "sub").mkdir(parents=True)
    (src / "file.txt").write_bytes(b"hello\n")
    (src / "sub" / "inner.bin").write_bytes(os.urandom(3000))
    (src / "private").write_bytes(b"key")
    os.chmod(src / "private", 0o600)
    os.symlink("file.txt", src / "rel")
    os.symlink("/etc/hostname", src / "abs")
    os.symlink("no/such/target", src / "dangling")
    os.symlink("sub", src / "dirlink")
    os.symlink("../file.txt", src / "sub" / "up")
    os.mkfifo(src / "fifo", 0o640)
    if os.geteuid() == 0:
        os.chown(src / "file.txt", 1234, 2345)
        os.chown(src / "rel", 1234, 2345, follow_symlinks=False)
    for i, p in enumerate(sorted(src.rglob("*"), reverse=True)):
        os.utime(p, (T + i, T + i), follow_symlinks=False)
    os.utime(src, (T, T))


def differences(src: Path, restored: Path) -> list[str]:
    """What `rsync -ai --dry-run` would change: nothing when the trees are the same."""
    out = _run("rsync", "-ai", "--dry-run", f"{src}/", f"{restored}/")
    return out.splitlines()


def copy_in(tool: str, src: Path, dst: Path) -> None:
    if tool == "rsync":
        _run("rsync", "-a", f"{src}/", f"{dst}/")
    elif tool == "cp":
        _run("cp", "-a", str(src), str(dst))
    else:
        dst.mkdir()
        tar = subprocess.run(["tar", "-C", str(src), "-cf", "-", "."], capture_output=True,
                             check=True)
        r = subprocess.run(["tar", "-C", str(dst), "-xpf", "-"], input=tar.stdout,
                           capture_output=True)
        assert r.returncode == 0, r.stderr.decode()
        os.utime(dst, (T, T))  # tar restored "." before its entries changed it


@contextlib.contextmanager
def mounted(bucket: str, url: str, tmp_path: Path, name: str,
            extra: list[str] | None = None) -> Iterator[Mount]:
    m = Mount(bucket, tmp_path / name, url, tmp_path / f"{name}.log", extra=extra)
    m.start()
    try:
        yield m
    finally:
        code = m.unmount()
        assert code == 0, m.log()
        assert "Traceback" not in m.log(), m.log()


def meta_mode(s3: Any, bucket: str, key: str) -> int:
    return int(s3.head_object(Bucket=bucket, Key=key)["Metadata"]["mode"])


@pytest.mark.parametrize("tool", ["rsync", "cp", "tar"])
def test_a_tree_with_links_and_a_fifo_round_trips(
        fuse: None, bucket: str, s3: Any, server: S3Server, tmp_path: Path, tool: str) -> None:
    src = tmp_path / "src"
    make_tree(src)
    with mounted(bucket, server.url, tmp_path, "mnt") as m:
        copy_in(tool, src, m.mountpoint / "tree")
        assert os.readlink(m.mountpoint / "tree" / "rel") == "file.txt"
        assert sorted(os.listdir(m.mountpoint / "tree" / "dirlink")) == ["inner.bin", "up"]
        assert (m.mountpoint / "tree" / "sub" / "up").read_bytes() == b"hello\n"
        assert differences(src, m.mountpoint / "tree") == []
    # On S3: s3fs-fuse's format.
    assert s3.get_object(Bucket=bucket, Key="tree/abs")["Body"].read() == b"/etc/hostname"
    assert meta_mode(s3, bucket, "tree/abs") == stat.S_IFLNK | 0o777
    assert meta_mode(s3, bucket, "tree/fifo") == stat.S_IFIFO | 0o640
    assert meta_mode(s3, bucket, "tree/private") == stat.S_IFREG | 0o600
    if os.geteuid() == 0:
        assert s3.head_object(Bucket=bucket, Key="tree/rel")["Metadata"]["uid"] == "1234"
    # A fresh mount: the types and attributes are the stored ones.
    restored = tmp_path / "restored"
    with mounted(bucket, server.url, tmp_path, "again") as m:
        tree = m.mountpoint / "tree"
        found = _run("find", str(tree), "-type", "l").split()
        assert sorted(os.path.relpath(p, tree) for p in found) == \
            ["abs", "dangling", "dirlink", "rel", "sub/up"]
        assert _run("find", str(tree), "-type", "p").split() == [str(tree / "fifo")]
        st = os.lstat(tree / "dangling")
        assert stat.S_ISLNK(st.st_mode) and st.st_size == len("no/such/target")
        assert st.st_mtime_ns == os.lstat(src / "dangling").st_mtime_ns
        assert stat.S_IMODE(os.stat(tree / "private").st_mode) == 0o600
        if tool == "rsync":
            _run("rsync", "-a", f"{tree}/", f"{restored}/")
        elif tool == "cp":
            _run("cp", "-a", str(tree), str(restored))
        else:
            copy_in("tar", tree, restored)
    assert differences(src, restored) == []
    assert os.readlink(restored / "abs") == "/etc/hostname"


def test_second_rsync_after_a_remount_transfers_nothing(
        fuse: None, bucket: str, server: S3Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    with mounted(bucket, server.url, tmp_path, "mnt") as m:
        _run("rsync", "-a", f"{src}/", f"{m.mountpoint}/tree/")
    with mounted(bucket, server.url, tmp_path, "again") as m:
        out = _run("rsync", "-ai", f"{src}/", f"{m.mountpoint}/tree/")
        assert out.splitlines() == []


def test_links_another_client_stored_are_links_on_a_fresh_mount(
        fuse: None, bucket: str, s3: Any, server: S3Server, tmp_path: Path) -> None:
    """Objects put in s3fs-fuse's format by boto3: `ls -l` and `find -type l` see links."""
    s3.put_object(Bucket=bucket, Key="d/link", Body=b"../target/x",
                  Metadata={"mode": str(stat.S_IFLNK | 0o777), "mtime": str(T)})
    s3.put_object(Bucket=bucket, Key="d/plain", Body=b"p")
    s3.put_object(Bucket=bucket, Key="d/olddir", Body=b"", ContentType="application/x-directory",
                  Metadata={"mode": str(stat.S_IFDIR | 0o750)})
    with mounted(bucket, server.url, tmp_path, "mnt") as m:
        d = m.mountpoint / "d"
        rows = {line.split()[-1]: line for line in _run("ls", "-l", str(d)).splitlines()[1:]
                if line.strip()}
        assert rows["../target/x"].startswith("lrwxrwxrwx"), rows  # "link -> ../target/x"
        assert rows["olddir"].startswith("drwxr-x---"), rows
        assert rows["plain"].startswith("-rw-r--r--"), rows
        assert _run("find", str(d), "-type", "l").split() == [str(d / "link")]
        assert os.readlink(d / "link") == "../target/x"
        assert os.lstat(d / "link").st_mtime == T


def test_mkfifo_mknod_socket_and_link_calls(mount: Mount, s3: Any, bucket: str) -> None:
    mnt = mount.mountpoint
    os.mkfifo(mnt / "fifo")
    assert stat.S_ISFIFO(os.lstat(mnt / "fifo").st_mode)
    os.mknod(mnt / "reg", 0o600 | stat.S_IFREG)
    assert stat.S_ISREG(os.lstat(mnt / "reg").st_mode)
    assert s3.get_object(Bucket=bucket, Key="reg")["Body"].read() == b""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(mnt / "sock"))
    assert stat.S_ISSOCK(os.lstat(mnt / "sock").st_mode)
    assert meta_mode(s3, bucket, "sock") & 0o170000 == stat.S_IFSOCK
    if os.geteuid() == 0:
        os.mknod(mnt / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        st = os.lstat(mnt / "null")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
        assert s3.head_object(Bucket=bucket, Key="null")["Metadata"]["rdev"] == \
            str(os.makedev(1, 3))
    # A link's own mtime (utimensat AT_SYMLINK_NOFOLLOW) and rename, unlink.
    os.symlink("fifo", mnt / "l")
    os.utime(mnt / "l", ns=(T * 10**9, T * 10**9), follow_symlinks=False)
    assert os.lstat(mnt / "l").st_mtime == T
    assert s3.head_object(Bucket=bucket, Key="l")["Metadata"]["mtime"] == str(T)
    os.rename(mnt / "l", mnt / "m")
    assert os.readlink(mnt / "m") == "fifo" and os.lstat(mnt / "m").st_mtime == T
    os.unlink(mnt / "m")
    assert not os.path.lexists(mnt / "m")
    # Hard links: refused by default.
    (mnt / "f").write_bytes(b"x")
    with pytest.raises(OSError) as exc:
        os.link(mnt / "f", mnt / "g")
    assert exc.value.errno == errno.EOPNOTSUPP
    assert "hard links are not supported" in mount.log()
    # The root accepts touch, chmod, chown (kept in memory on a bucket mount).
    os.utime(mnt, (T, T))
    os.chmod(mnt, 0o750)
    assert stat.S_IMODE(os.stat(mnt).st_mode) == 0o750 and os.stat(mnt).st_mtime == T


def test_hard_links_copy_lets_tar_and_rsync_h_complete(
        fuse: None, bucket: str, s3: Any, server: S3Server, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"shared")
    os.link(src / "a", src / "b")
    archive = tmp_path / "t.tar"
    _run("tar", "-C", str(src), "-cf", str(archive), ".")
    with mounted(bucket, server.url, tmp_path, "mnt", ["--hard-links", "copy"]) as m:
        (m.mountpoint / "t").mkdir()
        _run("tar", "-C", str(m.mountpoint / "t"), "-xf", str(archive))
        _run("rsync", "-aH", f"{src}/", f"{m.mountpoint}/r/")
        for d in ("t", "r"):
            assert (m.mountpoint / d / "b").read_bytes() == b"shared"
            assert (m.mountpoint / d / "a").read_bytes() == b"shared"
    assert s3.get_object(Bucket=bucket, Key="t/b")["Body"].read() == b"shared"


def test_ls_l_of_a_fresh_directory_costs_one_head_per_object(
        fuse: None, bucket: str, s3: Any, proxy: S3Proxy, tmp_path: Path) -> None:
    """The price of stored attributes: a first `ls -l` HEADs each object once; a second one
    (within the TTL) and names that do not exist cost none."""
    for i in range(200):
        s3.put_object(Bucket=bucket, Key=f"d/f{i:03d}", Body=b"x",
                      Metadata={"mode": str(stat.S_IFREG | 0o600)})
    with mounted(bucket, proxy.url, tmp_path, "mnt", ["--metadata-ttl", "600"]) as m:
        os.listdir(m.mountpoint)
        proxy.reset()
        out = _run("ls", "-l", str(m.mountpoint / "d")).splitlines()[1:]
        assert len(out) == 200 and all(line.startswith("-rw-------") for line in out)
        assert proxy.counts().get("HeadObject", 0) == 200, proxy.counts()
        proxy.reset()
        _run("ls", "-l", str(m.mountpoint / "d"))
        for i in range(50):
            assert not os.path.exists(m.mountpoint / "d" / f"missing{i}")
        assert proxy.counts().get("HeadObject", 0) == 0, proxy.counts()


@contextlib.contextmanager
def s3fs_mounted(bucket: str, server: S3Server, tmp_path: Path) -> Iterator[Path]:
    """Debian's s3fs-fuse on the same bucket (options from shared/reference/test-servers.md)."""
    if shutil.which("s3fs") is None:
        pytest.skip("s3fs-fuse is not installed (scripts/setup.sh installs it with apt-get "
                    "where the distribution has it)")
    mnt = tmp_path / "s3fs"
    mnt.mkdir()
    passwd = tmp_path / "s3fs.passwd"
    passwd.write_text(f"{server.access_key}:{server.secret_key}\n")
    passwd.chmod(0o600)
    opts = (f"url={server.url},use_path_request_style,passwd_file={passwd},"
            f"endpoint={server.region},stat_cache_expire=1,use_xattr")
    log = (tmp_path / "s3fs.log").open("wb")
    proc = subprocess.Popen(["s3fs", bucket, str(mnt), "-f", "-o", opts], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"s3fs exited with {proc.returncode}: "
                                   f"{(tmp_path / 's3fs.log').read_text()}")
            return os.path.ismount(mnt)
        wait_for(up, 30, "s3fs mount")
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_s3fs_reads_our_links_and_we_read_its_links(
        fuse: None, bucket: str, s3: Any, server: S3Server, tmp_path: Path) -> None:
    with mounted(bucket, server.url, tmp_path, "mnt") as m:
        os.symlink("dir/target", m.mountpoint / "ours")
        os.utime(m.mountpoint / "ours", (T, T), follow_symlinks=False)
        (m.mountpoint / "f").write_bytes(b"data")
        os.chmod(m.mountpoint / "f", 0o640)
        os.utime(m.mountpoint / "f", (T, T))
        os.setxattr(m.mountpoint / "f", "user.bin", bytes(range(256)))
        os.mkfifo(m.mountpoint / "fifo", 0o600)
    with s3fs_mounted(bucket, server, tmp_path) as theirs:
        assert os.readlink(theirs / "ours") == "dir/target"
        assert os.lstat(theirs / "ours").st_mtime == T
        st = os.stat(theirs / "f")
        assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o640, T)
        assert os.getxattr(theirs / "f", "user.bin") == bytes(range(256))
        assert stat.S_ISFIFO(os.lstat(theirs / "fifo").st_mode)
        os.symlink("/abs/their/target", theirs / "s3fs-link")
        os.mkfifo(theirs / "s3fs-fifo")
        (theirs / "s3fs-file").write_bytes(b"x")
        os.chmod(theirs / "s3fs-file", 0o604)
        os.utime(theirs / "s3fs-file", (T + 7, T + 7))
        os.setxattr(theirs / "s3fs-file", "user.theirs", b"\x00\xffv")
    with mounted(bucket, server.url, tmp_path, "again") as m:
        assert os.readlink(m.mountpoint / "s3fs-link") == "/abs/their/target"
        assert stat.S_ISFIFO(os.lstat(m.mountpoint / "s3fs-fifo").st_mode)
        st = os.stat(m.mountpoint / "s3fs-file")
        assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o604, T + 7)
        assert os.getxattr(m.mountpoint / "s3fs-file", "user.theirs") == b"\x00\xffv"
        listed = {p.name: p for p in m.mountpoint.iterdir()}
        assert listed["s3fs-link"].is_symlink()
