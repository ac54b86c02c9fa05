"""FUSE tests drive a real mount with real programs; they need /dev/fuse (skipped with the
reason where it is missing; CI has it)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import Mount

# Lines test modules want shown after the run (test_faults.py: its tally of faults/outcomes).
SUMMARY_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY_LINES:
        terminalreporter.section("fault injection")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)


def hand_over(fd: int, then_write: Path) -> subprocess.Popen[bytes]:
    """A child that inherits `fd` and, once told (a line on its stdin), appends the file
    `then_write` to it and exits: it writes on after the opener's own close()."""
    return subprocess.Popen(["bash", "-c", f"read go && cat {then_write} >&{fd}"],
                            pass_fds=(fd,), stdin=subprocess.PIPE)


@pytest.fixture
def proxied_mount(fuse: None, bucket: str, proxy: S3Proxy, tmp_path: Path) -> Iterator[Mount]:
    """s3mpfs talking to the S3 server through `proxy`; the exit code is not checked (faults)."""
    m = Mount(bucket, tmp_path / "mnt", proxy.url, tmp_path / "s3mpfs.log")
    try:
        m.start()
        yield m
    finally:
        m.unmount()
