"""Writes anywhere S3 allows (issue 17) on MemoryStore: in-place edits of a stored object
(edits.py), bounded and interruptible growth (zerofill.py, parts.max_file_size)."""

from __future__ import annotations

import errno
from typing import Any

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
        assert [o for o, _ in up.held()] == [min(o // PART, 4) * PART
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
        with pytest.raises(FsError) as exc:
            await up.truncate(MAX_OBJECT_SIZE + 1)
        assert exc.value.errno == errno.EFBIG
        assert (up.state, up.size) == (State.CLEAN, 100)
        await up.write(100, b"!")  # the upload still works
        await up.commit()
        far = _upload(store, n, up.etag, 101)
        with pytest.raises(FsError) as exc:
            await far.write(2**50, b"x")  # nothing sent; the file cannot be stored whole
        assert exc.value.errno == errno.EFBIG and far.state is State.FAILED
        await far.close()
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


# -- rewrites of held parts of a new file (heldparts.py) --------------------------------------

class PartLog(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[int] = []

    async def upload_part(self, key: str, upload_id: str, number: int, data: Any,
                          checksum: Any = None) -> str:
        self.parts.append(number)
        return await super().upload_part(key, upload_id, number, data, checksum)


def _new(store: MemoryStore, n: trio.Nursery, concurrency: int, window: int = 0) -> Upload:
    cfg = UploadConfig(part_size=PART, concurrency=concurrency, memory_limit=8 * PART,
                       rewrite_window=window)
    keep = (max(cfg.concurrency, cfg.held_parts) + 1) * PART  # as fs.py sizes the pool
    return Upload(store, "k", cfg=cfg, budget=PartBudget(8, keep_bytes=keep), nursery=n,
                  metadata=lambda: META)


@pytest.mark.parametrize("chunk", [64 * 1024, MiB])
async def test_rewrite_of_a_recent_part_sends_that_part_again(chunk: int) -> None:
    """zip's pattern: a member's header is patched after its data; the part holding it was
    uploaded and its buffer is still in the pool (the newest `concurrency` parts)."""
    store = PartLog()
    data = bytearray(_data(6 * PART + 77, 3))
    async with trio.open_nursery() as n:
        up = _new(store, n, concurrency=2)
        for pos in range(0, len(data), chunk):
            await up.write(pos, bytes(data[pos:pos + chunk]))
            await trio.testing.wait_all_tasks_blocked()  # S3 faster than the writer
        offset = 4 * PART + 3  # in part 5 of 7, sent: the filling buffer is part 7
        await up.write(offset, b"HDR!")
        data[offset:offset + 4] = b"HDR!"
        await up.commit()
    assert store.objects["k"].data == data
    assert store.parts.count(5) == 2  # part 5 sent again with the patch
    assert sorted(set(store.parts)) == list(range(1, 8))


async def test_rewrite_window_setting_widens_it() -> None:
    store = PartLog()
    data = bytearray(_data(8 * PART, 4))
    async with trio.open_nursery() as n:
        up = _new(store, n, concurrency=1, window=5)
        for pos in range(0, len(data), MiB):
            await up.write(pos, bytes(data[pos:pos + MiB]))
            await trio.testing.wait_all_tasks_blocked()
        await up.write(3 * PART + 10, b"far back")  # part 4 of 8: 4 parts back
        data[3 * PART + 10:3 * PART + 18] = b"far back"
        await up.commit()
    assert store.objects["k"].data == data


async def test_rewrite_beyond_the_window_is_einval() -> None:
    store = PartLog()
    async with trio.open_nursery() as n:
        up = _new(store, n, concurrency=1)
        for pos in range(0, 6 * PART, MiB):
            await up.write(pos, _data(MiB, pos))
            await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(FsError) as exc:
            await up.write(2 * PART, b"x")  # part 3: its buffer was reused
        assert exc.value.errno == errno.EINVAL
    assert "k" not in store.objects
    assert store.uploads == {}


def test_pool_reuses_oldest_first_spares_and_reclaims() -> None:
    budget = PartBudget(8, keep_bytes=3 * 10)
    bufs = [bytearray(10) for _ in range(4)]
    for i, buf in enumerate(bufs):
        budget.give_buffer(buf, ("u", i))
    assert budget.reclaim(("u", 0)) is None  # the oldest was dropped: over keep_bytes
    assert budget.take_buffer(10, lambda tag: tag == ("u", 1)) is bufs[2]  # 1 spared
    assert budget.reclaim(("u", 2)) is None  # reused: gone
    assert budget.reclaim(("u", 3)) is bufs[3]
    assert budget.take_buffer(10) is bufs[1]
    assert len(budget.take_buffer(10)) == 10  # empty: a new one


def test_sparing_costs_no_memory_past_max_buffers() -> None:
    budget = PartBudget(8, keep_bytes=100, max_buffers=2)
    a, b = budget.take_buffer(10), budget.take_buffer(10)
    budget.give_buffer(a, ("u", 1))
    assert budget.take_buffer(10, lambda tag: True) is a  # 2 made already: reused anyway
    budget.give_buffer(b, ("u", 2))
    budget.give_buffer(a, ("u", 3))
    assert budget.buffers == 2
