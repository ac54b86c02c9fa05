"""Shared fixtures: a real moto S3 server on 127.0.0.1, boto3 clients, fresh buckets, and
s3mpfs mounts (subprocesses, always unmounted)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest

from tests.helpers.servers import CREDENTIALS, MotoServer, Mount, fuse_unavailable

for _k, _v in CREDENTIALS.items():
    os.environ.setdefault(_k, _v)

_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def make_s3(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=botocore.config.Config(s3={"addressing_style": "path"},
                                      retries={"mode": "standard", "max_attempts": 3}),
    )


@pytest.fixture(scope="session")
def s3(moto_server: MotoServer) -> Any:
    return make_s3(moto_server.url)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"test-{os.getpid()}-{next(_bucket_ids)}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def fuse() -> None:
    reason = fuse_unavailable()
    if reason:
        pytest.skip(f"FUSE unavailable: {reason}")


@pytest.fixture
def mount(fuse: None, bucket: str, moto_server: MotoServer, tmp_path: Path) -> Iterator[Mount]:
    """s3mpfs mounted on tmp_path/mnt against `bucket`; unmounted (and checked) afterwards."""
    m = Mount(bucket, tmp_path / "mnt", moto_server.url, tmp_path / "s3mpfs.log")
    try:
        m.start()
        yield m
    finally:
        code = m.unmount()
    assert code == 0, f"s3mpfs exited with {code}:\n{m.log()}"
    assert "Traceback" not in m.log(), m.log()
