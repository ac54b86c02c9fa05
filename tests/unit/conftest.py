"""Fixtures of the filesystem core's unit tests: an in-memory store and a started Filesystem
on it (its background tasks cancelled at the end of the test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from s3mpfs.fs import Filesystem
from s3mpfs.store.memory import MemoryStore
from tests.helpers.memfs import fs_options


@pytest.fixture
def mem() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def fs(mem: MemoryStore) -> AsyncIterator[Filesystem]:
    async with trio.open_nursery() as n:
        filesystem = Filesystem(mem, fs_options())
        filesystem.start(n)
        yield filesystem
        n.cancel_scope.cancel()
