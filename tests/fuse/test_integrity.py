"""Checksums S3 verifies, and the stored ETag/checksum visible as extended attributes."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from awscrt import checksums as crt

from tests.helpers.servers import Mount

MiB = 1024 * 1024


def crc64(data: bytes) -> str:
    return base64.b64encode(crt.crc64nvme(data).to_bytes(8, "big")).decode()


@pytest.mark.needs("stored_checksums")
def test_objects_carry_the_crc64nvme_of_their_bytes(mount: Mount, s3: Any, bucket: str,
                                                     tmp_path: Path) -> None:
    for name, size in (("small", 1000), ("large", 21 * MiB + 5)):
        data = os.urandom(size)
        (mount.mountpoint / name).write_bytes(data)
        head = s3.head_object(Bucket=bucket, Key=name, ChecksumMode="ENABLED")
        assert head["ChecksumCRC64NVME"] == crc64(data), name
        assert os.getxattr(mount.mountpoint / name, "user.s3.checksum").decode() == \
            f"CRC64NVME:{crc64(data)}"
        assert os.getxattr(mount.mountpoint / name, "user.s3.etag").decode() == \
            head["ETag"].strip('"')


def test_etag_xattr_is_the_stored_etag(mount: Mount, s3: Any, bucket: str) -> None:
    """What every server offers (Ceph 16 stores no checksums): the ETag, single and multipart."""
    for name, size in (("small", 1000), ("large", 21 * MiB + 5)):
        (mount.mountpoint / name).write_bytes(os.urandom(size))
        head = s3.head_object(Bucket=bucket, Key=name)
        assert os.getxattr(mount.mountpoint / name, "user.s3.etag").decode() == \
            head["ETag"].strip('"')
