"""Writes anywhere S3 allows (issue 17) on MemoryStore: in-place edits of a stored object
(edits.py), bounded and interruptible growth (zerofill.py, parts.max_file_size)."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from s3mpfs.config import MiB, UploadConfig
from s3mpfs.errors import FsError, PreconditionFailed, StoreError
from s3mpfs.parts import MAX_OBJECT_SIZE, capacity
from s3mpfs.store.memory import MemoryStore
from s3mpfs.upload import Existing, PartBudget, State, Upload
from tests.helpers.faults import FaultyStore

PART = 5 * MiB
META = {"mode": "33188"}


def _data(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 37 + seed) % 251 for i in range(65536))
    return (block * (size // len(block) + 1))[:size]


def _upload(store: FaultyStore | MemoryStore, n: trio.Nursery, etag: str | None, size: int,
            *, part_size: int = PART, budget: PartBudget | None = None,
            max_parts: int = 10_000) -> Upload:
    cfg = UploadConfig(part_size=part_size, concurrency=2, memory_limit=8 * part_size,
                       max_parts=max_parts)
    return Upload(store, "k", cfg=cfg, budget=budget or PartBudget(8), nursery=n,
                  metadata=lambda: META,
                  existing=Existing(etag, size) if etag is not None else None)


async def _stored(size: int, seed: int = 1) -> tuple[MemoryStore, FaultyStore, bytes, str]:
    mem = MemoryStore()
    store = FaultyStore(mem)
    old = _data(size, seed)
    etag = await store.put("k", old, metadata={})
    store.calls.clear()
    return mem, store, old, etag


# -- in-place edits of a stored object --------------------------------------------------------

@pytest.mark.parametrize("where", ["start", "middle", "end", "all three"])
async def test_edit_copies_untouched_blocks_and_uploads_touched_ones(where: str) -> None:
    size = 5 * PART + 12345  # blocks: [0,P) [P,2P) [2P,3P) [3P,4P) [4P, size)
    mem, store, old, etag = await _stored(size)
    offsets = {"start": [0], "middle": [2 * PART + 7], "end": [size - 4],
               "all three": [0, 2 * PART + 7, size - 4]}[where]
    expected = bytearray(old)
    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, size)
        for offset in offsets:
            await up.write(offset, b"EDIT")
            expected[offset:offset + 4] = b"EDIT"
        assert up.size == size
        assert [o for o, _ in up.edited_regions()] == [min(o // PART, 4) * PART
                                                       for o in offsets]
        await up.commit()
    assert mem.objects["k"].data == expected
    touched = len(offsets)
    assert store.calls.count("get_range") == touched  # one ranged GET per touched block
    assert store.calls.count("upload_part") == touched
    copies = {"start": 1, "middle": 2, "end": 1, "all three": 2}[where]
    assert store.calls.count("upload_part_copy") == copies  # untouched runs, server side
    assert "put" not in store.calls


async def test_edit_then_append_streams_parts_after_the_reserved_numbers() -> None:
    size = 3 * PART
    mem, store, old, etag = await _stored(size)
    extra = _data(3 * PART + 99, 5)
    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, size)
        await up.write(size - 2, b"ab" + extra)  # edits the last block, then streams
        await up.write(1, b"Z")
        await up.commit()
    assert mem.objects["k"].data == old[:1] + b"Z" + old[2:size - 2] + b"ab" + extra


async def test_edits_across_commits_and_reopen() -> None:
    size = 2 * PART + 5
    mem, store, old, etag = await _stored(size)
    expected = bytearray(old)
    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, size)
        for i in range(3):
            await up.write(PART * i, b"%d" % i)
            expected[PART * i:PART * i + 1] = b"%d" % i
            await up.commit()
            assert mem.objects["k"].data == expected
        await up.close()
        assert up.budget._slots.value == 8  # every edited block's memory came back


async def test_edit_beyond_the_memory_limit_is_enospc_and_keeps_the_object() -> None:
    size = 4 * PART
    mem, store, old, etag = await _stored(size)
    async with trio.open_nursery() as n:
        budget = PartBudget(2)
        up = _upload(store, n, etag, size, budget=budget)
        await up.write(0, b"a")
        await up.write(PART, b"b")
        with pytest.raises(FsError) as exc:
            await up.write(2 * PART, b"c")  # a third block: no room
        assert exc.value.errno == errno.ENOSPC
        assert up.state is State.FAILED
        with pytest.raises(FsError):
            await up.commit()
        await up.close()
        assert budget._slots.value == 2
    assert mem.objects["k"].data == old
    assert mem.uploads == {}


async def test_edit_of_a_replaced_object_is_estale_and_splices_nothing() -> None:
    size = 2 * PART
    mem, store, _, etag = await _stored(size)
    await mem.put("k", b"other writer", metadata={})
    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, size)
        with pytest.raises(FsError) as exc:
            await up.write(10, b"x")
        assert exc.value.errno == errno.ESTALE
    assert mem.objects["k"].data == b"other writer"


async def test_copy_failing_at_commit_keeps_the_old_object() -> None:
    size = 3 * PART
    mem, store, old, etag = await _stored(size)
    store.fail("upload_part_copy", PreconditionFailed("replaced", code="PreconditionFailed"))
    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, size)
        await up.write(0, b"x")
        with pytest.raises(FsError) as exc:
            await up.commit()
        assert exc.value.errno == errno.ESTALE
    assert mem.objects["k"].data == old
    assert mem.uploads == {}


async def test_object_under_one_part_is_edited_in_memory_one_put_per_commit() -> None:
    size = 6 * MiB  # >= 5 MiB but under the 8 MiB part: fetched once, stored by PutObject
    mem, store, old, etag = await _stored(size)
    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, size, part_size=8 * MiB)
        await up.write(100, b"x")
        await up.commit()
        await up.truncate(50)
        await up.write(10, b"y")
        await up.commit()
    assert mem.objects["k"].data == old[:10] + b"y" + old[11:50]
    assert store.calls == ["get_range", "put", "put"]


# -- bounded, interruptible growth ------------------------------------------------------------

async def test_growth_past_the_largest_object_is_efbig_and_changes_nothing() -> None:
    mem, store, old, etag = await _stored(100)
    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, 100)
        for call in (up.truncate(MAX_OBJECT_SIZE + 1), up.write(2**50, b"x")):
            with pytest.raises(FsError) as exc:
                await call
            assert exc.value.errno == errno.EFBIG
        assert (up.state, up.size) == (State.CLEAN, 100)
        await up.write(100, b"!")  # the upload still works
        await up.commit()
        small = _upload(store, n, None, 0, max_parts=20)  # the tiers' limit, not S3's
        with pytest.raises(FsError) as exc:
            await small.truncate(capacity(PART, 20) + 1)
        assert exc.value.errno == errno.EFBIG
    assert mem.objects["k"].data == old + b"!"
    assert store.calls == ["get_range", "put"]


async def test_interrupted_fill_stops_aborts_and_keeps_the_old_object() -> None:
    mem, store, old, etag = await _stored(100)
    asked = 0

    def interrupted() -> bool:
        nonlocal asked
        asked += 1
        return asked > 12  # Ctrl-C after 12 MiB of zeros

    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, 100)
        with pytest.raises(FsError) as exc:
            await up.truncate(20 * 1024 * MiB, interrupted)
        assert exc.value.errno == errno.EINTR
        assert up.state is State.FAILED
        await up.close()
    assert mem.objects["k"].data == old
    assert mem.uploads == {}
    assert store.calls.count("upload_part") <= 3


async def test_failed_part_stops_the_fill() -> None:
    mem, store, old, etag = await _stored(100)
    store.fail("upload_part", StoreError("injected", code="InternalError"), nth=2)
    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, 100)
        with pytest.raises(FsError) as exc:
            await up.truncate(1024 * MiB)
        assert exc.value.errno == errno.EIO
        with pytest.raises(FsError):
            await up.commit()
    assert mem.objects["k"].data == old
    assert mem.uploads == {}
    assert store.calls.count("upload_part") <= 5  # not the 200 parts of the whole fill


async def test_fill_is_not_stored_while_it_runs() -> None:
    mem, store, _, etag = await _stored(100)
    gate = store.gate("upload_part")
    async with trio.open_nursery() as n:
        up = _upload(store, n, etag, 100)
        n.start_soon(up.truncate, 5 * PART)
        await trio.testing.wait_all_tasks_blocked()
        assert up.state is State.DIRTY  # `s3mpfs status` says writing, not stored
        gate.set()
    assert up.state is State.DIRTY
    assert len(mem.objects["k"].data) == 100
