"""Reads of existing objects: a per-handle prefetcher of ranged GETs.

One `Reader` per open handle. It keeps a sorted list of *chunks*: byte ranges of the object,
each fetched by one ranged GET running as a trio task, then held in memory until the reader
has moved past it. A read is served from the chunks that cover it (waiting for those still in
flight); any part of it no chunk covers is fetched on demand. So reads are correct whatever
order they arrive in: the kernel's readahead sends 128 KiB-1 MiB requests, sometimes two at
once and out of order, and each one only ever copies bytes from chunks of the right range.

Sequential detection. The handle follows one *stream*: `_frontier` (the furthest byte read) and
`_next` (where the scheduled chunks end). A read that lands within the stream (from a little
before the oldest chunk held to a little past `_next`, SEEK_TOLERANCE either way) continues it;
anything else is a seek: every chunk it does not need is dropped (in-flight GETs nobody waits
for are cancelled), the window goes back to zero, and the read fetches just its own range. So
random reads never download the rest of the object, and a seek backwards into data still held
is served from memory.

The window. While the stream advances, the reader keeps `_window` bytes scheduled ahead of the
frontier. A fresh handle starts at INITIAL_WINDOW (one GET answers `head`/`file` and the
kernel's first readahead); after a seek the second sequential read starts it at INITIAL_WINDOW.
Whenever the reader has used half of what is scheduled ahead, the window doubles (up to
MAX_WINDOW) and is topped up, so GETs grow 1.1 -> 1.75 -> 3.4 -> 6.75 -> 8 MiB; at full size it
tops up once half the window is free, with chunks of 8 MiB (REQUEST_SIZE) that share one GET.

Runs. Chunks scheduled together (a top-up of several) are fetched by one GET whose body is
handed over chunk by chunk as it arrives (ObjectStore.get_pieces): a 64 MiB window costs two
32 MiB GETs in flight instead of eight 8 MiB ones, saving botocore's per-request CPU and thread
contention (1 GiB from Ceph RGW: 0.39-0.44 instead of 0.58-0.65 CPU-s in BotoStore). A chunk
nobody wants any more stops its run once no later chunk of it is wanted either; chunks a run
did not deliver (stopped, or its connection broke part way) get a GET of their own, which has
the store's retries. Every GET the reader starts is a run, of one chunk or several, and reads
into buffers of the budget's pool (readbuffers.py) instead of a new bytes object per chunk.

Memory, per handle and global. Every chunk reserves its bytes from the moment its GET is
scheduled until it is dropped and its task has ended (a cancelled GET still running in a
botocore thread keeps its reservation). Per handle, `buffered` never exceeds
`ReadConfig.max_buffer`: prefetch only takes what fits, and a read that needs bytes first drops
chunks it does not need and otherwise waits for chunks that end on their own (GETs finishing,
other reads on the handle completing); it never waits on anything only it could free. Across
all handles a `ReadBudget` caps *speculative* bytes: prefetch takes only what it has free
(a smaller GET, or none), and while it is overdrawn nothing is kept behind readers; the bytes a
read actually needs are taken unconditionally, so it is overdrawn by at most the reads being
served at once (FUSE concurrency x read size). Nothing ever waits on the global budget, so it
cannot deadlock; readers that find it spent degrade to demand GETs and pick up prefetch again
when others release.

Structured concurrency. GET tasks run in the nursery the Reader is given (the mount's); each
has its own cancel scope. `close()` (called on FUSE release) cancels every task of the handle
and waits for them to end, so nothing of a handle outlives it.

Versions. Every GET carries If-Match with the ETag pinned at open: if the object is replaced,
S3 answers 412 and the read fails with ESTALE, never with bytes spliced from two versions.

Constants (config.py, with ReadConfig; the command line sets some: cli.py), and where they
come from:
  INITIAL_WINDOW = 1 MiB + 128 KiB: mountpoint-s3's INITIAL_READ_WINDOW_SIZE (its S3 client
      config): one 1 MiB application read plus the kernel's 128 KiB readahead in one GET.
  doubling (x2): mountpoint-s3's PrefetcherConfig.sequential_prefetch_multiplier = 2.
  REQUEST_SIZE = 8 MiB: mountpoint-s3's default read part size and s3transfer's chunk size.
  KEEP_BEHIND = SEEK_TOLERANCE = 1 MiB: mountpoint-s3's max_backward_seek_distance (1 MiB),
      sized to tolerate an out-of-order Linux readahead (at most 256 KiB back, 512 KiB forward,
      per the comment on its PrefetcherConfig).
  MAX_WINDOW = 64 MiB: the issue's figure; mountpoint-s3 allows 2 GiB. Eight 8 MiB GETs in
      flight cover an in-region S3's bandwidth-delay product; on a loopback Ceph 32 MiB read
      as fast (with ~60 MiB less peak RSS), 16 MiB a little slower (bench/bench_read.py).
  DEFAULT_READ_MEMORY = 256 MiB: same order as the upload side's --memory-limit default.
"""

