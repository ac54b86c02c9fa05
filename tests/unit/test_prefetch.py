"""The read prefetcher (s3mpfs.prefetch) on MemoryStore: correctness for any read pattern,
growing GETs for sequential reads, small GETs after a seek, pinned versions, bounded memory,
cancellation on release."""

from __future__ import annotations

import errno
import functools
import os
import random
from collections.abc import Awaitable, Sequence

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3mpfs.config import INITIAL_WINDOW, MAX_BUFFER, REQUEST_SIZE, MiB, ReadConfig
from s3mpfs.errors import FsError, StoreError
from s3mpfs.fs import Filesystem, FsOptions
from s3mpfs.inodes import ROOT_INODE
from s3mpfs.prefetch import SPARE_BUFFERS, ReadBudget, Reader
from s3mpfs.store.base import Buffers, Deliver, fill
from s3mpfs.store.memory import MemoryStore
from tests.helpers.faults import FaultyStore

KiB = 1024
KEY = "obj"

# Small enough that a few MiB cross many chunk boundaries, windows and evictions.
SMALL = ReadConfig(initial_window=64 * KiB, max_window=1 * MiB, request_size=256 * KiB,
                   keep_behind=128 * KiB, seek_tolerance=128 * KiB, max_buffer=1 * MiB)
# Odd sizes, nothing kept behind, no seek tolerance: for small objects only.
TINY = ReadConfig(initial_window=1000, max_window=7001, request_size=3001, keep_behind=0,
                  seek_tolerance=0, max_buffer=9003)


@functools.cache
def blob() -> bytes:
    """64 MiB of random bytes: no two offsets look alike, so a misplaced byte shows."""
    return os.urandom(64 * MiB)


