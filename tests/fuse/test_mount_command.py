"""The mount command: start-up checks before daemonising, daemon mode, signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import CREDENTIALS, MotoServer, Mount, wait_for

ENV = {**os.environ, **CREDENTIALS}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3mpfs", *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout)


def test_missing_bucket_fails_with_one_line(moto_server: MotoServer, tmp_path: Path) -> None:
    r = run_cli("no-such-bucket", str(tmp_path), "--endpoint-url", moto_server.url)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "no-such-bucket" in lines[0] and "does not exist" in lines[0]
    assert not os.path.ismount(tmp_path)


def test_unreachable_endpoint_fails(tmp_path: Path) -> None:
    from tests.helpers.servers import free_port

    r = run_cli("some-bucket", str(tmp_path), "--endpoint-url",
                f"http://127.0.0.1:{free_port()}")
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1
    assert "some-bucket" in r.stderr and "connect" in r.stderr.lower()


def test_missing_mountpoint_fails(moto_server: MotoServer, bucket: str, tmp_path: Path) -> None:
    r = run_cli(bucket, str(tmp_path / "nope"), "--endpoint-url", moto_server.url)
    assert r.returncode != 0
    assert "does not exist" in r.stderr


def test_part_size_below_5mib_is_refused(tmp_path: Path) -> None:
    r = run_cli("some-bucket", str(tmp_path), "--part-size", "4M")
    assert r.returncode == 2
    assert "5 MiB" in r.stderr


def test_credentials_never_logged(mount: Mount, tmp_path: Path) -> None:
    (mount.mountpoint / "f").write_bytes(b"x" * 100)
    os.listdir(mount.mountpoint)
    log = mount.log()
    assert "stored f" in log
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in log.replace("s3mpfs", "")
    assert "Signature=" not in log and "Authorization" not in log


def test_daemon_mode_returns_once_mounted(fuse: None, moto_server: MotoServer, bucket: str,
                                          s3: Any, tmp_path: Path) -> None:
    mnt, log = tmp_path / "mnt", tmp_path / "daemon.log"
    mnt.mkdir()
    r = run_cli(bucket, str(mnt), "--endpoint-url", moto_server.url, "--log-file", str(log))
    try:
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mnt)  # live as soon as the command returned
        (mnt / "hello").write_bytes(b"hi")
        assert s3.get_object(Bucket=bucket, Key="hello")["Body"].read() == b"hi"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
    match = re.search(r"mounted .* \(pid (\d+)\)", log.read_text())
    assert match, log.read_text()
    pid = int(match.group(1))

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 30, "the daemon to exit after unmount")
    assert not os.path.ismount(mnt)


def test_sigterm_unmounts_cleanly(fuse: None, moto_server: MotoServer, bucket: str,
                                  s3: Any, tmp_path: Path) -> None:
    m = Mount(bucket, tmp_path / "mnt", moto_server.url, tmp_path / "s3mpfs.log")
    m.start()
    try:
        f = open(m.mountpoint / "open.bin", "wb", buffering=0)  # noqa: SIM115
        f.write(os.urandom(9 * 1024 * 1024))  # one part in flight, file still open
        assert m.proc is not None
        m.proc.send_signal(signal.SIGTERM)
        code = m.proc.wait(30)
        assert code == 0, m.log()
        assert not os.path.ismount(m.mountpoint)
        with pytest.raises(OSError):
            f.close()
    finally:
        m.unmount()
    assert "open.bin" not in {o["Key"] for o in
                              s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert "aborted" in m.log()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
