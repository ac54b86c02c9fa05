"""The write pipeline (s3mpfs.upload) on MemoryStore, with FaultyStore for failures and gates.

Synchronisation is trio.testing.wait_all_tasks_blocked: "every task is stuck" is the moment
to assert that a write is (still) blocked or that part tasks have run.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from s3mpfs.checksums import Checksum
from s3mpfs.config import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, MiB, UploadConfig
from s3mpfs.errors import (
    AccessDenied,
    FsError,
    NoSuchUpload,
    PreconditionFailed,
    StoreError,
    Unreachable,
)
from s3mpfs.parts import capacity
from s3mpfs.store.base import ObjectStore
from s3mpfs.store.memory import MemoryStore
from s3mpfs.upload import Existing, PartBudget, State, Upload, copy_ranges
from tests.helpers.faults import FaultyStore

PART = 5 * MiB
META = {"mode": "33188", "uid": "1000"}


def _data(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 31 + seed) % 256 for i in range(65536))
    return (block * (size // len(block) + 1))[:size]


def _upload(store: ObjectStore, nursery: trio.Nursery, *, key: str = "k",
            concurrency: int = 2, budget: PartBudget | None = None, max_parts: int = MAX_PARTS,
            metadata: Callable[[], Mapping[str, str]] = lambda: META) -> Upload:
    cfg = UploadConfig(part_size=PART, concurrency=concurrency, memory_limit=64 * PART)
    return Upload(store, key, cfg=cfg, budget=budget or PartBudget(cfg.max_parts_in_memory),
                  nursery=nursery, metadata=metadata, max_parts=max_parts)


async def _write_all(up: Upload, data: bytes, chunk: int, offset: int = 0) -> None:
    for pos in range(0, len(data), chunk):
        piece = data[pos:pos + chunk]
        assert await up.write(offset + pos, piece) == len(piece)


def _fault() -> StoreError:
    return StoreError("injected: InternalError", code="InternalError")


class PartLog(MemoryStore):
    """MemoryStore that remembers (part number, size) of every UploadPart, in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[tuple[int, int]] = []

    async def upload_part(self, key: str, upload_id: str, number: int,
                          data: bytes | bytearray | memoryview,
                          checksum: Checksum | None = None) -> str:
        self.parts.append((number, len(data)))
        return await super().upload_part(key, upload_id, number, data, checksum)


# -- streaming and committing --------------------------------------------------------------

SIZES = [0, 1, 1000, PART - 1, PART, PART + 1, 2 * PART, 2 * PART + 12345, 3 * PART + PART // 2]
CHUNKS = [4096, 65536 + 3, MiB + 7, 3 * MiB, 128 * 1024]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("chunk", CHUNKS)
async def test_object_equals_written_bytes(size: int, chunk: int) -> None:
    store = PartLog()
    data = _data(size, seed=chunk % 97)
    async with trio.open_nursery() as n:
        up = _upload(store, n, concurrency=3)
        await _write_all(up, data, chunk)
        assert up.size == size
        etag = await up.commit()
        await up.close()
    obj = store.objects["k"]
    assert obj.data == data
    assert obj.etag == etag
    assert obj.metadata == META
    full, tail = divmod(size, PART)
    if size < PART:
        assert store.counts["PutObject"] == 1
        assert store.parts == []
    else:
        assert store.counts["PutObject"] == 1  # only the upload's marker (store/markers.py)
        expected = [(i + 1, PART) for i in range(full)] + ([(full + 1, tail)] if tail else [])
        assert sorted(store.parts) == expected  # exactly-full: no empty last part
        assert etag.endswith(f'-{len(expected)}"')
        # Parts are numbered in the order their bytes were written.
        assert [n for n, _ in store.parts[:full]] == list(range(1, full + 1))
    assert store.uploads == {}


async def test_one_byte_writes_across_a_part_boundary() -> None:
    store = PartLog()
    data = _data(PART + 6, seed=5)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, data[:PART - 3])
        await _write_all(up, data[PART - 3:], 1, offset=PART - 3)
        assert up.buffered_bytes == 6
        await up.commit()
    assert store.objects["k"].data == data
    assert sorted(store.parts) == [(1, PART), (2, 6)]


async def test_small_file_is_one_put_and_no_multipart() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await _write_all(up, b"x" * 3000, 1000)
        await up.commit()
        await up.close()
    assert store.calls == ["put"]
    assert store.counts == {"PutObject": 1}
    assert await store.get_range("k", 0, 10_000) == b"x" * 3000