class RecordingStore(MemoryStore):
    """MemoryStore that records every GetObject range and how many run at once; with
    `latency` (virtual seconds, for trio's MockClock) each GET takes latency + size/bandwidth."""

    def __init__(self, latency: float = 0.0, bandwidth: float = 500e6) -> None:
        super().__init__()
        self.ranges: list[tuple[int, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.latency, self.bandwidth = latency, bandwidth

    async def get_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        self.ranges.append((start, end))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await trio.sleep(self.latency + (end - start) / self.bandwidth)
            return await super().get_range(key, start, end, if_match=if_match)
        finally:
            self.in_flight -= 1

    async def get_pieces(self, key: str, start: int, sizes: Sequence[int], deliver: Deliver, *,
                         if_match: str | None = None, buffers: Buffers | None = None) -> None:
        """One GET (one entry in `ranges`) whose pieces arrive one after another."""
        end = start + sum(sizes)
        self.ranges.append((start, end))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            data = await MemoryStore.get_range(self, key, start, end, if_match=if_match)
            if self.latency:
                await trio.sleep(self.latency)
            pos = 0
            for i, size in enumerate(sizes):
                if self.latency:
                    await trio.sleep(size / self.bandwidth)
                if not deliver(i, fill(buffers, data[pos:pos + size], size)):
                    return
                pos += size
        finally:
            self.in_flight -= 1


async def _put(store: MemoryStore, data: bytes, key: str = KEY) -> str:
    return await store.put(key, data, metadata={})


async def _errno(call: Awaitable[object]) -> int:
    with pytest.raises(FsError) as exc:
        await call
    return exc.value.errno


def _reader(store: MemoryStore | FaultyStore, etag: str, size: int, nursery: trio.Nursery,
            **kw: object) -> Reader:
    return Reader(store, KEY, etag, size, nursery=nursery, **kw)  # type: ignore[arg-type]


# -- any read pattern returns the object's bytes --------------------------------------------

_sizes = st.one_of(st.integers(0, 64 * KiB), st.integers(0, 4 * MiB), st.integers(0, 40 * MiB),
                   st.sampled_from([0, 1, INITIAL_WINDOW, REQUEST_SIZE, REQUEST_SIZE + 1]))
# One step: a sequential run (start as a fraction of the size, read length, count), or a batch
# of adjacent reads issued concurrently in a shuffled order (the kernel's readahead does that).
_run = st.tuples(st.just("run"), st.floats(0, 1), st.sampled_from([1, 4 * KiB, 128 * KiB, MiB,
                                                                   3 * MiB + 5]),
                 st.integers(1, 40))
_lengths = st.one_of(st.integers(1, 2 * MiB), st.sampled_from([128 * KiB, MiB]))
_batch = st.tuples(st.just("batch"), st.floats(0, 1), _lengths, st.integers(2, 4))
_tiny_run = st.tuples(st.just("run"), st.floats(0, 1), st.integers(1, 5000), st.integers(1, 40))
_tiny_batch = st.tuples(st.just("batch"), st.floats(0, 1), st.integers(1, 5000),
                        st.integers(2, 4))


@st.composite
def _cases(draw: st.DrawFn) -> tuple[ReadConfig, int, list[tuple[str, float, int, int]]]:
    cfg = draw(st.sampled_from([ReadConfig(), SMALL, TINY]))
    if cfg is TINY:
        size = draw(st.integers(0, 100_000))
        steps = draw(st.lists(st.one_of(_tiny_run, _tiny_batch), min_size=1, max_size=8))
    else:
        size = draw(_sizes)
        steps = draw(st.lists(st.one_of(_run, _batch), min_size=1, max_size=8))
    return cfg, size, steps


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases(), budget_limit=st.sampled_from([0, 512 * KiB, 256 * MiB]),
       seed=st.integers(0, 2**32 - 1))
async def test_every_read_returns_the_objects_bytes(
    case: tuple[ReadConfig, int, list[tuple[str, float, int, int]]], budget_limit: int,
    seed: int,
) -> None:
    cfg, size, steps = case
    obj = blob()[:size]
    store = MemoryStore()
    etag = await _put(store, obj)
    budget = ReadBudget(budget_limit)
    rng = random.Random(seed)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, size, n, budget=budget, config=cfg)

        async def check(off: int, length: int) -> None:
            got = await reader.read(off, length)
            assert got == obj[off:off + length], (off, length)
            assert reader.buffered <= cfg.max_buffer

        for kind, where, length, count in steps:
            off = int(where * (size + 64 * KiB))  # sometimes past the end
            if kind == "run":
                for i in range(count):
                    await check(off + i * length, length)
            else:
                offsets = [off + i * length for i in range(count)]
                rng.shuffle(offsets)
                async with trio.open_nursery() as batch:
                    for o in offsets:
                        batch.start_soon(check, o, length)
        assert reader.peak_buffered <= cfg.max_buffer
        await reader.close()
    assert reader.buffered == 0
    assert budget.used == 0


# -- sequential reads: a small first GET, then growing ones, several in flight ---------------


async def test_sequential_read_starts_small_and_grows() -> None:
    obj = blob()
    store = RecordingStore()
    etag = await _put(store, obj)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        for off in range(0, len(obj), 128 * KiB):
            assert await reader.read(off, 128 * KiB) == obj[off:off + 128 * KiB]
        await reader.close()
    ranges = reader.ranges  # in the order they were scheduled (tasks may start in any order)
    # GETs: chunks scheduled together share one GET (a run), so each GET starts where a chunk
    # does, and together they fetch every byte once.
    gets = sorted(store.ranges)
    assert [s for s, _ in gets] == [0] + [e for _, e in gets[:-1]] and gets[-1][1] == len(obj)
    assert {s for s, _ in gets} <= {s for s, _ in ranges}
    assert len(gets) < len(ranges), gets  # some GETs fetched runs of several chunks
    assert ranges[0] == (0, INITIAL_WINDOW)  # first byte fast: `head` waits for 1.1 MiB only
    # Every byte fetched exactly once, in order.
    assert [s for s, _ in ranges] == [0] + [e for _, e in ranges[:-1]]
    assert ranges[-1][1] == len(obj)
    sizes = [e - s for s, e in ranges]
    assert max(sizes) == REQUEST_SIZE
    first_full = sizes.index(REQUEST_SIZE)
    assert first_full >= 3, sizes  # it grew through several sizes ...
    assert sizes[:first_full] == sorted(set(sizes[:first_full])), sizes  # ... strictly upwards
    assert all(s == REQUEST_SIZE for s in sizes[first_full:-1]), sizes  # ... then full requests
    assert len(ranges) <= len(obj) // REQUEST_SIZE + first_full + 1
    assert reader.fetched == reader.served == len(obj)
    assert reader.peak_buffered <= MAX_BUFFER


