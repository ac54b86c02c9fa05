"""rsync's temporary files are held and stored once, under their final name (holds.py)."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import trio
import trio.testing

from s3mpfs.errors import FsError, StoreError
from s3mpfs.fs import Filesystem, SetAttr
from s3mpfs.inodes import ROOT_INODE
from s3mpfs.store.memory import MemoryStore
from tests.helpers.faults import FaultyStore
from tests.helpers.memfs import GID, UID
from tests.helpers.memfs import fs_options as _opts

EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL
TEMP = ".data.bin.Xy3q9Z"


async def _rsync_one(fs: Filesystem, data: bytes, mode: int = 0o640,
                     mtime_ns: int = 1_500_000_000 * 10**9) -> None:
    """What rsync's receiver does with one file: O_EXCL temporary, write, close, set times
    and mode, rename to the final name."""
    inode, fh = await fs.create(ROOT_INODE, TEMP, 0o600, UID, GID, flags=EXCL)
    await fs.write(fh, 0, data)
    await fs.flush(fh)
    await fs.release(fh)
    await fs.setattr(inode.ino, SetAttr(mtime_ns=mtime_ns))
    await fs.setattr(inode.ino, SetAttr(mode=mode))
    await fs.rename(ROOT_INODE, TEMP, ROOT_INODE, "data.bin")


def _requests(mem: MemoryStore) -> int:
    return sum(n for op, n in mem.counts.items() if op != "HeadBucket")


async def test_an_rsync_temporary_costs_one_put_under_its_final_name(
        fs: Filesystem, mem: MemoryStore) -> None:
    await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)  # so the names are known absent
    before = _requests(mem)
    await _rsync_one(fs, b"x" * 4096)
    assert _requests(mem) - before == 1 and mem.counts["PutObject"] == 2  # + the mkdir
    obj = mem.objects["data.bin"]
    assert obj.data == b"x" * 4096
    assert obj.metadata["mode"] == str(stat.S_IFREG | 0o640)
    assert obj.metadata["mtime"] == "1500000000"
    assert TEMP not in mem.objects
    inode = await fs.lookup(ROOT_INODE, "data.bin")
    assert inode.size == 4096 and inode.etag == obj.etag


async def test_a_failed_store_fails_the_rename_and_leaves_nothing(mem: MemoryStore) -> None:
    store = FaultyStore(mem)
    store.fail("put", StoreError("injected", code="InternalError"), and_after=True)
    async with trio.open_nursery() as n:
        fs = Filesystem(store, _opts())
        fs.start(n)
        with pytest.raises(FsError) as exc:
            await _rsync_one(fs, b"y" * 100)
        assert exc.value.errno == errno.EIO
        assert set(mem.objects) == set() and mem.uploads == {}
        assert await _lookup_errno(fs, TEMP) == errno.ENOENT
        assert await _lookup_errno(fs, "data.bin") == errno.ENOENT
        n.cancel_scope.cancel()


async def _lookup_errno(fs: Filesystem, name: str) -> int:
    try:
        await fs.lookup(ROOT_INODE, name)
    except FsError as exc:
        return exc.errno
    return 0


async def test_without_a_rename_it_is_stored_under_its_own_name(
        fs: Filesystem, mem: MemoryStore, autojump_clock: trio.testing.MockClock) -> None:
    _, fh = await fs.create(ROOT_INODE, TEMP, 0o600, UID, GID, flags=EXCL)
    await fs.write(fh, 0, b"late")
    await fs.flush(fh)
    await fs.release(fh)
    assert TEMP not in mem.objects
    await trio.sleep(3)  # the hold window passes
    assert mem.objects[TEMP].data == b"late"


async def test_an_unlinked_temporary_costs_nothing(fs: Filesystem, mem: MemoryStore) -> None:
    _, fh = await fs.create(ROOT_INODE, TEMP, 0o600, UID, GID, flags=EXCL)
    await fs.write(fh, 0, b"discarded")
    await fs.flush(fh)
    await fs.release(fh)
    before = _requests(mem)
    await fs.unlink(ROOT_INODE, TEMP)
    assert _requests(mem) == before
    assert set(mem.objects) == set()


@pytest.mark.parametrize("why", ["durable_close", "other name", "no O_EXCL", "memory"])
async def test_other_closes_store_at_once(mem: MemoryStore, why: str) -> None:
    async with trio.open_nursery() as n:
        fs = Filesystem(mem, _opts(durable_close=why == "durable_close"))
        fs.start(n)
        name = "plain.txt" if why == "other name" else TEMP
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC if why == "no O_EXCL" else EXCL
        if why == "memory":  # no room left in the memory limit: no holding
            while fs.budget.try_acquire():
                pass
        _, fh = await fs.create(ROOT_INODE, name, 0o600, UID, GID, flags=flags)
        await fs.write(fh, 0, b"now")
        await fs.flush(fh)
        assert mem.objects[name].data == b"now"
        await fs.release(fh)
        n.cancel_scope.cancel()
