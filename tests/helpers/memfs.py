"""What the unit tests of the filesystem core share: small options (5 MiB parts, 2 in
flight) and the errno of a call that must fail. Fixtures `mem` and `fs`: tests/unit/conftest.py."""

from __future__ import annotations

from collections.abc import Awaitable

import pytest

from s3mpfs.config import MiB, UploadConfig
from s3mpfs.errors import FsError
from s3mpfs.fs import FsOptions

PART = 5 * MiB
UID, GID = 1000, 1000


def fs_options(**kw: object) -> FsOptions:
    upload = UploadConfig(part_size=PART, concurrency=2, memory_limit=8 * PART)
    return FsOptions(upload=upload, uid=UID, gid=GID, **kw)  # type: ignore[arg-type]


async def errno_of(call: Awaitable[object]) -> int:
    with pytest.raises(FsError) as exc:
        await call
    return exc.value.errno