async def test_sequential_read_keeps_several_gets_in_flight(
        autojump_clock: trio.testing.MockClock) -> None:
    # Each GET costs 20 ms + size at 500 MB/s of virtual time; reading 64 MiB one GET at a time
    # would take len(ranges) * 20 ms + 134 ms.
    obj = blob()
    store = RecordingStore(latency=0.02)
    etag = await _put(store, obj)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        t0 = trio.current_time()
        for off in range(0, len(obj), MiB):
            assert await reader.read(off, MiB) == obj[off:off + MiB]
        elapsed = trio.current_time() - t0
        await reader.close()
    assert store.max_in_flight >= 2  # a run of chunks and the next one
    # Each GET gets its own 500 MB/s here, so the few large GETs of runs overlap less than
    # many small ones would (on a real link they share it); still clearly not one at a time.
    serial = sum(0.02 + (e - s) / 500e6 for s, e in store.ranges)
    assert elapsed < serial * 0.8, (elapsed, serial)


# -- seeks: small GETs, buffered data reused -------------------------------------------------


async def test_random_reads_fetch_small_ranges() -> None:
    obj = blob()
    store = RecordingStore()
    etag = await _put(store, obj)
    rng = random.Random(1)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        for _ in range(100):
            off = rng.randrange(len(obj) - 4 * KiB)
            assert await reader.read(off, 4 * KiB) == obj[off:off + 4 * KiB]
        await reader.close()
    fetched = sum(e - s for s, e in store.ranges)
    # The first read of a handle fetches the initial window; each later one about its own 4 KiB.
    assert fetched < INITIAL_WINDOW + 100 * 4 * KiB + 2 * INITIAL_WINDOW, fetched
    assert fetched < len(obj) // 16


async def test_seek_resets_the_window_and_sequential_reads_grow_it_again() -> None:
    obj = blob()
    store = RecordingStore()
    etag = await _put(store, obj)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        for off in range(0, 16 * MiB, 128 * KiB):
            await reader.read(off, 128 * KiB)
        before = len(store.ranges)
        far = 48 * MiB
        assert await reader.read(far, 128 * KiB) == obj[far:far + 128 * KiB]
        assert store.ranges[before] == (far, far + 128 * KiB)  # just what the read needs
        assert await reader.read(far + 128 * KiB, 128 * KiB) == obj[far + 128 * KiB:
                                                                     far + 256 * KiB]
        # Sequential again: the window restarts at INITIAL_WINDOW
        assert store.ranges[before + 1] == (far + 128 * KiB, far + 128 * KiB + INITIAL_WINDOW)
        await reader.close()


async def test_seek_backwards_into_held_data_is_served_from_memory() -> None:
    obj = blob()[:32 * MiB]
    store = RecordingStore()
    etag = await _put(store, obj)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        for off in range(0, 4 * MiB, 128 * KiB):
            await reader.read(off, 128 * KiB)
        gets = len(reader.ranges)  # GETs scheduled so far
        back = 4 * MiB - 512 * KiB
        assert await reader.read(back, 128 * KiB) == obj[back:back + 128 * KiB]
        assert len(reader.ranges) == gets  # no GET: it was held
        assert await reader.read(4 * MiB, 128 * KiB) == obj[4 * MiB:4 * MiB + 128 * KiB]
        # The stream went on where it was (prefetch ahead only), not restarted at the seek.
        assert all(start >= 4 * MiB for start, _ in reader.ranges[gets:])
        await reader.close()
    assert sorted(store.ranges) == sorted(reader.ranges)


