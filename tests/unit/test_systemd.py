"""systemd integration: sd_notify over a real AF_UNIX datagram socket, JOURNAL_STREAM
detection, journald-style log lines and redaction (s3mpfs.systemd, s3mpfs.logs)."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3mpfs import logs, systemd


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="s3mpfs-", dir="/tmp"))
    try:
        yield d
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notify_sends_one_datagram_to_a_path_socket(short_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(short_dir / "notify")
    with _receiver(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert systemd.notify("READY=1\nSTATUS=Mounted") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=Mounted"
        assert systemd.notify("STOPPING=1") is True
        assert sock.recv(4096) == b"STOPPING=1"


def test_notify_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"s3mpfs-test-{os.getpid()}-abstract"
    with _receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"


def test_notify_without_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_to_a_vanished_socket_does_not_raise(short_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "gone"))
    with caplog.at_level(logging.WARNING):
        assert systemd.notify("READY=1") is False
    assert "could not notify" in caplog.text


def test_notify_refuses_non_unix_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.notify("READY=1") is False


def test_journal_stream_matches_only_the_connected_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        st = os.fstat(a.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        assert systemd.journal_stream(a.fileno()) is True
        assert systemd.under_systemd(a.fileno()) is True
        # a child that redirected stderr elsewhere is not writing to the journal
        assert systemd.journal_stream(b.fileno()) is False
        assert systemd.under_systemd(b.fileno()) is False
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert systemd.journal_stream(a.fileno()) is False
        monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
        assert systemd.under_systemd(b.fileno()) is True


@pytest.mark.parametrize(("level", "prefix"), [
    (logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"),
    (logging.ERROR, "<3>"), (logging.CRITICAL, "<2>"),
])
def test_journal_formatter_prefixes_priority(level: int, prefix: str) -> None:
    record = logging.LogRecord("s3mpfs.upload", level, __file__, 1, "stored %s", ("k",), None)
    assert logs.JournalFormatter().format(record) == f"{prefix}s3mpfs.upload: stored k"


def test_journal_formatter_prefixes_every_traceback_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("s3mpfs", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())
    lines = logs.JournalFormatter().format(record).splitlines()
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"
    assert not any(line[3:4].isdigit() for line in lines[:1])  # no timestamp


def test_setup_logging_journal_goes_to_stderr_without_timestamps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    try:
        logs.setup_logging(debug=False, log_file=None, daemon=False, journal=True)
        logging.getLogger("s3mpfs.x").info("hello %d", 1)
        logging.getLogger("s3mpfs.x").debug("hidden")
    finally:
        _reset_logging()
    assert err.getvalue() == "<6>s3mpfs.x: hello 1\n"


def test_setup_logging_file_has_timestamps_and_redacts(tmp_path: Path) -> None:
    path = tmp_path / "log"
    try:
        logs.setup_logging(debug=True, log_file=str(path), daemon=False)
        log = logging.getLogger("s3mpfs.x")
        log.debug("headers %s", {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAXXX/x, "
                                                  "Signature=deadbeef"})
        log.info("url http://h/b/k?X-Amz-Signature=cafe&X-Amz-Credential=AKIAYYY%2F1")
        log.info("plain message")
    finally:
        _reset_logging()
    text = path.read_text()
    assert "deadbeef" not in text and "cafe" not in text
    assert "AKIAXXX" not in text and "AKIAYYY" not in text
    assert "plain message" in text
    assert text.splitlines()[-1][:4].isdigit()  # "2026-..." timestamp first


def test_botocore_loggers_stay_quiet_under_debug(tmp_path: Path) -> None:
    try:
        logs.setup_logging(debug=True, log_file=str(tmp_path / "log"), daemon=False)
        assert logging.getLogger("botocore").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("botocore.endpoint").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("urllib3").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("s3mpfs").getEffectiveLevel() == logging.DEBUG
    finally:
        _reset_logging()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """setup_logging() replaces the root logger's handlers (pytest's capture among them)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("botocore", "urllib3")}
    yield
    _reset_logging()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


def _reset_logging() -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        if isinstance(h, logging.FileHandler):
            h.close()


# -- contrib/systemd: the unit, its environment file, the mount unit and the fstab line ----

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def _ini(path: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key] = value
    return sections


def test_service_unit_is_a_notify_service_with_the_env_file() -> None:
    unit = _ini(CONTRIB / "s3mpfs@.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"] == "/etc/s3mpfs/%i.env"
    assert service["ExecStart"].split()[:2] == ["s3mpfs", "--systemd"]
    minutes = int(service["TimeoutStopSec"].removesuffix("min"))
    assert minutes * 60 >= 5 * (10 + 60)  # botocore: 5 attempts of 10 s connect + 60 s read
    assert "fusermount3 -u -z" in service["ExecStopPost"]
    for sandbox in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateMounts"):
        assert sandbox not in service  # a private mount namespace would hide the mount
    text = (CONTRIB / "s3mpfs@.service").read_text() + (CONTRIB / "s3mpfs.env.example"
                                                         ).read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "AWS_ACCESS_KEY_ID" not in text


def test_env_example_gives_a_valid_command_line() -> None:
    from s3mpfs.cli import parse_args

    env = {k: v for k, _, v in (line.partition("=") for line in
                                (CONTRIB / "s3mpfs.env.example").read_text().splitlines()
                                if line and not line.startswith("#"))}
    assert set(env) == {"BUCKET", "MOUNTPOINT", "S3MPFS_OPTIONS"}
    cfg = parse_args(["--systemd", env["BUCKET"], env["MOUNTPOINT"],
                      *env["S3MPFS_OPTIONS"].split()])
    assert (cfg.s3.bucket, cfg.s3.prefix, cfg.mountpoint) == ("mybucket", "backups/",
                                                              "/mnt/backups")
    assert cfg.foreground and cfg.systemd and "allow_other" in cfg.fuse_options


def test_mount_unit_and_fstab_line_agree_and_parse() -> None:
    from s3mpfs.cli import parse_args

    mount = _ini(CONTRIB / "mnt-backups.mount")["Mount"]
    assert mount["Type"] == "fuse.s3mpfs"
    assert mount["Where"] == "/mnt/backups"  # the unit's name is the escaped mount point
    [line] = [x for x in (CONTRIB / "fstab.example").read_text().splitlines()
              if x and not x.startswith("#")]
    what, where, fstype, options, _, _ = line.split()
    assert (what, where, fstype, options) == (mount["What"], mount["Where"], mount["Type"],
                                              mount["Options"])
    # what mount.fuse3 hands to s3mpfs for it: minus _netdev, plus rw first and dev,suid last
    handed = ",".join(o for o in ["rw", *options.split(","), "dev", "suid"] if o != "_netdev")
    cfg = parse_args([what, where, "-o", handed])
    assert cfg.s3.bucket == "mybucket" and cfg.fs.upload.part_size == 16 * 1024 * 1024


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is missing")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Syntax and semantics as systemd sees them. The only complaints allowed are about the
    commands not being installed on this machine."""
    (tmp_path / "s3mpfs@test.service").write_text((CONTRIB / "s3mpfs@.service").read_text())
    (tmp_path / "mnt-backups.mount").write_text((CONTRIB / "mnt-backups.mount").read_text())
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        str(tmp_path / "s3mpfs@test.service"), str(tmp_path / "mnt-backups.mount")],
                       capture_output=True, text=True, timeout=60)
    complaints = [line for line in (r.stdout + r.stderr).splitlines()
                  if line.strip() and not re.search(r"Command (s3mpfs|fusermount3) is not "
                                                    r"executable", line)]
    assert complaints == []