from __future__ import annotations

import bisect
import errno
import logging
from dataclasses import dataclass, field

import trio

from s3mpfs.config import DEFAULT_READ_MEMORY, ReadConfig
from s3mpfs.errors import FsError, NotFound, PreconditionFailed, StoreError, errno_for
from s3mpfs.readbuffers import BufferPool
from s3mpfs.store.base import ObjectStore

log = logging.getLogger(__name__)

# Free read buffers kept while any chunk is held: a top-up at full window asks for half a
# window (4 x 8 MiB) shortly after the reader has freed as much (readbuffers.py).
SPARE_BUFFERS = 4


class ReadBudget:
    """Bytes held by read chunks across every open handle (see the module docstring), and
    the buffers they are read into (readbuffers.py), dropped whenever no chunk is held."""

    def __init__(self, limit: int = DEFAULT_READ_MEMORY) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._pools: dict[int, BufferPool] = {}

    def pool(self, size: int) -> BufferPool:
        """The buffers for pieces of up to `size` bytes (one pool per request size)."""
        pool = self._pools.get(size)
        if pool is None:
            # The budget's worth, and a few more held by FUSE replies still on their way.
            pool = self._pools[size] = BufferPool(size, self.limit // size + 2)
        return pool

    def available(self) -> int:
        """What speculative bytes (prefetch) may still take; they never take more, and
        nothing ever waits for this to grow."""
        return max(0, self.limit - self.used)

    def take(self, n: int) -> None:
        """Take bytes: speculative ones within available(); bytes a read needs now always,
        so no read ever waits on other handles."""
        self.used += n
        self.peak = max(self.peak, self.used)

    def give(self, n: int) -> None:
        self.used -= n
        assert self.used >= 0, "read budget released more than was taken"
        for pool in self._pools.values():  # a few spare while reads go on, none when idle
            pool.trim(SPARE_BUFFERS if self.used else 0)


@dataclass(eq=False)
class _Chunk:
    start: int
    end: int
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | memoryview | None = None  # a view: into a buffer of the budget's pool
    error: Exception | None = None
    waiters: int = 0  # reads waiting for or copying from this chunk
    running: bool = True  # its GET task has not ended
    retired: bool = False  # no longer in the reader's list
    freed: bool = False  # its reservation is released
    run: _Run | None = None  # fetched as part of a run (one GET for several chunks)

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(eq=False)
class _Run:
    """Consecutive chunks fetched by one GET, each delivered as its bytes arrive. Its scope is
    cancelled once no chunk it has still to deliver is wanted."""

    chunks: list[_Chunk]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    delivered: int = 0

    def wanted(self) -> bool:
        return any(not c.scope.cancel_called for c in self.chunks[self.delivered:])


def _start_of(c: _Chunk) -> int:
    return c.start


class Reader:
    """Reads of one open handle of one object version (see the module docstring).

    Instrumentation (tests, debug log): `buffered` / `peak_buffered` (bytes reserved by this
    handle's chunks now / at most), `requests` and `fetched` (GETs and bytes asked for),
    `served` (bytes returned to reads), `stalls` (reads that waited for a GET), `ranges`
    (every GET's [start, end), in the order scheduled).
    """

    def __init__(
        self,
        store: ObjectStore,
        key: str,
        etag: str | None,
        size: int,
        *,
        nursery: trio.Nursery,
        budget: ReadBudget | None = None,
        config: ReadConfig | None = None,
    ) -> None:
        self.store, self.key, self.etag, self.size = store, key, etag, size
        self.cfg = config or ReadConfig()
        self.budget = budget if budget is not None else ReadBudget()
        self._nursery = nursery
        self._chunks: list[_Chunk] = []  # sorted by start, never overlapping, all end <= _next
        self._live: set[_Chunk] = set()  # every chunk not yet freed (listed or retired)
        self._fresh = True
        self._window = 0
        self._grew = False  # the window doubled on this read: time to schedule more
        self._frontier = 0
        self._next = 0
        self._changed = trio.Event()
        self._closed = False
        self.buffered = 0
        self.peak_buffered = 0
        self.requests = 0
        self.fetched = 0
        self.served = 0
        self.stalls = 0  # reads that had to wait for a GET
        self.ranges: list[tuple[int, int]] = []

    # -- reading ---------------------------------------------------------------------------

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes [offset, offset + length) of the object; usually a view into a fetched chunk
        (pyfuse3 replies from any buffer: no copy of each 1 MiB read)."""
        if self._closed:
            raise FsError(errno.EBADF, f"{self.key}: read after release")
        end = min(offset + length, self.size)
        if offset < 0 or offset >= end:
            return b""
        pieces = []
        pos = offset
        while pos < end:  # pieces of at most one request, so a piece always fits max_buffer
            stop = min(end, pos + self.cfg.request_size)
            pieces.append(await self._read_piece(pos, stop))
            pos = stop
        self.served += end - offset
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def _read_piece(self, offset: int, end: int) -> bytes | memoryview:
        self._track(offset, end)
        chunks = await self._cover(offset, end)
        try:
            self._prefetch()
            for c in chunks:
                if not c.done.is_set():
                    self.stalls += 1
                    await c.done.wait()
                if c.data is None:
                    raise self._failure(c)
            if len(chunks) == 1:
                c = chunks[0]
                assert c.data is not None
                return memoryview(c.data)[offset - c.start:end - c.start]
            parts = []
            for c in chunks:
                assert c.data is not None
                view = memoryview(c.data)
                parts.append(view[max(offset, c.start) - c.start:min(end, c.end) - c.start])
            return b"".join(parts)
        finally:
            for c in chunks:
                c.waiters -= 1
                self._settle(c)
            self._poke()

    def _failure(self, c: _Chunk) -> Exception:
        if not c.retired:  # a later read may try again (unless the object changed)
            self._retire(c)
        if isinstance(c.error, PreconditionFailed):
            log.warning("%s changed since it was opened (ETag %s): read refused", self.key,
                        self.etag)
            return FsError(errno_for(c.error),  # ESTALE
                           f"{self.key} changed since it was opened (ETag {self.etag} no "
                           "longer matches); reopen it to read the new version")
        if c.error is not None:
            return c.error
        return FsError(errno.EIO, f"{self.key}: read cancelled (handle released)")

    def _track(self, offset: int, end: int) -> None:
        """Decide whether [offset, end) continues the stream, and move the stream."""
        cfg = self.cfg
        if self._fresh:
            self._fresh = False
            self._new_stream(offset, end, cfg.initial_window)
            return
        lo = self._chunks[0].start if self._chunks else self._next
        if not lo - cfg.seek_tolerance <= offset <= self._next + cfg.seek_tolerance:
            log.debug("%s: seek to %d (stream was %d..%d)", self.key, offset, lo, self._next)
            self._new_stream(offset, end, 0)
            return
        if offset > self._next:  # a small skip forward: keep the stream, skip those bytes
            self._next = offset
        if end > self._frontier:  # sequential: advancing the frontier
            self._frontier = end
            if self._next - self._frontier <= self._window // 2:  # half the window used: grow
                self._window = min(max(2 * self._window, cfg.initial_window), cfg.max_window)
                self._grew = True
            # Data behind the reader is kept for backward seeks only while the budget allows.
            keep = cfg.keep_behind if self.budget.used <= self.budget.limit else 0
            limit = min(offset, self._frontier - keep)
            for c in [c for c in self._chunks if c.end <= limit and not c.waiters]:
                self._retire(c)

    def _new_stream(self, offset: int, end: int, window: int) -> None:
        for c in [c for c in self._chunks if c.end <= offset or c.start >= end]:
            self._retire(c)
        self._window = window
        self._frontier = end
        self._next = max([offset] + [c.end for c in self._chunks])

    async def _cover(self, offset: int, end: int) -> list[_Chunk]:
        """Schedule GETs for the parts of [offset, end) no chunk covers, and return the chunks
        covering it (registered as waited for)."""
        while True:
            gaps = self._gaps(offset, end)
            need = sum(b - a for a, b in gaps)
            if self.buffered + need <= self.cfg.max_buffer:
                break
            if not self._evict(offset, end):
                # What is left ends on its own: GETs in flight, other reads of this handle.
                changed = self._changed
                await changed.wait()
        for a, b in gaps:
            if b > self._next:  # the stream's tail: one GET for this read and what follows
                extra = 0
                if self._window:
                    target = min(self.size, a + self._window, a + self.cfg.request_size)
                    extra = max(0, min(target - b, self.cfg.max_buffer - self.buffered - (b - a),
                                       self.budget.available()))
                    self.budget.take(extra)
                self.budget.take(b - a)
                self._schedule(a, b + extra, "read")
                self._next = b + extra
            else:
                self.budget.take(b - a)
                self._schedule(a, b, "read")
        chunks = self._overlapping(offset, end)
        for c in chunks:
            c.waiters += 1
        return chunks

    def _prefetch(self) -> None:
        """Schedule GETs up to `_window` bytes past the frontier, each at most request_size.

        While the window grows, this happens only when it has just doubled (the reader used
        half of it), so each GET is bigger than the last: 1.1, 1.75, 3.4, 6.75, then 8 MiB.
        At full size it tops up whenever another whole request fits. A GET smaller than half
        the window (or a whole request) waits to grow, unless it ends the object."""
        grew, self._grew = self._grew, False
        if not self._window:
            return
        cfg = self.cfg
        if not grew and self._window < cfg.max_window:
            return
        target = min(self.size, self._frontier + self._window)
        if (self._window >= cfg.max_window and target < self.size
                and target - self._next < self._window // 2):
            return  # at full size, top up half a window at a time: one GET for several chunks
        least = min(cfg.request_size, self._window // 2)
        batch: list[_Chunk] = []
        try:
            self._prefetch_into(batch, target, least)
        finally:
            self._start(batch)

    def _prefetch_into(self, batch: list[_Chunk], target: int, least: int) -> None:
        cfg = self.cfg
        while self._next < target:
            n = min(cfg.request_size, target - self._next, cfg.max_buffer - self.buffered)
            if n <= 0 or (n < least and self._next + n < self.size):
                return
            free = self.budget.available()
            if free < n:  # the global budget is short: a smaller GET, if still worth one
                if free < min(n, cfg.initial_window):
                    return
                n = free
            self.budget.take(n)
            batch.append(self._schedule(self._next, self._next + n, "prefetch",
                                        start_task=False))
            self._next += n

    def _start(self, batch: list[_Chunk]) -> None:
        """One GET task for chunks scheduled together: a run (of one chunk, or several)."""
        if batch:
            run = _Run(batch)
            for c in batch:
                c.run = run
            self._nursery.start_soon(self._fetch_run, run)

    # -- chunks ----------------------------------------------------------------------------

    def _overlapping(self, offset: int, end: int) -> list[_Chunk]:
        i = bisect.bisect_right(self._chunks, offset, key=_start_of)
        if i and self._chunks[i - 1].end > offset:
            i -= 1
        out = []
        while i < len(self._chunks) and self._chunks[i].start < end:
            out.append(self._chunks[i])
            i += 1
        return out

    def _gaps(self, offset: int, end: int) -> list[tuple[int, int]]:
        gaps = []
        pos = offset
        for c in self._overlapping(offset, end):
            if c.start > pos:
                gaps.append((pos, c.start))
            pos = max(pos, c.end)
        if pos < end:
            gaps.append((pos, end))
        return gaps

    def _schedule(self, start: int, end: int, why: str, *, start_task: bool = True) -> _Chunk:
        """A GET of [start, end) whose bytes the caller has already taken from the budget
        (its task started here unless start_task is False: see _start)."""
        c = _Chunk(start, end)
        bisect.insort(self._chunks, c, key=_start_of)
        self._live.add(c)
        self.buffered += c.size
        self.peak_buffered = max(self.peak_buffered, self.buffered)
        self.requests += 1
        self.fetched += c.size
        self.ranges.append((start, end))
        log.debug("GET %s [%d, %d) %d bytes (%s; window %d)", self.key, start, end, c.size, why,
                  self._window)
        if start_task:
            self._start([c])
        return c

    def _check_length(self, c: _Chunk, data: bytes | memoryview) -> bytes | memoryview:
        if len(data) != c.size:
            raise StoreError(f"GetObject {self.key} [{c.start}, {c.end}) returned "
                             f"{len(data)} bytes", code="ShortRead")
        return data

    async def _fetch(self, c: _Chunk) -> None:
        try:
            with c.scope:
                data = await self.store.get_range(self.key, c.start, c.end, if_match=self.etag)
                c.data = self._check_length(c, data)
        except Exception as exc:  # kept for the read that needs it; never crashes the nursery
            c.error = exc
        finally:
            self._finish(c)

    async def _fetch_run(self, run: _Run) -> None:
        """One GET for the run's chunks, each finished as its bytes arrive. Chunks it does not
        deliver (cancelled, or the GET failed part way) get a GET of their own if still
        wanted, which has the store's retries; a changed or deleted object fails them all."""
        chunks = run.chunks

        def deliver(i: int, data: bytes | memoryview) -> bool:
            c = chunks[i]
            c.data = self._check_length(c, data)
            run.delivered = i + 1
            self._finish(c)
            return run.wanted()

        error: Exception | None = None
        try:
            with run.scope:
                await self.store.get_pieces(self.key, chunks[0].start, [c.size for c in chunks],
                                            deliver, if_match=self.etag,
                                            buffers=self.budget.pool(self.cfg.request_size).take)
        except Exception as exc:
            error = exc
        finally:
            for c in chunks[run.delivered:]:
                c.run = None
                if isinstance(error, PreconditionFailed | NotFound):
                    c.error = error
                    self._finish(c)
                elif c.scope.cancel_called:
                    self._finish(c)  # nobody wants it (close() cancels every chunk too)
                else:
                    self._nursery.start_soon(self._fetch, c)

    def _finish(self, c: _Chunk) -> None:
        c.running = False
        c.done.set()
        self._settle(c)

    def _retire(self, c: _Chunk) -> None:
        """Take `c` out of the list; cancel its GET unless a read waits for it."""
        if c.retired:
            return
        c.retired = True
        self._chunks.remove(c)
        if not c.waiters:
            c.scope.cancel()
            if c.run is not None and not c.run.wanted():
                c.run.scope.cancel()
        self._settle(c)

    def _evict(self, offset: int, end: int) -> bool:
        """Retire chunks a read of [offset, end) does not need and nobody waits for: the ones
        behind it first, then the farthest ahead. True if any was retired."""
        spare = [c for c in self._chunks if not c.waiters and (c.end <= offset or c.start >= end)]
        if not spare:
            return False
        behind = [c for c in spare if c.end <= offset]
        for c in behind or spare[-1:]:
            self._retire(c)
        self._next = max([self._frontier] + [c.end for c in self._chunks])
        return True

    def _settle(self, c: _Chunk) -> None:
        """Release `c`'s reservation once it is retired, its task has ended and no read uses
        it."""
        if c.freed or not c.retired or c.running or c.waiters:
            return
        c.freed = True
        c.data = None
        self._live.discard(c)
        self.buffered -= c.size
        self.budget.give(c.size)
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- release ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Cancel every GET of this handle, wait for their tasks to end, free everything."""
        if self._closed:
            return
        self._closed = True
        for c in list(self._chunks):
            self._retire(c)
        live = list(self._live)
        for c in live:
            c.scope.cancel()
            if c.run is not None:
                c.run.scope.cancel()
        for c in live:
            await c.done.wait()
        log.debug("closed %s: %d GETs, %d bytes fetched, %d bytes read, %d reads waited for a "
                  "GET, peak %d bytes held", self.key, self.requests, self.fetched, self.served,
                  self.stalls, self.peak_buffered)
