"""Operating a real mount: systemd's notify protocol, busy/dead/non-empty mountpoints, the
mount.fuse3 helper path (mount -t fuse.s3mpfs, fstab), permissions for other users,
read-only mounts, progress and status, and what the logs contain (and never contain).

Every process started here is stopped by PID and every mount is unmounted with fusermount3
in teardown, also when a test fails.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3mpfs import xattrs
from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import CREDENTIALS, MotoServer, Mount, wait_for

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would make s3mpfs think it runs under
    systemd, plus the test credentials."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_FDS")}
    return {**env, **CREDENTIALS, **extra}


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3mpfs", *args], capture_output=True,
                          text=True, env=env or clean_env(), cwd=cwd, timeout=timeout)


def fusermount_u(path: Path, lazy: bool = False) -> None:
    if os.path.ismount(path) or lazy:
        subprocess.run(["fusermount3", "-u", *(["-z"] if lazy else []), str(path)],
                       capture_output=True, check=False)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def daemon_pids(log_text: str) -> list[int]:
    return [int(p) for p in re.findall(r"mounted .* \(pid (\d+)\)", log_text)]


def stop_daemons(log_path: Path, mountpoints: list[Path]) -> None:
    """Teardown for daemonised mounts: unmount, then make sure their processes are gone."""
    for mnt in mountpoints:
        fusermount_u(mnt)
    text = log_path.read_text() if log_path.exists() else ""
    for pid in daemon_pids(text):
        try:
            wait_for(lambda p=pid: not pid_alive(p), 30, f"daemon {pid} to exit")  # type: ignore[misc]
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for mnt in mountpoints:
        if os.path.ismount(mnt):
            fusermount_u(mnt, lazy=True)


class Foreground:
    """`s3mpfs BUCKET MNT ...` as a child process with our own environment; stderr goes to a
    file (a pipe nobody reads could fill up and block the daemon)."""

    def __init__(self, argv: list[str], env: dict[str, str], mountpoint: Path,
                 stderr_path: Path) -> None:
        self.argv, self.env, self.mountpoint = argv, env, mountpoint
        self.stderr_path = stderr_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "s3mpfs", *self.argv],
                                         env=self.env, stdout=subprocess.DEVNULL, stderr=err)

    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def wait_mounted(self) -> None:
        def mounted() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3mpfs exited with {self.proc.returncode}:\n"
                                   f"{self.stderr()}")
            return os.path.ismount(self.mountpoint)

        wait_for(mounted, 30, f"mount at {self.mountpoint}")

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        fusermount_u(self.mountpoint)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if os.path.ismount(self.mountpoint):
            fusermount_u(self.mountpoint, lazy=True)
        return proc.returncode


@contextlib.contextmanager
def foreground(*args: Any, **kwargs: Any) -> Iterator[Foreground]:
    f = Foreground(*args, **kwargs)
    try:
        f.start()
        yield f
    finally:
        f.stop()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is 0700 under root's dir), with
    a short path (AF_UNIX socket addresses are limited to 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="s3mpfs-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for child in d.iterdir():
            if os.path.ismount(child):
                fusermount_u(child, lazy=True)
        shutil.rmtree(d, ignore_errors=True)


def as_user(user: str, group: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups",
                           *cmd], capture_output=True, text=True, timeout=60)


@pytest.fixture
def other_users() -> None:
    if os.geteuid() != 0:
        pytest.skip("switching to other users needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")


# -- systemd notify protocol -------------------------------------------------------------------


def _recv(sock: socket.socket, what: str, timeout: float = 30) -> str:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode()
    except TimeoutError:
        raise AssertionError(f"no {what} datagram within {timeout} s") from None


def test_notify_ready_once_mounted_stopping_on_fusermount_and_journal_logs(
        fuse: None, moto_server: MotoServer, bucket: str, s3: Any, tmp_path: Path) -> None:
    """Type=notify with the abstract socket form: READY=1 arrives when the mountpoint is
    already mounted, STOPPING=1 when fusermount3 -u unmounts it (no signal involved). With
    NOTIFY_SOCKET set, s3mpfs stays in the foreground without -f and logs for journald."""
    name = f"s3mpfs-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    mnt = tmp_path / "mnt"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        env = clean_env(NOTIFY_SOCKET="@" + name)
        with foreground([bucket, str(mnt), "--endpoint-url", moto_server.url], env, mnt,
                        tmp_path / "stderr") as fg:
            ready = _recv(sock, "READY=1")
            mounted_at_ready = os.path.ismount(mnt)
            assert fg.proc is not None and fg.proc.poll() is None, fg.stderr()
            assert ready.splitlines()[0] == "READY=1", ready
            assert f"STATUS=Mounted s3://{bucket}/ on {mnt}" in ready.splitlines()
            assert mounted_at_ready
            (mnt / "hello.txt").write_bytes(b"hi")
            assert s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hi"

            r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            stopping = _recv(sock, "STOPPING=1")
            assert stopping.splitlines()[0] == "STOPPING=1", stopping
            assert fg.proc.wait(30) == 0, fg.stderr()
            err = fg.stderr()
    lines = err.splitlines()
    assert lines, "nothing logged to stderr"
    assert all(re.match(r"<[0-7]>", line) for line in lines), err
    assert any(line.startswith("<6>s3mpfs.mount: ") and "mounted" in line for line in lines)
    assert any(line.startswith("<6>s3mpfs.upload: stored hello.txt") for line in lines)
    assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", err)  # the journal adds timestamps


def test_notify_path_socket_and_sigterm(fuse: None, moto_server: MotoServer, bucket: str,
                                        shared_dir: Path) -> None:
    """The path form of NOTIFY_SOCKET; SIGTERM unmounts; exactly READY=1 then STOPPING=1."""
    address = str(shared_dir / "notify")
    mnt = shared_dir / "mnt"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        env = clean_env(NOTIFY_SOCKET=address)
        with foreground([bucket, str(mnt), "--endpoint-url", moto_server.url, "--systemd"],
                        env, mnt, shared_dir / "stderr") as fg:
            ready = _recv(sock, "READY=1")
            assert os.path.ismount(mnt)
            assert fg.proc is not None
            fg.proc.send_signal(signal.SIGTERM)
            assert fg.proc.wait(30) == 0, fg.stderr()
            assert not os.path.ismount(mnt)
            stopping = _recv(sock, "STOPPING=1", timeout=5)
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(4096)  # nothing else was sent
    assert ready.startswith("READY=1\n")
    assert stopping.startswith("STOPPING=1\n")
    assert "<6>s3mpfs.mount: SIGTERM received: unmounting" in fg.stderr()


# -- start-up failures reach the terminal --------------------------------------------------------


def test_busy_mountpoint_is_refused(mount: Mount, moto_server: MotoServer, bucket: str,
                                    s3: Any) -> None:
    r = run_cli(bucket, str(mount.mountpoint), "--endpoint-url", moto_server.url)
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert f"{mount.mountpoint} is already a mount point (fuse.s3mpfs s3mpfs:{bucket})" in line
    (mount.mountpoint / "still.txt").write_bytes(b"works")  # the first mount is untouched
    assert s3.get_object(Bucket=bucket, Key="still.txt")["Body"].read() == b"works"


def test_dead_mount_is_explained(fuse: None, moto_server: MotoServer, bucket: str,
                                 tmp_path: Path) -> None:
    m = Mount(bucket, tmp_path / "mnt", moto_server.url, tmp_path / "s3mpfs.log")
    m.start()
    try:
        assert m.proc is not None
        m.proc.kill()  # the daemon dies; the kernel mount stays, disconnected
        m.proc.wait(30)
        r = run_cli(bucket, str(m.mountpoint), "--endpoint-url", moto_server.url)
        assert r.returncode == 1
        [line] = r.stderr.strip().splitlines()
        assert "dead FUSE mount" in line
        assert f"fusermount3 -u -z {m.mountpoint}" in line
    finally:
        fusermount_u(m.mountpoint, lazy=True)
        m.unmount()


def test_non_empty_mountpoint_is_mounted_over_with_a_warning(
        fuse: None, moto_server: MotoServer, bucket: str, s3: Any, tmp_path: Path) -> None:
    """libfuse3 mounts over non-empty directories; s3mpfs does too and says so, on the
    terminal although the log goes to a file."""
    mnt, log = tmp_path / "mnt", tmp_path / "daemon.log"
    mnt.mkdir()
    (mnt / "local.txt").write_bytes(b"underneath")
    s3.put_object(Bucket=bucket, Key="remote.txt", Body=b"r")
    try:
        r = run_cli(bucket, str(mnt), "--endpoint-url", moto_server.url, "--log-file", str(log))
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mnt)
        assert "is not empty: its contents are hidden" in r.stderr
        assert "is not empty: its contents are hidden" in log.read_text()
        assert sorted(os.listdir(mnt)) == ["remote.txt"]
    finally:
        stop_daemons(log, [mnt])
    assert not os.path.ismount(mnt)
    assert (mnt / "local.txt").read_bytes() == b"underneath"


def test_missing_credentials_fail_before_daemonising(moto_server: MotoServer, bucket: str,
                                                     tmp_path: Path) -> None:
    env = clean_env(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true",
                    AWS_CONFIG_FILE=str(tmp_path / "none"),
                    AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(k, None)
    r = run_cli(bucket, str(tmp_path), "--endpoint-url", moto_server.url, env=env)
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert bucket in line and "no AWS credentials" in line
    assert not os.path.ismount(tmp_path)


def test_unopenable_log_file_fails_before_mounting(moto_server: MotoServer, bucket: str,
                                                   tmp_path: Path) -> None:
    r = run_cli(bucket, str(tmp_path), "--endpoint-url", moto_server.url,
                "--log-file", str(tmp_path / "no" / "such" / "dir.log"))
    assert r.returncode == 1
    assert "cannot open log file" in r.stderr
    assert not os.path.ismount(tmp_path)


def test_status_word_with_a_plain_directory_mounts_bucket_status(
        moto_server: MotoServer, tmp_path: Path) -> None:
    """"status" is a valid bucket name: with a directory that is no s3mpfs mount, the command
    is a mount of bucket "status" (which does not exist here), and the error says how to get
    the subcommand."""
    r = run_cli("status", str(tmp_path), "--endpoint-url", moto_server.url)
    assert r.returncode == 1
    assert "cannot use bucket 'status'" in r.stderr
    assert "s3mpfs --status MOUNTPOINT" in r.stderr


def test_relative_paths_in_daemon_mode(fuse: None, moto_server: MotoServer, bucket: str,
                                       s3: Any, tmp_path: Path) -> None:
    """The daemon changes to /; a relative mountpoint and log file must still work, and SIGTERM
    must unmount the right directory."""
    (tmp_path / "mnt").mkdir()
    log = tmp_path / "rel.log"
    try:
        r = run_cli(bucket, "mnt", "--endpoint-url", moto_server.url, "--log-file", "rel.log",
                    cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(tmp_path / "mnt")
        (tmp_path / "mnt" / "x").write_bytes(b"x")
        wait_for(lambda: "stored x" in log.read_text(), 30, "the upload logged in rel.log")
        [pid] = daemon_pids(log.read_text())
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 30, "daemon exit after SIGTERM")
        assert not os.path.ismount(tmp_path / "mnt")
        assert f"unmounted {tmp_path / 'mnt'}" in log.read_text()
    finally:
        stop_daemons(log, [tmp_path / "mnt"])


# -- the mount helper path: mount.fuse3, mount -t fuse.s3mpfs, fstab ---------------------------


def _wrapper(bin_dir: Path, argv_file: Path) -> Path:
    """An `s3mpfs` on PATH that records its arguments and runs this checkout's s3mpfs."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / "s3mpfs"
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {argv_file}\n'
                    f'exec {sys.executable} -m s3mpfs "$@"\n')
    path.chmod(0o755)
    return path


