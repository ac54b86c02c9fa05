"""Crashes and unmounts under a writer: kill -9 of the daemon in the middle of a 200 MiB cp,
fusermount3 -u / -u -z and SIGTERM with files open for writing. Whatever happens, S3 holds
no object, or the previous object byte for byte, or what a writer had when its close()
returned 0; and an upload a crash leaves behind is found by `s3mpfs uploads` (orphans.py).

The daemon is killed while its cp is provably mid-write: the proxy stalls every UploadPart
after the second, so the upload cannot finish before the kill. No test process keeps a file
on the mount open while it forks (a fork's close-on-exec would flush, i.e. commit, the file):
writers that must stay open across a subprocess run in a child process of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3mpfs.status import find_mount
from s3mpfs.store.markers import MARKER_PREFIX, marker_key
from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import CREDENTIALS, MotoServer, Mount, mounted_at, wait_for

MiB = 1024 * 1024
BIG = 200 * MiB
ENV = {**os.environ, **CREDENTIALS}

pytestmark = pytest.mark.fuse


def object_or_none(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def uploads_of(s3: Any, bucket: str, key: str) -> list[str]:
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    return [u["UploadId"] for u in uploads if u["Key"] == key]


def parts_of(s3: Any, bucket: str, key: str) -> int:
    ids = uploads_of(s3, bucket, key)
    if not ids:
        return 0
    return len(s3.list_parts(Bucket=bucket, Key=key, UploadId=ids[0]).get("Parts", []))


def markers(s3: Any, bucket: str) -> dict[str, dict[str, Any]]:
    out = {}
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=MARKER_PREFIX).get("Contents", []):
        out[obj["Key"]] = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return out


def lazy_unmount(path: Path) -> None:
    """fusermount3 -u -z if anything is still mounted at path (a dead mount after kill -9
    is invisible to os.path.ismount: its stat fails with ENOTCONN)."""
    if find_mount(str(path)) is not None:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False, capture_output=True)


def uploads_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3mpfs", "uploads", *args],
                          capture_output=True, text=True, env=ENV, timeout=60)


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "big.bin"
    with open(path, "wb") as f:
        for _ in range(BIG // (8 * MiB)):
            f.write(os.urandom(8 * MiB))
    return path


class Crash:
    """A mount through a proxy that stalls parts 3+, and the cp that is killed under it."""

    def __init__(self, bucket: str, proxy: S3Proxy, tmp_path: Path) -> None:
        self.mount = Mount(bucket, tmp_path / "mnt", proxy.url, tmp_path / "s3mpfs.log")
        self.proxy = proxy
        self.cp: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def start_cp(self, src: Path, name: str) -> None:
        self.mount.start()
        assert self.mount.proc is not None
        self.pid = self.mount.proc.pid
        self.proxy.add_fault("UploadPart", "stall", seconds=300, nth=3, times=-1)
        self.cp = subprocess.Popen(["cp", str(src), str(self.mount.mountpoint / name)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def kill_daemon(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.mount.proc is not None
        self.mount.proc.wait(30)

    def cleanup(self) -> None:
        if self.cp is not None:
            if self.cp.poll() is None:
                self.cp.kill()
            self.cp.wait(30)
            assert self.cp.stderr is not None
            self.cp.stderr.close()
        if self.mount.proc is not None and self.mount.proc.poll() is None:
            os.kill(self.mount.proc.pid, signal.SIGKILL)
        lazy_unmount(self.mount.mountpoint)
        self.mount.unmount()
        self.proxy.reset()  # no more stalls: stalled handlers are released when it stops


@pytest.fixture
def crash(fuse: None, bucket: str, proxy: S3Proxy, tmp_path: Path) -> Iterator[Crash]:
    c = Crash(bucket, proxy, tmp_path)
    try:
        yield c
    finally:
        c.cleanup()


def _kill_mid_cp(crash: Crash, s3: Any, bucket: str, src: Path, key: str) -> str:
    """cp src to key, kill -9 the daemon once two parts are stored, clean up the dead mount;
    returns the upload id left behind."""
    crash.start_cp(src, key)
    wait_for(lambda: parts_of(s3, bucket, key) >= 2, 60, "two parts of the cp stored")
    assert crash.cp is not None and crash.cp.poll() is None  # cp is still writing
    crash.kill_daemon()
    code = crash.cp.wait(60)
    assert crash.cp.stderr is not None
    err = crash.cp.stderr.read().decode()
    assert code != 0, "cp must fail when the filesystem dies under it"
    assert "Transport endpoint is not connected" in err or "Input/output error" in err, err
    subprocess.run(["fusermount3", "-u", "-z", str(crash.mount.mountpoint)], check=True,
                   capture_output=True)
    assert find_mount(str(crash.mount.mountpoint)) is None
    (upload_id,) = uploads_of(s3, bucket, key)
    return upload_id


def test_kill_9_mid_cp_leaves_no_object_and_a_findable_upload(
        crash: Crash, s3: Any, bucket: str, big_source: Path, moto_server: MotoServer,
        tmp_path: Path) -> None:
    key = "big.bin"
    upload_id = _kill_mid_cp(crash, s3, bucket, big_source, key)
    assert object_or_none(s3, bucket, key) is None  # nothing under the key, not even a part
    assert parts_of(s3, bucket, key) >= 2
    marker = markers(s3, bucket)[marker_key(upload_id)]
    assert marker["key"] == key and marker["upload_id"] == upload_id
    assert marker["pid"] == crash.pid and marker["host"] == socket.gethostname()

    # The next mount reports it: one WARNING line with the count and the command.
    again = Mount(bucket, tmp_path / "mnt2", moto_server.url, tmp_path / "again.log")
    try:
        again.start()
        assert ".s3mpfs" not in os.listdir(again.mountpoint)  # markers are hidden
    finally:
        again.unmount()
    warnings = [line for line in again.log().splitlines()
                if " WARNING " in line and "unfinished multipart upload" in line]
    assert len(warnings) == 1, again.log()
    assert "1 unfinished multipart upload started by s3mpfs" in warnings[0]
    assert f"s3mpfs uploads {bucket} --endpoint-url {moto_server.url} --abort" in warnings[0]

    # A foreign upload (another tool's) sits next to it.
    foreign = s3.create_multipart_upload(Bucket=bucket, Key="other-tool.bin")["UploadId"]
    r = uploads_cli(bucket, "--endpoint-url", moto_server.url)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    cells = line.split("\t")
    assert cells[:2] == [key, upload_id]
    assert cells[3] == f"s3mpfs host={socket.gethostname()} pid={crash.pid}"  # not running
    assert "1 upload of other tools not shown (add --all)" in r.stderr

    r = uploads_cli(bucket, "--endpoint-url", moto_server.url, "--all")
    assert r.returncode == 0, r.stderr
    listed = {ln.split("\t")[1]: ln for ln in r.stdout.splitlines()}
    assert set(listed) == {upload_id, foreign}
    assert listed[foreign].endswith("\tother (not started by s3mpfs)")

    r = uploads_cli(bucket, "--endpoint-url", moto_server.url, "--abort")
    assert r.returncode == 0, r.stderr
    (aborted,) = r.stdout.splitlines()
    assert aborted.split("\t")[:2] == cells[:2] and aborted.split("\t")[3:] == [cells[3],
                                                                                 "aborted"]
    assert uploads_of(s3, bucket, key) == []
    assert uploads_of(s3, bucket, "other-tool.bin") == [foreign]  # not without --all
    assert marker_key(upload_id) not in markers(s3, bucket)

    r = uploads_cli(bucket, "--endpoint-url", moto_server.url, "--all", "--abort")
    assert r.returncode == 0, r.stderr
    assert uploads_of(s3, bucket, "other-tool.bin") == []
    assert object_or_none(s3, bucket, key) is None


def test_kill_9_mid_overwrite_keeps_the_old_object(
        crash: Crash, s3: Any, bucket: str, big_source: Path) -> None:
    key = "keep.bin"
    old = os.urandom(6 * MiB + 17)
    old_etag = s3.put_object(Bucket=bucket, Key=key, Body=old)["ETag"]
    upload_id = _kill_mid_cp(crash, s3, bucket, big_source, key)
    assert object_or_none(s3, bucket, key) == old
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"] == old_etag
    assert marker_key(upload_id) in markers(s3, bucket)
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


# -- unmounting under an open writer -------------------------------------------------------

WRITER = r"""
import sys
src, dst, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(src, "rb").read()
f = open(dst, "wb", buffering=0)
f.write(data[:first])
print("ready", flush=True)
sys.stdin.readline()
try:
    f.write(data[first:])
    f.close()
    print("closed 0", flush=True)