async def test_out_of_order_concurrent_reads_are_each_correct() -> None:
    obj = blob()[:8 * MiB]
    inner = MemoryStore()
    etag = await _put(inner, obj)
    store = FaultyStore(inner)
    results: dict[int, bytes] = {}
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        await reader.read(0, 128 * KiB)
        gate = store.gate("get_range")

        async def read(off: int) -> None:
            results[off] = bytes(await reader.read(off, 128 * KiB))

        # Beyond the first GET, the later request first, both held at the gate together.
        base = 2 * MiB
        async with trio.open_nursery() as batch:
            batch.start_soon(read, base + 128 * KiB)
            await trio.testing.wait_all_tasks_blocked()
            batch.start_soon(read, base)
            await trio.testing.wait_all_tasks_blocked()
            assert store.waiting["get_range"] >= 2
            gate.set()
        await reader.close()
    for off, data in results.items():
        assert data == obj[off:off + 128 * KiB]
    assert sorted(results) == [base, base + 128 * KiB]


# -- versions --------------------------------------------------------------------------------


async def test_object_replaced_between_reads_is_estale() -> None:
    obj = blob()[:40 * MiB]
    store = RecordingStore()
    etag = await _put(store, obj)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        assert await reader.read(0, 128 * KiB) == obj[:128 * KiB]
        await _put(store, blob()[1:40 * MiB + 1])  # replaced: same size, other bytes
        # Bytes fetched before the change are of the pinned version: never the new one.
        assert await reader.read(256 * KiB, 128 * KiB) == obj[256 * KiB:384 * KiB]
        with pytest.raises(FsError) as exc:
            await reader.read(39 * MiB, 128 * KiB)
        assert exc.value.errno == errno.ESTALE
        assert "changed" in str(exc.value)
        await reader.close()


async def test_replaced_while_prefetching_fails_the_reads_that_need_it() -> None:
    obj = blob()[:16 * MiB]
    inner = MemoryStore()
    etag = await _put(inner, obj)
    store = FaultyStore(inner)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        await reader.read(0, 128 * KiB)
        gate = store.gate("get_range")  # hold the prefetch GETs ...
        for off in range(128 * KiB, MiB, 128 * KiB):
            await reader.read(off, 128 * KiB)
        await trio.testing.wait_all_tasks_blocked()
        assert store.waiting["get_range"] >= 1
        await _put(inner, bytes(len(obj)))  # ... while the object is replaced
        gate.set()
        assert await _errno(reader.read(2 * MiB, 128 * KiB)) == errno.ESTALE
        await reader.close()


# -- memory ----------------------------------------------------------------------------------


async def test_buffered_bytes_per_handle_never_exceed_the_cap() -> None:
    obj = blob()[:24 * MiB]
    store = MemoryStore()
    etag = await _put(store, obj)
    rng = random.Random(7)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n, config=SMALL)
        seen = 0

        async def read(off: int, length: int) -> None:
            nonlocal seen
            assert await reader.read(off, length) == obj[off:off + length]
            seen = max(seen, reader.buffered)

        for off in range(0, len(obj), 128 * KiB):  # sequential, 4 concurrent at a time
            if off % (512 * KiB) == 0:
                async with trio.open_nursery() as batch:
                    for k in range(4):
                        batch.start_soon(read, off + k * 128 * KiB, 128 * KiB)
        for _ in range(50):  # and random reads of up to 3 MiB (several requests each)
            off = rng.randrange(len(obj))
            await read(off, rng.randrange(1, 3 * MiB))
        await reader.close()
    assert 0 < seen <= reader.peak_buffered <= SMALL.max_buffer
    assert reader.buffered == 0


