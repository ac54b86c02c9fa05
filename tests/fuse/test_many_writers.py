"""Eight concurrent 256 MiB writers plus readers: all byte-exact, no deadlock, and the
daemon's memory stays within the documented bound (README: memory)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_s3
from tests.helpers.servers import MotoServer, Mount, S3Server

MiB = 1024 * 1024
WRITERS = 8
SIZE = 256 * MiB
MEMORY_LIMIT = 64 * MiB


def vm(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


@pytest.fixture
def own_moto(request: pytest.FixtureRequest, server: S3Server) -> Iterator[tuple[str, str]]:
    """(endpoint, bucket). On moto a server of its own: 2 GiB of objects are dropped with it
    afterwards. An external server stores them in a bucket deleted at teardown."""
    if server.external:
        yield server.url, request.getfixturevalue("bucket")
        return
    own = MotoServer()
    try:
        own.start()
        make_s3(own.url, own).create_bucket(Bucket="many-writers")
        yield own.url, "many-writers"
    finally:
        own.stop()


def test_eight_writers_and_readers(fuse: None, own_moto: tuple[str, str],
                                   tmp_path: Path) -> None:
    url, bucket = own_moto
    s3: Any = make_s3(url)
    readable = {f"r{i}": os.urandom(20 * MiB) for i in range(2)}
    for key, data in readable.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    sources = []
    for i in range(WRITERS):
        src = tmp_path / f"src{i}"
        with open(src, "wb") as f:
            block = os.urandom(MiB)
            for j in range(SIZE // MiB):
                f.write(bytes([i, j % 256]) + block[2:])
        sources.append(src)
    m = Mount(bucket, tmp_path / "mnt", url, tmp_path / "s3mpfs.log",
              extra=["--memory-limit", str(MEMORY_LIMIT)])
    m.start()
    try:
        assert m.proc is not None
        pid = m.proc.pid
        base = vm(pid, "VmRSS")
        writers = [subprocess.Popen(["cp", str(src), str(m.mountpoint / f"w{i}")],
                                    stderr=subprocess.PIPE)
                   for i, src in enumerate(sources)]
        readers = [subprocess.Popen(["sha256sum", str(m.mountpoint / key)],
                                    stdout=subprocess.PIPE) for key in readable]
        deadline = time.monotonic() + 900
        for p in writers + readers:
            p.wait(max(1.0, deadline - time.monotonic()))  # a deadlock fails here
        for p in writers:
            assert p.returncode == 0, p.stderr.read() if p.stderr else ""
        for p, (key, data) in zip(readers, readable.items(), strict=True):
            assert p.stdout is not None
            assert p.stdout.read().split()[0].decode() == hashlib.sha256(data).hexdigest(), key
        peak = vm(pid, "VmHWM")
    finally:
        code = m.unmount()
    assert code == 0, m.log()
    for i, src in enumerate(sources):
        h = hashlib.sha256()
        for chunk in s3.get_object(Bucket=bucket, Key=f"w{i}")["Body"].iter_chunks(MiB):
            h.update(chunk)
        with open(src, "rb") as f:
            assert h.hexdigest() == hashlib.file_digest(f, "sha256").hexdigest(), f"w{i}"
    # The README's memory terms: each open file holds a filling buffer and its kept first part
    # (8 MiB each); all files hold at most MEMORY_LIMIT of parts in flight; up to
    # (concurrency + 1) part buffers stay on the free list for reuse; each reader's window
    # holds at most its whole (20 MiB) object here. 64 MiB more for pyfuse3's request
    # buffers (1 MiB per writer in flight), Python's heap and allocator slack.
    files = WRITERS * 2 * 8 * MiB
    free_list = (4 + 1) * 8 * MiB
    windows = sum(len(d) for d in readable.values())
    bound = base + files + MEMORY_LIMIT + free_list + windows + 64 * MiB
    print(f"daemon RSS: {base / MiB:.0f} MiB at start, peak {peak / MiB:.0f} MiB "
          f"(bound {bound / MiB:.0f} MiB) for {WRITERS} x {SIZE // MiB} MiB writers")
    assert peak <= bound
