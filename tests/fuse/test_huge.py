"""Part sizes grow so streamed files pass 78 GiB; past the last part, write() fails EFBIG.
Shown end to end with --max-parts 4: parts of 8, 16, 32 and 64 MiB hold 120 MiB."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import MotoServer, Mount, S3Server

MiB = 1024 * 1024


@pytest.fixture
def four_part_mount(fuse: None, bucket: str, moto_server: MotoServer,
                    tmp_path: Path) -> Iterator[Mount]:
    m = Mount(bucket, tmp_path / "mnt", moto_server.url, tmp_path / "s3mpfs.log",
              extra=["--max-parts", "4"])
    try:
        m.start()
        yield m
    finally:
        assert m.unmount() == 0, m.log()


def test_parts_grow_to_fit_and_efbig_past_the_last(four_part_mount: Mount, s3: Any,
                                                     bucket: str, tmp_path: Path,
                                                     server: S3Server) -> None:
    src = tmp_path / "100m"
    src.write_bytes(os.urandom(100 * MiB))  # 13 parts of 8 MiB: more than 4 without growth
    r = subprocess.run(["cp", str(src), str(four_part_mount.mountpoint / "grown")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    head = s3.head_object(Bucket=bucket, Key="grown")
    assert head["ETag"].strip('"').endswith("-4")
    if server.has("part_number_reads"):
        sizes = [s3.head_object(Bucket=bucket, Key="grown", PartNumber=n)["ContentLength"]
                 for n in (1, 2, 3, 4)]
        assert sizes == [8 * MiB, 16 * MiB, 32 * MiB, 44 * MiB]
    # Where HEAD ?partNumber= is missing (Ceph 16), the multipart ETag pins the same boundaries.
    data, bounds = src.read_bytes(), [0, 8 * MiB, 24 * MiB, 56 * MiB, 100 * MiB]
    md5s = b"".join(hashlib.md5(data[a:b]).digest() for a, b in itertools.pairwise(bounds))
    assert head["ETag"].strip('"') == hashlib.md5(md5s).hexdigest() + "-4"
    assert s3.get_object(Bucket=bucket, Key="grown")["Body"].read() == src.read_bytes()

    big = tmp_path / "130m"
    with open(big, "wb") as f:
        f.write(src.read_bytes())
        f.write(os.urandom(30 * MiB))
    r = subprocess.run(["cp", str(big), str(four_part_mount.mountpoint / "toobig")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "File too large" in r.stderr
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="toobig")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "file too large" in four_part_mount.log()