async def test_empty_commit_stores_an_empty_object() -> None:
    store = MemoryStore()
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        assert (up.size, up.etag) == (0, None)
        etag = await up.commit()
        assert up.state is State.CLEAN and up.etag == etag
    assert store.objects["k"].data == b""
    assert store.counts == {"PutObject": 1}


async def test_commit_again_without_writes_sends_nothing() -> None:
    store = MemoryStore()
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, _data(PART + 10))
        first = await up.commit()
        before = dict(store.counts)
        assert await up.commit() == first
        assert dict(store.counts) == before


async def test_metadata_is_read_when_the_upload_starts() -> None:
    store = MemoryStore()
    meta = {"mode": "33188"}
    async with trio.open_nursery() as n:
        up = _upload(store, n, metadata=lambda: dict(meta))
        await up.write(0, b"a" * 10)
        meta["mode"] = "33152"  # chmod before anything left: rides on the PutObject
        await up.commit()
    assert store.objects["k"].metadata == {"mode": "33152"}


# -- backpressure --------------------------------------------------------------------------


async def test_write_blocks_when_concurrency_parts_are_in_flight() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    gate = store.gate("upload_part")
    data = _data(3 * PART + 100)
    async with trio.open_nursery() as n:
        up = _upload(store, n, concurrency=2)
        await up.write(0, data[:PART])
        await up.write(PART, data[PART:2 * PART])  # two parts in flight: still allowed
        await trio.testing.wait_all_tasks_blocked()
        assert store.waiting["upload_part"] == 2

        third_done = trio.Event()

        async def third() -> None:
            await up.write(2 * PART, data[2 * PART:3 * PART])
            third_done.set()

        n.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not third_done.is_set()  # a third full buffer waits for a free slot
        assert store.started["upload_part"] == 2
        assert up.budget.in_flight == 2

        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert third_done.is_set()
        assert store.started["upload_part"] == 3
        await up.write(3 * PART, data[3 * PART:])
        await up.commit()
    assert mem.objects["k"].data == data


async def test_commit_waits_for_parts_in_flight() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    gate = store.gate("upload_part")
    data = _data(2 * PART)  # full parts only: commit has nothing to send, only to wait
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, data)
        committed = trio.Event()

        async def commit() -> None:
            await up.commit()
            committed.set()

        n.start_soon(commit)
        await trio.testing.wait_all_tasks_blocked()
        assert not committed.is_set()
        assert store.counts["CompleteMultipartUpload"] == 0
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert committed.is_set()
    assert mem.objects["k"].data == data


async def test_global_budget_limits_parts_across_uploads() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    gate = store.gate("upload_part")
    budget = PartBudget(2)
    a_data, b_data = _data(2 * PART + 1, 1), _data(2 * PART + 2, 2)
    async with trio.open_nursery() as n:
        a = _upload(store, n, key="a", concurrency=4, budget=budget)
        b = _upload(store, n, key="b", concurrency=4, budget=budget)
        await a.write(0, a_data[:PART])
        await b.write(0, b_data[:PART])
        await trio.testing.wait_all_tasks_blocked()
        assert budget.in_flight == 2

        done: list[str] = []

        async def second_part(up: Upload, data: bytes, name: str) -> None:
            await up.write(PART, data[PART:2 * PART])
            done.append(name)

        n.start_soon(second_part, a, a_data, "a")
        n.start_soon(second_part, b, b_data, "b")
        await trio.testing.wait_all_tasks_blocked()
        # Each file may have 4 parts in flight, but the mount-wide budget holds only 2.
        assert done == []
        assert budget.in_flight == 2
        assert store.started["upload_part"] == 2

        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(done) == ["a", "b"]
        await a.write(2 * PART, a_data[2 * PART:])
        await b.write(2 * PART, b_data[2 * PART:])
        await a.commit()
        await b.commit()
    assert budget.in_flight == 0
    assert mem.objects["a"].data == a_data
    assert mem.objects["b"].data == b_data


# -- failures ------------------------------------------------------------------------------


async def _expect_eio(call: Awaitable[object]) -> None:
    with pytest.raises(FsError) as exc:
        await call
    assert exc.value.errno == errno.EIO


