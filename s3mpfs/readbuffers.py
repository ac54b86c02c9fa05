"""Reused buffers for fetched bytes: a GET's body lands in the same few buffers again and
again instead of a fresh bytes object per piece.

Why: a fresh 8 MiB bytes object is a fresh mmap. The kernel zeroes and faults in its 2,048
pages while the socket is read into it, and unmaps them when the chunk is dropped. Reading
1 GiB from Ceph RGW on this 2-core machine, that was ~30 % of the daemon's CPU (clear_page,
page faults, munmap in `perf`), CPU the S3 server on the same cores wanted too (figures in
README.md, *Benchmarks*). The buffers are private anonymous maps advised MADV_HUGEPAGE: with 2 MiB
pages, pinning a 1 MiB FUSE reply's source pages (get_user_pages in the kernel's writev to
/dev/fuse) costs one page-table walk instead of 256 (8.6 % -> 2.6 % of the daemon's CPU).

When a buffer is free. Nothing gives buffers back: a buffer is free when nothing refers into
it any more. Everything that uses one holds a memoryview of it: the chunk holding the bytes,
a worker thread filling it (readinto), a slice on its way to the kernel in a FUSE reply (pyfuse3
replies from our view after `read()` has returned, so the reader's own bookkeeping cannot tell
when that is over). An mmap with a live memoryview refuses to be resized, so `_unused` resizes
it to its own size (a no-op mremap, ~0.6 us) and takes a BufferError as "in use". A forgotten
view can only keep a buffer out of the pool, never hand out bytes still in use.

Size. Every buffer is `size` bytes (the prefetcher's request size); smaller pieces get a slice.
At most `keep` buffers are kept (the read memory budget's worth); beyond that, and for pieces
larger than `size`, a plain new bytearray is used. `trim()` drops free ones: the prefetcher
keeps a few spare while any read chunk is held (a sequential reader frees a chunk shortly
before it needs the next) and none once no chunk is held anywhere, so memory held by a read
that has ended goes back even while other files stay open, and an idle mount holds none.
"""

from __future__ import annotations

import mmap


def _new(size: int) -> mmap.mmap:
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buf.madvise(mmap.MADV_HUGEPAGE)
    return buf


def _unused(buf: mmap.mmap) -> bool:
    try:
        buf.resize(len(buf))
    except BufferError:  # a memoryview of it is alive somewhere
        return False
    return True


class BufferPool:
    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._bufs: list[mmap.mmap] = []
        self.created = 0  # buffers allocated, pooled or not (instrumentation: reuse means few)

    def take(self, n: int) -> memoryview:
        """A writable view of n bytes that nothing else is using (contents undefined)."""
        if n <= self.size:
            for buf in self._bufs:
                if _unused(buf):
                    return memoryview(buf)[:n]
        self.created += 1
        if n > self.size or len(self._bufs) >= self.keep:
            return memoryview(bytearray(n))  # not pooled
        buf = _new(self.size)
        self._bufs.append(buf)
        return memoryview(buf)[:n]

    def trim(self, spare: int = 0) -> None:
        """Forget the buffers nothing uses but `spare` of them (their memory goes back to the
        system)."""
        kept = []
        for buf in self._bufs:
            if not _unused(buf):
                kept.append(buf)
            elif spare > 0:
                kept.append(buf)
                spare -= 1
        self._bufs = kept

    def __len__(self) -> int:
        return len(self._bufs)
