"""The floor of a pyfuse3 read path: a do-nothing filesystem that answers every read of one
1 GiB file from a buffer in memory, read like bench.suite's read workload (1 MiB requests after
dropping the file's cached pages), with the mount's readahead at 1 MiB as s3mpfs sets it.

What it costs the daemon per GiB is what any pyfuse3 filesystem pays before it fetches a byte:
the kernel copying each 1 MiB reply into the page cache, libfuse, pyfuse3 and trio per request.
s3mpfs's read CPU (bench.suite) minus this is what its S3 side costs.

    .venv/bin/python -m bench.fuse_floor [--rounds 5]

Runs the filesystem as a child process (this file with --serve), unmounts it by path and stops
it by PID at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import errno
import mmap
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    cpu_seconds,
    drop_cached,
    loadavg,
    machine_facts,
    read_ahead_kb,
    read_through,
    unmount,
    wait_for,
)

SIZE = 1 << 30
MiB = 1 << 20
NAME = b"big.bin"


def serve(mountpoint: str) -> None:
    import pyfuse3
    import trio

    # The kind of buffer s3mpfs replies from (s3mpfs/readbuffers.py): huge pages make the
    # kernel's pinning of each reply's source cheap.
    buf = mmap.mmap(-1, 8 * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buf.madvise(mmap.MADV_HUGEPAGE)
    buf.write(os.urandom(len(buf)))
    data = memoryview(buf)
    initialized = trio.Event()

    class Ops(pyfuse3.Operations):
        def init(self) -> None:  # called inside libfuse's INIT handler
            initialized.set()

        async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
            a = pyfuse3.EntryAttributes()
            a.st_ino = inode
            if inode == pyfuse3.ROOT_INODE:
                a.st_mode, a.st_size = stat.S_IFDIR | 0o755, 0
            else:
                a.st_mode, a.st_size = stat.S_IFREG | 0o644, SIZE
            a.attr_timeout = a.entry_timeout = 300
            return a

        async def lookup(self, parent: int, name: bytes,
                         ctx: Any = None) -> pyfuse3.EntryAttributes:
            if parent != pyfuse3.ROOT_INODE or name != NAME:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return await self.getattr(pyfuse3.ROOT_INODE + 1)

        async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
            return pyfuse3.FileInfo(fh=inode)

        async def read(self, fh: int, off: int, size: int) -> memoryview:  # type: ignore[override]
            start = off % len(data)
            return data[start:start + min(size, SIZE - off)]

    options = set(pyfuse3.default_options)
    options.add("fsname=fuse_floor")
    pyfuse3.init(Ops(), mountpoint, options)

    async def main() -> None:
        async def read_ahead() -> None:  # after FUSE INIT (it resets it), as s3mpfs does
            await initialized.wait()
            read_ahead_kb(mountpoint, 1024)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_ahead)
            await pyfuse3.main()

    try:
        trio.run(main)
    finally:
        pyfuse3.close()


def read_once(path: Path) -> float:
    drop_cached(path)
    t0 = time.monotonic()
    read_through(path, SIZE)
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--serve", metavar="MOUNTPOINT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    print(f"machine: {machine_facts()} loadavg={loadavg()}")
    with tempfile.TemporaryDirectory(prefix="fuse-floor-") as tmp:
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        proc = subprocess.Popen([sys.executable, "-m", "bench.fuse_floor", "--serve", str(mnt)])
        try:
            wait_for(lambda: read_ahead_kb(mnt) == 1024, 20, "the fuse_floor mount")
            for n in range(1, args.rounds + 1):
                cpu0 = cpu_seconds(proc.pid)
                wall = read_once(mnt / NAME.decode())
                cpu = cpu_seconds(proc.pid) - cpu0
                print(f"round {n}: {SIZE / wall / 1e6:.0f} MB/s, daemon {cpu:.2f} CPU-s/GiB")
        finally:
            unmount(mnt, proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