async def test_global_budget_is_shared_and_never_deadlocks() -> None:
    objs = [blob()[i * MiB:i * MiB + 16 * MiB] for i in range(3)]
    store = MemoryStore()
    etags = [await _put(store, o, key=f"o{i}") for i, o in enumerate(objs)]
    budget = ReadBudget(2 * MiB)  # far less than one reader's window
    read_size = 128 * KiB
    readers: list[Reader] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            for i, o in enumerate(objs):
                readers.append(Reader(store, f"o{i}", etags[i], len(o), nursery=n,
                                      budget=budget))

            async def consume(r: Reader, o: bytes) -> None:
                for off in range(0, len(o), read_size):
                    assert await r.read(off, read_size) == o[off:off + read_size]
                    await trio.lowlevel.checkpoint()  # interleave the readers

            async with trio.open_nursery() as group:
                for r, o in zip(readers, objs, strict=True):
                    group.start_soon(consume, r, o)
            for r in readers:
                await r.close()
    assert budget.used == 0
    # Prefetch only takes what is free; what reads need now may overdraw by one request each.
    assert budget.peak <= budget.limit + len(readers) * read_size
    assert all(r.fetched == r.served == 16 * MiB for r in readers)


# -- release, errors, no nursery -------------------------------------------------------------


async def test_close_cancels_gets_in_flight_and_frees_everything() -> None:
    obj = blob()[:32 * MiB]
    inner = MemoryStore()
    etag = await _put(inner, obj)
    store = FaultyStore(inner)
    budget = ReadBudget()
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n, budget=budget)
        await reader.read(0, 128 * KiB)
        store.gate("get_range")  # never opened
        for off in range(128 * KiB, MiB, 128 * KiB):
            await reader.read(off, 128 * KiB)
        await trio.testing.wait_all_tasks_blocked()
        assert store.waiting["get_range"] >= 1
        assert reader.buffered > 0 and budget.used > 0
        await reader.close()
        assert store.waiting["get_range"] == 0
        assert reader.buffered == 0 and budget.used == 0
        assert await _errno(reader.read(0, 10)) == errno.EBADF
    # The nursery exited: no task of the handle outlived close().


async def test_a_failed_prefetch_gets_a_get_of_its_own_and_fails_only_reads_needing_it() -> None:
    obj = blob()[:16 * MiB]
    inner = MemoryStore()
    etag = await _put(inner, obj)
    store = FaultyStore(inner)
    store.fail("get_range", StoreError("boom", code="InternalError"), nth=2)  # any GET
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        for off in range(0, INITIAL_WINDOW - 128 * KiB, 128 * KiB):  # served by GET 1
            assert await reader.read(off, 128 * KiB) == obj[off:off + 128 * KiB]
        inside = INITIAL_WINDOW + 64 * KiB  # inside GET 2 (the first prefetch), which failed
        assert await reader.read(inside, 128 * KiB) == obj[inside:inside + 128 * KiB]
        await trio.testing.wait_all_tasks_blocked()
        assert store.started["get_range"] == len(reader.ranges) + 1  # GET 2's, once more
        # GETs that keep failing fail the read that needs them; a later read tries again.
        store.fail("get_range", StoreError("boom", code="InternalError"),
                   nth=store.started["get_range"] + 1, and_after=True)
        far = 12 * MiB  # a seek: a GET of its own
        with pytest.raises(StoreError):
            await reader.read(far, 128 * KiB)
        store.heal("get_range")
        assert await reader.read(far, 128 * KiB) == obj[far:far + 128 * KiB]
        await reader.close()