def test_mount_fuse3_runs_the_helper_as_fstab_would(
        fuse: None, moto_server: MotoServer, bucket: str, s3: Any, tmp_path: Path) -> None:
    """mount.fuse3 (what mount -t fuse.s3mpfs runs) finds `s3mpfs` on PATH and calls it as
    `s3mpfs SOURCE MNT -o OPTS`, minus the words it handles and with dev,suid appended."""
    if shutil.which("mount.fuse3") is None:
        pytest.skip("mount.fuse3 is not installed")
    mnt, log, argv_file = tmp_path / "mnt", tmp_path / "daemon.log", tmp_path / "argv"
    mnt.mkdir()
    _wrapper(tmp_path / "bin", argv_file)
    env = clean_env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    opts = (f"rw,_netdev,nofail,allow_other,part_size=16M,endpoint_url={moto_server.url},"
            f"log_file={log}")
    try:
        r = subprocess.run(["mount.fuse3", bucket, str(mnt), "-t", "fuse.s3mpfs", "-o", opts],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mnt)  # live when mount.fuse3 returned
        assert argv_file.read_text().splitlines() == [
            bucket, str(mnt), "-o",
            f"rw,allow_other,part_size=16M,endpoint_url={moto_server.url},log_file={log},"
            "dev,suid"]
        options = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", str(mnt)],
                                 capture_output=True, text=True).stdout
        assert "allow_other" in options and "default_permissions" in options
        (mnt / "via-helper.bin").write_bytes(b"z" * (17 * MiB))
        head = s3.head_object(Bucket=bucket, Key="via-helper.bin")
        assert head["ETag"].strip('"').endswith("-2")  # 16 MiB parts from -o part_size=16M
    finally:
        stop_daemons(log, [mnt])
    assert not os.path.ismount(mnt)


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                       capture_output=True)
    return r.returncode == 0


