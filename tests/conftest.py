"""Shared fixtures: the S3 server (moto's on 127.0.0.1 by default, or any S3 endpoint named by
S3MPFS_TEST_ENDPOINT and its keys: README "Tests"), boto3 clients, fresh buckets (deleted at
teardown on external servers), and s3mpfs mounts (subprocesses, always unmounted).

Tests that need something some servers lack say so with @pytest.mark.needs("capability")
(tests/helpers/servers.py: CAPABILITIES, LACKS); they are skipped there with the reason."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import (
    CAPABILITIES,
    CREDENTIALS,
    TARGET,
    Buckets,
    MotoServer,
    Mount,
    S3Server,
    bucket_prefix,
    fuse_unavailable,
    make_s3,
)

__all__ = ["MotoServer", "make_s3"]  # tests import them from here

# Every client in the test process (BotoStore too) gets the run's credentials; s3mpfs
# subprocesses get them through Mount / {**os.environ, **CREDENTIALS}.
os.environ.update(CREDENTIALS)
os.environ.pop("AWS_PROFILE", None)
if "AWS_SESSION_TOKEN" not in CREDENTIALS:
    os.environ.pop("AWS_SESSION_TOKEN", None)

BUCKET_PREFIX = bucket_prefix(os.environ)
LEFT_BEHIND: list[str] = []  # buckets an external server still holds after the run


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(*capabilities): skip (with the reason) on an S3 server that lacks one of them; "
        f"known: {', '.join(sorted(CAPABILITIES))}",
    )


def pytest_report_header(config: pytest.Config) -> str:
    if TARGET is None:
        return ("S3 server: moto, started on 127.0.0.1 for this session "
                "(S3MPFS_TEST_ENDPOINT unset)")
    return f"S3 server: {TARGET.describe()}; buckets {BUCKET_PREFIX}*"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    probe = TARGET or S3Server("127.0.0.1", "moto", CREDENTIALS)
    for item in items:
        for mark in item.iter_markers("needs"):
            for capability in mark.args:
                if not probe.has(capability):  # KeyError on a misspelt capability
                    item.add_marker(pytest.mark.skip(reason=probe.why_not(capability)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if LEFT_BEHIND:
        terminalreporter.section("test buckets left behind")
        for line in LEFT_BEHIND:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def server() -> Iterator[S3Server]:
    """The S3 server under test: `.url`, `.kind` (moto/ceph/aws/s3), `.has(capability)`,
    `.credentials`. moto's is started here and stopped at the end; an external one is used
    as it is."""
    srv = TARGET or MotoServer()
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def moto_server(server: S3Server) -> S3Server:
    """The historic name of `server`: moto's unless S3MPFS_TEST_ENDPOINT names another."""
    return server


@pytest.fixture(scope="session")
def s3(server: S3Server) -> Any:
    return make_s3(server.url, server)


@pytest.fixture(scope="session")
def buckets(s3: Any, server: S3Server) -> Iterator[Buckets]:
    """Creates uniquely named buckets; `with buckets.temporary("tag") as name:` deletes the
    bucket afterwards on external servers (module-scoped buckets use that)."""
    b = Buckets(s3, server, BUCKET_PREFIX)
    yield b
    for name in b.leftovers():  # their own teardown failed (and was reported): once more
        try:
            b.delete(name)
        except Exception as exc:
            LEFT_BEHIND.append(f"{name} on {server.url}: {exc}")


@pytest.fixture
def bucket(buckets: Buckets) -> Iterator[str]:
    """A fresh, empty bucket; emptied (uploads aborted) and deleted afterwards on an
    external server."""
    with buckets.temporary() as name:
        yield name


@pytest.fixture
def fuse() -> None:
    reason = fuse_unavailable()
    if reason:
        pytest.skip(f"FUSE unavailable: {reason}")


@pytest.fixture
def mount(fuse: None, bucket: str, server: S3Server, tmp_path: Path) -> Iterator[Mount]:
    """s3mpfs mounted on tmp_path/mnt against `bucket`; unmounted (and checked) afterwards."""
    m = Mount(bucket, tmp_path / "mnt", server.url, tmp_path / "s3mpfs.log")
    try:
        m.start()
        yield m
    finally:
        code = m.unmount()
    assert code == 0, f"s3mpfs exited with {code}:\n{m.log()}"
    assert "Traceback" not in m.log(), m.log()


def needs_proxy(server: S3Server) -> None:
    """Skip unless the server answers through a local proxy (not AWS: it routes by Host)."""
    if not server.has("any_host_header"):
        pytest.skip(server.why_not("any_host_header"))


@contextlib.contextmanager
def running_proxy(server: S3Server) -> Iterator[S3Proxy]:
    """A counting, fault-injecting HTTP proxy in front of the S3 server (its own process),
    stopped by PID at the end."""
    needs_proxy(server)
    p = S3Proxy(server.url)
    try:
        p.start()
        yield p
    finally:
        p.stop()


@pytest.fixture
def proxy(server: S3Server) -> Iterator[S3Proxy]:
    with running_proxy(server) as p:
        yield p