async def test_part_failure_seen_at_commit_aborts_the_upload() -> None:
    """The part fails and its task finishes before the writer commits (the common case:
    the application is slower than S3's error)."""
    mem = MemoryStore()
    store = FaultyStore(mem)
    store.fail("upload_part", _fault(), nth=1)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, _data(PART + 100))
        await trio.testing.wait_all_tasks_blocked()  # part 1 has failed by now
        await _expect_eio(up.commit())
        assert await store.list_uploads() == []  # no parts left behind in S3
        await _expect_eio(up.write(PART + 100, b"more"))
        await _expect_eio(up.commit())
        await up.close()
        assert await store.list_uploads() == []
    assert "k" not in mem.objects


async def test_part_failure_while_commit_drains_aborts_the_upload() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    store.fail("upload_part", _fault(), nth=2)
    gate = store.gate("upload_part")
    async with trio.open_nursery() as n:
        up = _upload(store, n, concurrency=3)
        await up.write(0, _data(2 * PART + 100))
        result: list[BaseException | None] = []

        async def commit() -> None:
            try:
                await up.commit()
                result.append(None)
            except FsError as exc:
                result.append(exc)

        n.start_soon(commit)
        await trio.testing.wait_all_tasks_blocked()
        assert result == []
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(result) == 1 and isinstance(result[0], FsError)
        assert result[0].errno == errno.EIO
        assert up.state is State.FAILED
        assert await store.list_uploads() == []
        assert store.counts["CompleteMultipartUpload"] == 0
        await _expect_eio(up.write(2 * PART + 100, b"x"))
        await _expect_eio(up.commit())
    assert "k" not in mem.objects


async def test_part_failure_seen_by_a_later_write_aborts_the_upload() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    store.fail("upload_part", _fault(), nth=1)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, _data(PART))
        await trio.testing.wait_all_tasks_blocked()
        await _expect_eio(up.write(PART, b"next"))
        assert up.state is State.FAILED
        await up.close()
        assert await store.list_uploads() == []


async def test_existing_object_survives_a_failed_overwrite() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    await store.put("k", b"the previous object", metadata={"mode": "1"})
    store.fail("complete_upload", _fault(), nth=1)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, _data(PART + 1))
        await _expect_eio(up.commit())
        assert await store.list_uploads() == []
    obj = mem.objects["k"]
    assert (obj.data, obj.metadata) == (b"the previous object", {"mode": "1"})


async def test_failed_single_put_fails_later_commits() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    await store.put("k", b"old", metadata={})
    store.fail("put", _fault(), nth=2)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, b"new")
        await _expect_eio(up.commit())
        store.heal("put")
        await _expect_eio(up.commit())  # FAILED is final: no silent retry with lost state
        await _expect_eio(up.write(3, b"!"))
    assert await store.get_range("k", 0, 10) == b"old"


async def test_create_upload_failure_fails_the_write() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    store.fail("create_upload", _fault(), nth=1)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await _expect_eio(up.write(0, _data(PART)))
        await _expect_eio(up.commit())
    assert store.counts["PutObject"] == 0
    assert await store.list_uploads() == []


# -- the errno a failure reaches the caller with (errors.errno_for) ------------------------

# (error, the errno write/close must give): S3 refusing is EACCES, the storage failing is EIO.
FAILURES: dict[str, tuple[Callable[[], StoreError], int]] = {
    "AccessDenied": (lambda: AccessDenied("injected: access denied", code="AccessDenied",
                                          status=403), errno.EACCES),
    "InternalError": (_fault, errno.EIO),
    "Unreachable": (lambda: Unreachable("injected: connection reset",
                                        code="ConnectionClosedError"), errno.EIO),
    "NoSuchUpload": (lambda: NoSuchUpload("injected: upload gone", code="NoSuchUpload",
                                          status=404), errno.EIO),
}