async def test_reads_up_to_and_past_the_end() -> None:
    obj = blob()[:4 * MiB]
    store = RecordingStore()
    etag = await _put(store, obj)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n)
        assert await reader.read(100, 1000) == obj[100:1100]
        assert await reader.read(len(obj) - 5, 100) == obj[-5:]  # a seek: cut at the end
        assert await reader.read(len(obj), 100) == b""
        assert await reader.read(len(obj) + 10, 100) == b""
        assert all(end <= len(obj) for _, end in store.ranges)
        await reader.close()
        assert reader.buffered == 0


async def test_empty_object_and_reads_past_the_end() -> None:
    store = RecordingStore()
    etag = await _put(store, b"")
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, 0, n)
        assert await reader.read(0, 4096) == b""
        assert await reader.read(10, 4096) == b""
        await reader.close()
    assert store.ranges == []


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="three requests"):
        ReadConfig(request_size=MiB, max_buffer=2 * MiB)
    with pytest.raises(ValueError, match="max_window"):
        ReadConfig(initial_window=2 * MiB, max_window=MiB)


# -- through the filesystem ------------------------------------------------------------------


async def test_file_written_and_closed_reads_back_exactly() -> None:
    data = blob()[:13 * MiB + 77]
    store = MemoryStore()
    async with trio.open_nursery() as n:
        fs = Filesystem(store, FsOptions(uid=1000, gid=1000))
        fs.start(n)
        inode, fh = await fs.create(ROOT_INODE, "f", 0o644, 1000, 1000)
        for off in range(0, len(data), MiB):
            await fs.write(fh, off, data[off:off + MiB])
        await fs.flush(fh)
        await fs.release(fh)
        fh = await fs.open(inode.ino, os.O_RDONLY)
        got = b"".join([await fs.read(fh, off, 128 * KiB)
                        for off in range(0, len(data), 128 * KiB)])
        assert got == data
        await fs.release(fh)
        assert fs.reads.budget.used == 0


# -- runs: one GET for several chunks -------------------------------------------------------

RUNS = ReadConfig(initial_window=64 * KiB, max_window=1 * MiB, request_size=128 * KiB,
                  keep_behind=0, seek_tolerance=128 * KiB, max_buffer=2 * MiB)