def test_mount_t_fuse_s3mpfs_and_fstab_line(fuse: None, moto_server: MotoServer, bucket: str,
                                            s3: Any, tmp_path: Path) -> None:
    """The real thing: mount(8) -> mount.fuse3 -> s3mpfs, from the command line and from an
    fstab line (util-linux mount -T reads an alternative fstab). mount(8) runs helpers
    without PATH, so /bin/sh finds `s3mpfs` in its default path: in a private mount namespace
    a directory holding the wrapper is bind-mounted over /usr/local/sbin (nothing changes
    outside the namespace; the mounts inside vanish with it)."""
    if not _can_unshare():
        pytest.skip("needs root and unshare --mount")
    mnt, mnt2 = tmp_path / "mnt", tmp_path / "mnt2"
    mnt.mkdir()
    mnt2.mkdir()
    log, argv_file = tmp_path / "daemon.log", tmp_path / "argv"
    bin_dir = tmp_path / "bin"
    _wrapper(bin_dir, argv_file)
    base = f"endpoint_url={moto_server.url},log_file={log}"
    # contrib/systemd/fstab.example's line, on the test bucket, plus endpoint and log file
    example = next(line for line in (ROOT / "contrib/systemd/fstab.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
    source, where, fstype, options, dump, passno = example.split()
    assert (source, where, fstype) == ("mybucket:backups", "/mnt/backups", "fuse.s3mpfs")
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{bucket}:fromfstab {mnt2} {fstype} {options},{base} {dump} {passno}\n")
    script = f"""
set -eu
mount --bind {bin_dir} /usr/local/sbin
mount -t fuse.s3mpfs {bucket} {mnt} \\
    -o _netdev,allow_other,x-systemd.requires=network-online.target,{base}
findmnt -n -o FSTYPE,SOURCE {mnt}
echo one > {mnt}/via-mount.txt
umount {mnt}
mount -T {fstab} {mnt2}
findmnt -n -o FSTYPE,SOURCE {mnt2}
echo two > {mnt2}/via-fstab.txt
umount {mnt2}
"""
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                           env=clean_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr + (log.read_text() if log.exists() else "")
        assert r.stdout.splitlines() == [f"fuse.s3mpfs s3mpfs:{bucket}"] * 2
        assert s3.get_object(Bucket=bucket, Key="via-mount.txt")["Body"].read() == b"one\n"
        assert s3.get_object(Bucket=bucket,
                             Key="fromfstab/via-fstab.txt")["Body"].read() == b"two\n"
        calls = argv_file.read_text().splitlines()
        assert calls[:3] == [bucket, str(mnt), "-o"]
        assert calls[3].startswith("rw,allow_other,endpoint_url=") and calls[3].endswith(
            ",dev,suid")
        pids = daemon_pids(log.read_text())
        assert len(pids) == 2
        for pid in pids:  # umount ended both daemons
            wait_for(lambda p=pid: not pid_alive(p), 30, f"daemon {pid} to exit")  # type: ignore[misc]
    finally:
        text = log.read_text() if log.exists() else ""
        for pid in daemon_pids(text):
            with contextlib.suppress(ProcessLookupError):
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


def test_drop_privileges_requires_default_permissions(
        fuse: None, moto_server: MotoServer, bucket: str, s3: Any, tmp_path: Path) -> None:
    """mount.fuse3 -o drop_privileges mounts by itself and passes /dev/fd/N: the kernel
    options are the fstab ones, so s3mpfs insists that they include default_permissions."""
    if not _can_unshare():
        pytest.skip("needs root and unshare --mount")
    mnt, log = tmp_path / "mnt", tmp_path / "daemon.log"
    mnt.mkdir()
    bin_dir = tmp_path / "bin"
    _wrapper(bin_dir, tmp_path / "argv")
    base = f"endpoint_url={moto_server.url},log_file={log}"
    script = f"""
set -u
mount --bind {bin_dir} /usr/local/sbin
if mount -t fuse.s3mpfs {bucket} {mnt} -o drop_privileges,allow_other,{base}; then
    echo "mounted without default_permissions"; exit 1
fi
umount -l {mnt} 2>/dev/null
set -e
mount -t fuse.s3mpfs {bucket} {mnt} -o drop_privileges,default_permissions,{base}
findmnt -n -o OPTIONS {mnt}
echo dropped > {mnt}/dropped.txt
umount {mnt}
"""
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                           env=clean_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "add default_permissions to the mount options" in r.stderr
        assert "default_permissions" in r.stdout
        assert s3.get_object(Bucket=bucket, Key="dropped.txt")["Body"].read() == b"dropped\n"
        for pid in daemon_pids(log.read_text()):
            wait_for(lambda p=pid: not pid_alive(p), 30, f"daemon {pid} to exit")  # type: ignore[misc]
    finally:
        text = log.read_text() if log.exists() else ""
        for pid in daemon_pids(text):
            with contextlib.suppress(ProcessLookupError):
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


# -- permissions -------------------------------------------------------------------------------


def test_other_users_are_denied_without_allow_other(
        fuse: None, other_users: None, moto_server: MotoServer, bucket: str, s3: Any,
        shared_dir: Path) -> None:
    s3.put_object(Bucket=bucket, Key="f.txt", Body=b"data")
    with foreground([bucket, str(shared_dir / "mnt"), "--endpoint-url", moto_server.url, "-f"],
                    clean_env(), shared_dir / "mnt", shared_dir / "stderr") as fg:
        fg.wait_mounted()
        assert os.listdir(shared_dir / "mnt") == ["f.txt"]  # the mounting user can
        r = as_user("nobody", "nogroup", "ls", str(shared_dir / "mnt"))
        assert r.returncode != 0
        assert "Permission denied" in r.stderr
        r = as_user("nobody", "nogroup", "cat", str(shared_dir / "mnt" / "f.txt"))
        assert r.returncode != 0 and "Permission denied" in r.stderr


def test_allow_other_lets_others_read_but_the_kernel_enforces_modes(
        fuse: None, other_users: None, moto_server: MotoServer, bucket: str, s3: Any,
        shared_dir: Path) -> None:
    s3.put_object(Bucket=bucket, Key="pub.txt", Body=b"public")  # no metadata: 0644 root
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"secret",
                  Metadata={"mode": str(stat.S_IFREG | 0o600), "uid": "0", "gid": "0"})
    mnt = shared_dir / "mnt"
    with foreground([bucket, str(mnt), "--endpoint-url", moto_server.url, "-f",
                     "-o", "allow_other"], clean_env(), mnt, shared_dir / "stderr") as fg:
        fg.wait_mounted()
        assert stat.S_IMODE(os.stat(mnt / "pub.txt").st_mode) == 0o644
        r = as_user("nobody", "nogroup", "cat", str(mnt / "pub.txt"))
        assert (r.returncode, r.stdout) == (0, "public"), r.stderr
        r = as_user("nobody", "nogroup", "sh", "-c", f"echo x > {mnt}/pub.txt")
        assert r.returncode != 0 and "Permission denied" in r.stderr
        r = as_user("nobody", "nogroup", "touch", str(mnt / "new.txt"))
        assert r.returncode != 0 and "Permission denied" in r.stderr
        r = as_user("nobody", "nogroup", "cat", str(mnt / "secret.txt"))
        assert r.returncode != 0 and "Permission denied" in r.stderr
    assert s3.get_object(Bucket=bucket, Key="pub.txt")["Body"].read() == b"public"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="new.txt")