async def _expect_errno(code: int, call: Awaitable[object]) -> None:
    with pytest.raises(FsError) as exc:
        await call
    assert exc.value.errno == code, exc.value


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("op", ["put", "create_upload", "complete_upload"])
async def test_a_failed_request_gives_its_errno_now_and_later(failure: str, op: str) -> None:
    """The call that sends the request fails with the table's errno, and so does every later
    write and commit of the failed upload; the previous object stays."""
    make, code = FAILURES[failure]
    mem = MemoryStore()
    store = FaultyStore(mem)
    await store.put("k", b"previous", metadata={})
    store.fail(op, make(), nth=2 if op == "put" else 1)  # put 1 was the previous object
    size = 3000 if op == "put" else PART + 3000
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        if op == "create_upload":  # sent when the first part is full
            await _expect_errno(code, up.write(0, _data(size)))
        else:
            await up.write(0, _data(size))
            await _expect_errno(code, up.commit())
        assert up.state is State.FAILED
        await _expect_errno(code, up.write(size, b"more"))
        await _expect_errno(code, up.commit())
        await up.close()
    assert mem.objects["k"].data == b"previous"
    assert await store.list_uploads() == []


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failed_part_gives_its_errno_to_the_next_write(failure: str) -> None:
    make, code = FAILURES[failure]
    mem = MemoryStore()
    store = FaultyStore(mem)
    store.fail("upload_part", make(), nth=1)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, _data(PART))
        await trio.testing.wait_all_tasks_blocked()  # part 1 has failed by now
        await _expect_errno(code, up.write(PART, b"next"))
        await _expect_errno(code, up.commit())
        await up.close()
    assert "k" not in mem.objects
    assert await store.list_uploads() == []


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_part_failing_while_commit_drains_gives_its_errno(failure: str) -> None:
    make, code = FAILURES[failure]
    mem = MemoryStore()
    store = FaultyStore(mem)
    store.fail("upload_part", make(), nth=1)
    gate = store.gate("upload_part")
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, _data(PART + 100))
        result: list[int] = []

        async def commit() -> None:
            with pytest.raises(FsError) as exc:
                await up.commit()
            result.append(exc.value.errno)

        n.start_soon(commit)
        await trio.testing.wait_all_tasks_blocked()
        assert result == [] and store.waiting["upload_part"] == 1  # commit waits for part 1
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert result == [code]
    assert "k" not in mem.objects
    assert await store.list_uploads() == []


# -- continuing after a commit -------------------------------------------------------------


async def test_commit_then_more_writes_then_commit_stores_the_longer_file() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    data = _data(PART + 3000, 3)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, data[:PART + 1000])
        first = await up.commit()
        assert mem.objects["k"].data == data[:PART + 1000]
        store.calls.clear()
        before = Counter(mem.counts)
        await up.write(PART + 1000, data[PART + 1000:])
        assert up.state is State.DIRTY
        second = await up.commit()
    assert second != first
    assert mem.objects["k"].data == data
    # The committed full part is copied server side; only the tail is sent again.
    assert store.calls == ["create_upload", "upload_part_copy", "upload_part",
                           "complete_upload"]
    # ... and the store marks the upload while it is open (store/markers.py)
    assert mem.counts - before == Counter({
        "CreateMultipartUpload": 1, "PutObject": 1, "UploadPartCopy": 1, "UploadPart": 1,
        "CompleteMultipartUpload": 1, "DeleteObject": 1})
    assert await store.list_uploads() == []


async def test_continuation_that_fills_more_parts() -> None:
    store = PartLog()
    data = _data(3 * PART + 77, 8)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, data[:PART + 10])
        await up.commit()
        await _write_all(up, data[PART + 10:2 * PART + 20], MiB, offset=PART + 10)
        await up.commit()
        assert store.objects["k"].data == data[:2 * PART + 20]
        await _write_all(up, data[2 * PART + 20:], 3 * MiB, offset=2 * PART + 20)
        await up.commit()
    assert store.objects["k"].data == data
    assert store.counts["UploadPartCopy"] == 2  # one per continued commit: its base part(s)
    assert store.uploads == {}


async def test_continuation_after_a_single_put() -> None:
    store = MemoryStore()
    data = _data(PART + 500, 4)
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, data[:100])
        await up.commit()
        assert store.objects["k"].data == data[:100]
        await up.write(100, data[100:])
        await up.commit()
    assert store.objects["k"].data == data
    assert store.counts["PutObject"] == 2  # the 100 bytes + the upload's marker (markers.py)
    assert store.counts["CompleteMultipartUpload"] == 1


async def test_continuation_refuses_to_splice_a_replaced_object() -> None:
    store = MemoryStore()
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, _data(PART + 10))
        await up.commit()
        await store.put("k", b"someone else's object", metadata={})
        await up.write(PART + 10, b"more")
        with pytest.raises(FsError) as exc:
            await up.commit()
        assert exc.value.errno == errno.ESTALE  # as a read of a replaced object
        assert isinstance(exc.value.__cause__, PreconditionFailed)
    assert store.objects["k"].data == b"someone else's object"
    assert store.uploads == {}