class BreakingStore(RecordingStore):
    """Every run's GET delivers its first piece, then the connection breaks (a transient
    error); single-chunk GETs work."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = 0

    async def get_pieces(self, key: str, start: int, sizes: Sequence[int], deliver: Deliver, *,
                         if_match: str | None = None, buffers: Buffers | None = None) -> None:
        calls = 0

        def one(i: int, data: bytes | memoryview) -> bool:
            nonlocal calls
            calls += 1
            return deliver(i, data) and False  # stop after the first piece ...

        await super().get_pieces(key, start, sizes, one, if_match=if_match, buffers=buffers)
        if calls and len(sizes) > 1:
            self.broken += 1
            raise StoreError("connection reset mid-body", code="ConnectionResetError")


async def test_a_run_broken_part_way_falls_back_to_a_get_per_chunk() -> None:
    obj = blob()[:6 * MiB]
    store = BreakingStore()
    etag = await _put(store, obj)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n, config=RUNS)
        for off in range(0, len(obj), 128 * KiB):
            assert await reader.read(off, 128 * KiB) == obj[off:off + 128 * KiB]
        await reader.close()
    assert store.broken >= 3  # runs happened, and each broke after its first chunk
    assert reader.fetched == reader.served == len(obj)  # every chunk once, none lost
    assert reader.buffered == 0


async def _read_until_a_run(reader: Reader, store: RecordingStore, obj: bytes) -> int:
    """Read on sequentially until a GET for several chunks went out; the next offset."""
    off = 0
    while not any(e - s > RUNS.request_size for s, e in store.ranges):
        assert await reader.read(off, 128 * KiB) == obj[off:off + 128 * KiB]
        off += 128 * KiB
    return off


async def test_a_run_for_a_replaced_object_fails_every_read_with_estale() -> None:
    obj = blob()[:6 * MiB]
    store = RecordingStore()
    etag = await _put(store, obj)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n, config=RUNS)
        off = await _read_until_a_run(reader, store, obj)
        await _put(store, b"replaced")  # the run's GET may already have its bytes: read on
        codes = set()
        while off < len(obj):
            got = reader.read(off, 128 * KiB)
            try:
                assert await got == obj[off:off + 128 * KiB]
            except FsError as exc:
                codes.add(exc.errno)
                break
            off += 128 * KiB
        await reader.close()
    assert codes == {errno.ESTALE}  # never the new object's bytes
    assert reader.buffered == 0


async def test_a_seek_away_from_a_run_stops_it() -> None:
    obj = blob()[:16 * MiB]
    store = RecordingStore(latency=0.001)
    etag = await _put(store, obj)
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n, config=RUNS)
        await _read_until_a_run(reader, store, obj)
        far = 12 * MiB
        assert await reader.read(far, 4096) == obj[far:far + 4096]  # a seek: the run is dropped
        await reader.close()
    assert reader.fetched < 8 * MiB  # the rest of the object was not downloaded
    assert reader.buffered == 0


async def test_views_returned_by_reads_stay_intact_while_buffers_are_reused() -> None:
    """A read returns a view into a pooled buffer, and pyfuse3 replies from it after read()
    has returned: a view still held must never be overwritten by a later GET, while the pool
    does not grow with the object."""
    obj = blob()[:48 * MiB]
    store = RecordingStore()
    etag = await _put(store, obj)
    budget = ReadBudget()
    held: list[tuple[int, bytes | memoryview]] = []
    async with trio.open_nursery() as n:
        reader = _reader(store, etag, len(obj), n, budget=budget, config=SMALL)
        for off in range(0, len(obj), 128 * KiB):
            got = await reader.read(off, 128 * KiB)
            if off % (4 * MiB) == 0:
                held.append((off, got))
            else:
                assert got == obj[off:off + 128 * KiB]
        views = [got for _, got in held if isinstance(got, memoryview)]
        assert views  # most reads are views
        for off, got in held:
            assert bytes(got) == obj[off:off + 128 * KiB]
        pool = budget.pool(SMALL.request_size)
        assert len(store.ranges) > 150  # 192 chunks of 256 KiB ...
        assert pool.created <= SMALL.max_buffer // SMALL.request_size + len(held) + 2  # few
        await reader.close()
    assert budget.used == 0 and len(pool) <= len(views)  # trimmed to the buffers still held
    del held, views, got
    pool.trim()
    assert len(pool) == 0


async def test_buffers_of_a_finished_read_go_back_while_another_file_stays_open() -> None:
    obj = blob()[:16 * MiB]
    store = RecordingStore()
    etag = await _put(store, obj)
    budget = ReadBudget()
    cfg = ReadConfig(initial_window=64 * KiB, max_window=2 * MiB, request_size=128 * KiB,
                     max_buffer=3 * MiB)  # up to ~20 buffers held
    async with trio.open_nursery() as n:
        idle = _reader(store, etag, len(obj), n, budget=budget, config=cfg)
        assert await idle.read(0, 4 * KiB) == obj[:4 * KiB]  # holds a chunk, stays open
        busy = _reader(store, etag, len(obj), n, budget=budget, config=cfg)
        for off in range(0, len(obj), 128 * KiB):
            assert await busy.read(off, 128 * KiB) == obj[off:off + 128 * KiB]
        pool = budget.pool(cfg.request_size)
        grown = len(pool)
        await busy.close()
        assert budget.used > 0 and grown > 2 * SPARE_BUFFERS  # else the test would mean nothing
        assert len(pool) <= len(idle._chunks) + SPARE_BUFFERS
        await idle.close()
        assert len(pool) == 0