def test_default_owner_and_modes_for_objects_without_metadata(
        fuse: None, other_users: None, moto_server: MotoServer, bucket: str, s3: Any,
        shared_dir: Path) -> None:
    """-o uid=,gid=,umask= (and --file-mode/--dir-mode) decide what objects without
    x-amz-meta-* look like, and the kernel enforces it."""
    s3.put_object(Bucket=bucket, Key="d/f.txt", Body=b"mine")
    mnt = shared_dir / "mnt"
    with foreground([bucket, str(mnt), "--endpoint-url", moto_server.url, "-f",
                     "-o", "allow_other,uid=65534,gid=65534,umask=077"], clean_env(), mnt,
                    shared_dir / "stderr") as fg:
        fg.wait_mounted()
        st = os.stat(mnt / "d" / "f.txt")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 65534, 65534)
        d = os.stat(mnt / "d")
        assert (stat.S_IMODE(d.st_mode), d.st_uid) == (0o700, 65534)
        r = as_user("nobody", "nogroup", "cat", str(mnt / "d" / "f.txt"))
        assert (r.returncode, r.stdout) == (0, "mine"), r.stderr  # the owner may
        r = as_user("daemon", "daemon", "cat", str(mnt / "d" / "f.txt"))
        assert r.returncode != 0 and "Permission denied" in r.stderr  # others may not
    with foreground([bucket, str(mnt), "--endpoint-url", moto_server.url, "-f",
                     "--file-mode", "0640", "--dir-mode", "0751"], clean_env(), mnt,
                    shared_dir / "stderr") as fg:
        fg.wait_mounted()
        assert stat.S_IMODE(os.stat(mnt / "d" / "f.txt").st_mode) == 0o640
        assert stat.S_IMODE(os.stat(mnt / "d").st_mode) == 0o751