async def test_append_to_an_existing_large_object_copies_it_server_side() -> None:
    mem = MemoryStore()
    store = FaultyStore(mem)
    old = _data(PART + 300, 6)
    etag = await store.put("k", old, metadata={})
    store.calls.clear()
    async with trio.open_nursery() as n:
        cfg = UploadConfig(part_size=PART, concurrency=2, memory_limit=8 * PART)
        up = Upload(store, "k", cfg=cfg, budget=PartBudget(8), nursery=n,
                    metadata=lambda: META, existing=Existing(etag, len(old)))
        assert (up.state, up.size) == (State.CLEAN, len(old))
        await up.commit()  # nothing changed: nothing sent
        assert store.calls == []
        await up.write(len(old), b"appended")
        await up.commit()
    assert mem.objects["k"].data == old + b"appended"
    assert "get_range" not in store.calls  # the old bytes never came down
    assert store.calls.count("upload_part_copy") == 1


async def test_in_place_edit_of_a_small_existing_object() -> None:
    store = MemoryStore()
    etag = await store.put("k", b"hello world", metadata={})
    async with trio.open_nursery() as n:
        cfg = UploadConfig(part_size=PART, concurrency=2, memory_limit=8 * PART)
        up = Upload(store, "k", cfg=cfg, budget=PartBudget(8), nursery=n,
                    metadata=lambda: META, existing=Existing(etag, 11))
        await up.write(0, b"J")
        await up.write(11, b"!")
        await up.commit()
    assert store.objects["k"].data == b"Jello world!"


async def test_existing_object_replaced_before_the_first_write_is_not_spliced() -> None:
    store = MemoryStore()
    etag = await store.put("k", b"hello world", metadata={})
    await store.put("k", b"other writer", metadata={})
    async with trio.open_nursery() as n:
        cfg = UploadConfig(part_size=PART, concurrency=2, memory_limit=8 * PART)
        up = Upload(store, "k", cfg=cfg, budget=PartBudget(8), nursery=n,
                    metadata=lambda: META, existing=Existing(etag, 11))
        await _expect_errno(errno.ESTALE, up.write(11, b"!"))
    assert store.objects["k"].data == b"other writer"


async def test_existing_object_deleted_before_the_first_write_is_enoent() -> None:
    store = MemoryStore()
    etag = await store.put("k", b"hello world", metadata={})
    await store.delete("k")
    async with trio.open_nursery() as n:
        cfg = UploadConfig(part_size=PART, concurrency=2, memory_limit=8 * PART)
        up = Upload(store, "k", cfg=cfg, budget=PartBudget(8), nursery=n,
                    metadata=lambda: META, existing=Existing(etag, 11))
        await _expect_errno(errno.ENOENT, up.write(11, b"!"))
        await _expect_errno(errno.ENOENT, up.commit())
    assert store.objects == {}


@pytest.mark.parametrize("size", [11, PART + 11])  # fetched / copied server side
async def test_appending_to_an_archived_object_is_eacces(size: int) -> None:
    """S3 refuses to read or copy a DEEP_ARCHIVE object until restored (NeedsRestore): the
    append fails as a read of it does, with EACCES, and the object stays as it was."""
    store = MemoryStore()
    old = _data(size)
    etag = await store.put("k", old, metadata={})
    store.objects["k"].props["StorageClass"] = "DEEP_ARCHIVE"
    async with trio.open_nursery() as n:
        cfg = UploadConfig(part_size=PART, concurrency=2, memory_limit=8 * PART)
        up = Upload(store, "k", cfg=cfg, budget=PartBudget(8), nursery=n,
                    metadata=lambda: META, existing=Existing(etag, size))
        if size < PART:  # the first write fetches the object into the buffer
            await _expect_errno(errno.EACCES, up.write(size, b"!"))
        else:  # the commit copies it as the first part
            await up.write(size, b"!")
            await _expect_errno(errno.EACCES, up.commit())
        await _expect_errno(errno.EACCES, up.commit())
    assert store.objects["k"].data == old
    assert store.uploads == {}


# -- refusals ------------------------------------------------------------------------------


async def test_write_into_an_uploaded_part_is_einval_and_aborts() -> None:
    """The filling buffer, part 1 and the newest parts whose buffers the pool still keeps
    (heldparts.py) can be rewritten; a write into an older part already sent cannot be
    honoured, so the upload is given up."""
    store = MemoryStore()
    await store.put("k", b"previous", metadata={})
    async with trio.open_nursery() as n:
        up = _upload(store, n, concurrency=1)  # rewrite window: 1 part
        await up.write(0, _data(4 * PART + 10))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(FsError) as exc:
            await up.write(PART + 5, b"x")  # inside part 2: its buffer went to part 4
        assert exc.value.errno == errno.EINVAL
        assert up.state is State.FAILED
        assert store.uploads == {}
        await _expect_eio(up.write(4 * PART + 10, b"more"))
        await _expect_eio(up.commit())
    assert store.objects["k"].data == b"previous"