except OSError as exc:
    print(f"failed {exc.errno}", flush=True)
"""


@pytest.fixture
def plain_mount(fuse: None, bucket: str, moto_server: MotoServer,
                tmp_path: Path) -> Iterator[Mount]:
    m = Mount(bucket, tmp_path / "mnt", moto_server.url, tmp_path / "s3mpfs.log")
    try:
        m.start()
        yield m
    finally:
        lazy_unmount(m.mountpoint)
        m.unmount()


def test_lazy_unmount_lets_an_open_writer_finish_the_whole_file(
        plain_mount: Mount, s3: Any, bucket: str, tmp_path: Path) -> None:
    """fusermount3 -u refuses while a file is open (EBUSY); -u -z detaches the mount, the
    writer keeps its descriptor and its close() stores the whole file; then the daemon
    exits cleanly. Files closed before are intact; nothing partial ever appears."""
    m = plain_mount
    before = os.urandom(20 * MiB)
    (m.mountpoint / "closed-before.bin").write_bytes(before)
    src = tmp_path / "src.bin"
    data = os.urandom(20 * MiB + 5)
    src.write_bytes(data)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(src),
                               str(m.mountpoint / "open.bin"), str(9 * MiB)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdin is not None and writer.stdout is not None
    try:
        assert writer.stdout.readline() == "ready\n"
        wait_for(lambda: parts_of(s3, bucket, "open.bin") >= 1, 30, "a part of open.bin")
        r = subprocess.run(["fusermount3", "-u", str(m.mountpoint)], capture_output=True,
                           text=True)
        assert r.returncode != 0 and "busy" in r.stderr, r.stderr
        assert os.path.ismount(m.mountpoint)
        r = subprocess.run(["fusermount3", "-u", "-z", str(m.mountpoint)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert not os.path.ismount(m.mountpoint)
        assert m.proc is not None and m.proc.poll() is None  # serving the open file still
        assert object_or_none(s3, bucket, "open.bin") is None  # nothing committed early
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "closed 0\n"
    finally:
        writer.stdin.close()
        writer.wait(60)
        writer.stdout.close()
    assert m.proc.wait(30) == 0, m.log()
    assert object_or_none(s3, bucket, "open.bin") == data
    assert object_or_none(s3, bucket, "closed-before.bin") == before
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert markers(s3, bucket) == {}


def test_sigterm_aborts_open_overwrite_and_keeps_closed_files(
        plain_mount: Mount, s3: Any, bucket: str) -> None:
    """Extends test_mount_command.py's SIGTERM test: a file closed before the signal is
    intact, an open writer replacing an object leaves that object untouched, its upload is
    aborted with its marker, and the log names the key."""
    m = plain_mount
    before = os.urandom(17 * MiB)
    (m.mountpoint / "closed-before.bin").write_bytes(before)
    old = os.urandom(2 * MiB)
    s3.put_object(Bucket=bucket, Key="replaced.bin", Body=old)
    f = open(m.mountpoint / "replaced.bin", "wb", buffering=0)  # noqa: SIM115
    try:
        f.write(os.urandom(17 * MiB))  # two parts sent, the third filling
        wait_for(lambda: parts_of(s3, bucket, "replaced.bin") >= 1, 30, "a part stored")
        assert len(markers(s3, bucket)) == 1
        assert m.proc is not None
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(30) == 0, m.log()
        assert not os.path.ismount(m.mountpoint)
        with pytest.raises(OSError):
            f.write(b"more")
            f.close()
    finally:
        if not f.closed:
            with contextlib.suppress(OSError):
                f.close()
    assert object_or_none(s3, bucket, "replaced.bin") == old
    assert hashlib.sha256(object_or_none(s3, bucket, "closed-before.bin") or b"").digest() == \
        hashlib.sha256(before).digest()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert markers(s3, bucket) == {}
    log = m.log()
    assert any("replaced.bin" in line and "unmounted while open for writing" in line
               for line in log.splitlines()), log
    assert any("replaced.bin" in line and "aborted" in line and " WARNING " in line
               for line in log.splitlines()), log


def test_the_test_mount_helper_unmounts_a_killed_daemons_mount(
        fuse: None, bucket: str, server: Any, tmp_path: Path) -> None:
    """A daemon killed with -9 leaves a dead mount that os.path.ismount cannot see once the
    kernel asks the daemon (ENOTCONN; --metadata-ttl 0: at once): Mount.unmount(), every FUSE
    test's teardown, must still remove it, or tests leak mounts."""
    m = Mount(bucket, tmp_path / "mnt", server.url, tmp_path / "s3mpfs.log",
              extra=["--metadata-ttl", "0"])
    m.start()
    try:
        assert m.proc is not None
        m.proc.kill()
        m.proc.wait()
        assert not os.path.ismount(m.mountpoint) and mounted_at(m.mountpoint)
        assert m.unmount() == -signal.SIGKILL
        assert not mounted_at(m.mountpoint)
    finally:
        lazy_unmount(m.mountpoint)