def test_read_only_refuses_every_write_with_erofs(fuse: None, moto_server: MotoServer,
                                                  bucket: str, s3: Any, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="f.txt", Body=b"keep")
    s3.put_object(Bucket=bucket, Key="d/", Body=b"")
    src = tmp_path / "src.txt"
    src.write_bytes(b"new")
    for flag in (["--read-only"], ["-o", "ro"]):
        m = Mount(bucket, tmp_path / "mnt", moto_server.url, tmp_path / "s3mpfs.log",
                  extra=flag)
        m.start()
        try:
            mnt = m.mountpoint
            assert (mnt / "f.txt").read_bytes() == b"keep"  # reading works
            for cmd in (["cp", str(src), f"{mnt}/new.txt"], ["cp", str(src), f"{mnt}/f.txt"],
                        ["mkdir", f"{mnt}/newdir"], ["rm", f"{mnt}/f.txt"],
                        ["rmdir", f"{mnt}/d"], ["touch", f"{mnt}/f.txt"],
                        ["touch", f"{mnt}/new2.txt"], ["chmod", "600", f"{mnt}/f.txt"],
                        ["sh", "-c", f"echo x >> {mnt}/f.txt"]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                assert r.returncode != 0, cmd
                assert "Read-only file system" in r.stderr, (cmd, r.stderr)
            with pytest.raises(OSError) as exc:
                os.open(mnt / "f.txt", os.O_WRONLY | os.O_TRUNC)
            assert exc.value.errno == errno.EROFS
        finally:
            code = m.unmount()
        assert code == 0, m.log()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["d/", "f.txt"]
    assert s3.get_object(Bucket=bucket, Key="f.txt")["Body"].read() == b"keep"


# -- progress and status -----------------------------------------------------------------------

WRITER = """
import sys
f = open(sys.argv[1], "wb", buffering=0)
data = memoryview(bytes(int(sys.argv[2])))
while data:
    data = data[f.write(data):]
print("written", flush=True)
sys.stdin.readline()
f.close()
print("closed", flush=True)
"""


def test_progress_xattr_and_status_command(mount: Mount, bucket: str, s3: Any) -> None:
    """A writer in its own process keeps a file open (any fork of ours would close a copy of
    its descriptor, and FUSE's flush would commit); getfattr and `s3mpfs status` watch it."""
    path = mount.mountpoint / "sub" / "backup.tar"
    (mount.mountpoint / "sub").mkdir()
    size = 2 * 8 * MiB + 1234
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(size)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline() == "written\n"

        def progress() -> dict[str, str]:
            return xattrs.parse_progress(os.getxattr(path, "user.s3mpfs.progress"))

        wait_for(lambda: progress()["parts_done"] == "2", 30, "both parts uploaded")
        assert progress() == {"state": "writing", "written": str(size),
                              "uploaded": str(16 * MiB), "parts_done": "2",
                              "parts_in_flight": "0", "buffered": "1234"}
        assert "user.s3mpfs.progress" not in os.listxattr(path)  # read by name only
        if shutil.which("getfattr"):
            r = subprocess.run(["getfattr", "-n", "user.s3mpfs.progress", "--only-values",
                                str(path)], capture_output=True, text=True)
            assert r.stdout.startswith(f"state=writing written={size} "), r.stderr

        r = run_cli("status", str(mount.mountpoint))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith(f"{mount.mountpoint}: s3mpfs:{bucket} (s3mpfs ")
        assert "1 upload open" in lines[0]
        assert re.search(r"16\.0 MiB\s+16\.0 MiB\s+2\s+0\s+writing\s+sub/backup\.tar$",
                         lines[2]), r.stdout
        r = run_cli("--status", str(mount.mountpoint), "--json")
        data = json.loads(r.stdout)
        assert [(u["path"], u["written"]) for u in data["uploads"]] == [("sub/backup.tar", size)]
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="sub/backup.tar")

        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "closed\n"
        assert writer.wait(30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert s3.head_object(Bucket=bucket, Key="sub/backup.tar")["ContentLength"] == size
    with pytest.raises(OSError) as exc:
        os.getxattr(path, "user.s3mpfs.progress")
    assert exc.value.errno == errno.ENODATA
    r = run_cli("status", str(mount.mountpoint))
    assert "0 uploads open" in r.stdout and len(r.stdout.splitlines()) == 1


# -- logs ----------------------------------------------------------------------------------------


def test_debug_log_shows_requests_but_never_credentials(
        fuse: None, moto_server: MotoServer, bucket: str, tmp_path: Path) -> None:
    secret = "S3mpfsTestSecret" + uuid.uuid4().hex
    token: str | None = "S3mpfsTestToken" + uuid.uuid4().hex
    key_id = "AKIAS3MPFS" + uuid.uuid4().hex[:10].upper()
    if not moto_server.has("any_credentials"):  # a real server checks them: the run's own
        key_id, secret = CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        token = CREDENTIALS.get("AWS_SESSION_TOKEN")
    env = clean_env(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret,
                    **({"AWS_SESSION_TOKEN": token} if token else {}))
    mnt, log = tmp_path / "mnt", tmp_path / "debug.log"
    with foreground([bucket, str(mnt), "--endpoint-url", moto_server.url, "-f", "--debug",
                     "--log-file", str(log)], env, mnt, tmp_path / "stderr") as fg:
        fg.wait_mounted()
        (mnt / "small.txt").write_bytes(b"s")
        (mnt / "big.bin").write_bytes(os.urandom(9 * MiB))
        (mnt / "d").mkdir()
        assert sorted(os.listdir(mnt)) == ["big.bin", "d", "small.txt"]
        assert (mnt / "big.bin").stat().st_size == 9 * MiB
        with open(mnt / "big.bin", "rb") as f:
            f.read(MiB)
        (mnt / "small.txt").unlink()
    text = log.read_text() + fg.stderr()
    # the debug log is really on: per-request lines with operation, key, status and duration
    assert re.search(r"DEBUG s3mpfs\.s3: S3 PutObject small\.txt: HTTP 200 in \d+\.\d{3} s", text)
    assert re.search(r"S3 UploadPart big\.bin part 1: HTTP 200 in", text)
    assert re.search(r"S3 GetObject big\.bin: HTTP 206 in", text)
    assert "S3 DeleteObject small.txt: HTTP 204" in text
    for forbidden in (secret, token, key_id, "Signature=", "Authorization", "X-Amz-",
                      "Credential="):
        assert forbidden is None or forbidden not in text, forbidden


def test_retries_and_failures_are_logged(proxied_mount: Mount, proxy: S3Proxy) -> None:
    mnt = proxied_mount.mountpoint
    proxy.add_fault("PutObject", "status", status=503, times=1)
    (mnt / "retried.txt").write_bytes(b"ok")
    proxy.reset()
    proxy.add_fault("PutObject", "status", status=500, times=-1)
    with pytest.raises(OSError) as exc, open(mnt / "failed.txt", "wb") as f:
        f.write(b"lost")
    assert exc.value.errno == errno.EIO
    proxy.reset()
    log = proxied_mount.log()
    assert re.search(r" WARNING s3mpfs\.s3: S3 PutObject retried\.txt: retrying \(attempt 2 of "
                     r"5\) after HTTP 503 SlowDown", log), log
    assert re.search(r" INFO s3mpfs\.upload: stored retried\.txt: 2 bytes, single PUT, "
                     r"[\d.]+ s .*MB/s", log), log
    assert len(re.findall(r"S3 PutObject failed\.txt: retrying", log)) == 4
    assert re.search(r" ERROR .*failed\.txt.*InternalError", log), log