async def test_write_into_the_committed_base_edits_it() -> None:
    store = MemoryStore()
    data = bytearray(_data(PART + 10))
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, bytes(data))
        await up.commit()
        await up.write(100, b"x")  # the committed object is the base: an in-place edit
        await up.commit()
    data[100:101] = b"x"
    assert store.objects["k"].data == data
    assert store.uploads == {}


async def test_rewrites_within_the_buffer_and_part_1_and_gaps() -> None:
    store = MemoryStore()
    data = bytearray(_data(PART + 100))
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, bytes(data))
        await trio.testing.wait_all_tasks_blocked()  # part 1 has been uploaded
        await up.write(PART + 10, b"TAIL")  # in the filling buffer
        await up.write(0, b"HEADER")  # a header patched after the body: part 1
        await up.write(PART + 200, b"!")  # past the end: the gap reads as zeros
        await up.commit()
    data[PART + 10:PART + 14] = b"TAIL"
    data[0:6] = b"HEADER"
    expected = bytes(data) + bytes(100) + b"!"
    assert store.objects["k"].data == expected


async def test_write_past_the_largest_file_is_efbig_and_changes_nothing() -> None:
    store = MemoryStore()
    async with trio.open_nursery() as n:
        up = _upload(store, n, max_parts=2)
        full = capacity(PART, 2)  # parts grow: PART, then 2 * PART
        assert full == 3 * PART
        await up.write(0, _data(full))
        with pytest.raises(FsError) as exc:
            await up.truncate(full + 1)
        assert exc.value.errno == errno.EFBIG
        assert (up.state, up.size) == (State.DIRTY, full)  # refused before any change
        with pytest.raises(FsError) as exc:
            await up.write(full, b"one byte too many")
        assert exc.value.errno == errno.EFBIG
        assert up.state is State.FAILED  # a file that cannot be stored whole: none of it
        with pytest.raises(FsError):
            await up.commit()
        await up.close()
    assert "k" not in store.objects
    assert store.uploads == {}


async def test_max_parts_exactly_used_commits() -> None:
    store = MemoryStore()
    data = _data(PART + 9)
    async with trio.open_nursery() as n:
        up = _upload(store, n, max_parts=2)
        await up.write(0, data)
        await up.commit()
    assert store.objects["k"].data == data


async def test_abort_drops_uncommitted_bytes() -> None:
    store = MemoryStore()
    await store.put("k", b"kept", metadata={})
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, _data(PART + 1))
        await trio.testing.wait_all_tasks_blocked()
        assert len(store.uploads) == 1
        await up.abort("unmounted")
        await _expect_eio(up.commit())
    assert store.objects["k"].data == b"kept"
    assert store.uploads == {}


async def test_discard_accepts_writes_and_stores_nothing() -> None:
    store = MemoryStore()
    async with trio.open_nursery() as n:
        up = _upload(store, n)
        await up.write(0, _data(PART + 1))
        await up.discard()
        assert await up.write(PART + 1, b"dropped") == 7
        await up.commit()
        await up.close()
    assert store.objects == {}
    assert store.uploads == {}


# -- copy_ranges ---------------------------------------------------------------------------


@given(st.one_of(st.integers(0, 3 * MAX_PART_SIZE),
                 st.integers(0, MAX_PARTS * MAX_PART_SIZE),
                 st.sampled_from([MIN_PART_SIZE - 1, MIN_PART_SIZE, MAX_PART_SIZE,
                                  MAX_PART_SIZE + 1, 2 * MAX_PART_SIZE - 1,
                                  2 * MAX_PART_SIZE + 1, MAX_PARTS * MAX_PART_SIZE])))
def test_copy_ranges(length: int) -> None:
    ranges = copy_ranges(length)
    if length == 0:
        assert ranges == []
        return
    assert ranges[0][0] == 0
    assert ranges[-1][1] == length
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert end == start  # contiguous, no overlap
    for start, end in ranges:
        assert 0 < end - start <= MAX_PART_SIZE
        if length >= MIN_PART_SIZE:
            assert end - start >= MIN_PART_SIZE
    assert len(ranges) == -(-length // MAX_PART_SIZE)  # no more copies than needed
