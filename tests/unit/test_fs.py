"""Filesystem semantics (s3mpfs.fs) on MemoryStore, without FUSE."""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time

import pytest
import trio
import trio.testing

from s3mpfs.config import MiB
from s3mpfs.errors import StoreError
from s3mpfs.fs import Filesystem, SetAttr
from s3mpfs.inodes import ROOT_INODE, Inode, Kind
from s3mpfs.store.memory import MemoryStore, _Object
from tests.helpers.faults import FaultyStore
from tests.helpers.memfs import GID, PART, UID
from tests.helpers.memfs import errno_of as _errno
from tests.helpers.memfs import fs_options as _opts


async def _create(fs: Filesystem, name: str, parent: int = ROOT_INODE,
                  mode: int = 0o644) -> tuple[Inode, int]:
    inode, fh = await fs.create(parent, name, mode, UID, GID)
    return inode, fh


def _data(size: int) -> bytes:
    return bytes(i % 253 for i in range(size))


# -- writing -------------------------------------------------------------------------------


async def test_create_write_flush_release_stores_the_object(
        fs: Filesystem, mem: MemoryStore) -> None:
    inode, fh = await _create(fs, "f.txt", mode=0o640)
    assert await fs.write(fh, 0, b"hello ") == 6
    assert await fs.write(fh, 6, b"world") == 5
    assert "f.txt" not in mem.objects  # nothing before close
    assert fs.size_of(inode) == 11
    await fs.flush(fh)
    await fs.release(fh)
    obj = mem.objects["f.txt"]
    assert obj.data == b"hello world"
    assert obj.metadata["mode"] == str(stat.S_IFREG | 0o640)
    assert (obj.metadata["uid"], obj.metadata["gid"]) == (str(UID), str(GID))
    assert (inode.size, inode.etag) == (11, obj.etag)
    assert mem.counts["PutObject"] == 1
    assert len(fs.handles) == 0


async def test_flush_without_new_bytes_keeps_the_existing_object(
        fs: Filesystem, mem: MemoryStore) -> None:
    """`> f`: the shell opens with O_TRUNC, dup2()s and closes before the first byte."""
    await mem.put("f", b"previous contents", metadata={})
    inode = await fs.lookup(ROOT_INODE, "f")
    fh = await fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)
    await fs.flush(fh)
    await fs.flush(fh)
    assert mem.objects["f"].data == b"previous contents"
    assert mem.counts["PutObject"] == 1  # only ours

    await fs.write(fh, 0, b"new")
    await fs.flush(fh)  # bytes since the last commit: commit now
    assert mem.objects["f"].data == b"new"
    await fs.write(fh, 3, b" and more")  # continues the same file
    assert mem.objects["f"].data == b"new"
    await fs.flush(fh)
    assert mem.objects["f"].data == b"new and more"
    puts = mem.counts["PutObject"]
    await fs.flush(fh)  # nothing new again
    await fs.release(fh)
    assert mem.counts["PutObject"] == puts
    assert mem.objects["f"].data == b"new and more"
    assert inode.size == 12


async def test_writes_after_flush_continue_a_multipart_file(
        fs: Filesystem, mem: MemoryStore) -> None:
    data = _data(2 * PART + 500)
    inode, fh = await _create(fs, "big")
    await fs.write(fh, 0, data[:PART + 100])
    await fs.flush(fh)
    assert mem.objects["big"].data == data[:PART + 100]
    await fs.write(fh, PART + 100, data[PART + 100:])
    assert fs.size_of(inode) == len(data)
    await fs.flush(fh)
    await fs.release(fh)
    assert mem.objects["big"].data == data
    assert mem.uploads == {}
    assert inode.size == len(data)


async def test_release_of_a_never_written_new_file_stores_an_empty_object(
        fs: Filesystem, mem: MemoryStore) -> None:
    _, fh = await _create(fs, "empty")
    await fs.flush(fh)
    assert "empty" not in mem.objects  # flush with nothing written does nothing
    await fs.release(fh)
    assert mem.objects["empty"].data == b""
    info = await mem.head("empty")
    assert info.metadata["mode"] == str(stat.S_IFREG | 0o644)


async def test_release_commits_pending_bytes_without_flush(
        fs: Filesystem, mem: MemoryStore) -> None:
    _, fh = await _create(fs, "f")
    await fs.write(fh, 0, b"abc")
    await fs.release(fh)
    assert mem.objects["f"].data == b"abc"


async def test_open_without_trunc_keeps_the_bytes_and_appends(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"data", metadata={"mode": str(stat.S_IFREG | 0o600)})
    inode = await fs.lookup(ROOT_INODE, "f")
    fh = await fs.open(inode.ino, os.O_WRONLY)
    await fs.flush(fh)  # nothing written: the object stays as it is
    assert mem.counts["PutObject"] == 1
    await fs.write(fh, 4, b"+more")
    await fs.release(fh)
    assert mem.objects["f"].data == b"data+more"
    assert mem.objects["f"].metadata["mode"] == str(stat.S_IFREG | 0o600)


async def test_failed_part_fails_flush_and_leaves_no_upload_after_release(
        mem: MemoryStore) -> None:
    store = FaultyStore(mem)
    store.fail("upload_part", StoreError("injected", code="InternalError"), nth=1)
    await mem.put("f", b"old", metadata={})
    async with trio.open_nursery() as n:
        fs = Filesystem(store, _opts())
        fs.start(n)
        inode = await fs.lookup(ROOT_INODE, "f")
        fh = await fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)
        await fs.write(fh, 0, _data(PART + 1))
        await trio.testing.wait_all_tasks_blocked()
        assert await _errno(fs.flush(fh)) == errno.EIO
        assert await _errno(fs.write(fh, PART + 1, b"x")) == errno.EIO
        await fs.release(fh)
    assert mem.objects["f"].data == b"old"
    assert mem.uploads == {}  # no multipart upload left to bill


async def test_chmod_while_multipart_write_is_in_progress_is_kept(
        fs: Filesystem, mem: MemoryStore) -> None:
    """cp -p / rsync: fchmod after the data, before close. The upload's metadata was sent
    with CreateMultipartUpload, so the new mode must be applied after it completes."""
    inode, fh = await _create(fs, "f", mode=0o644)
    await fs.write(fh, 0, _data(PART + 10))
    await trio.testing.wait_all_tasks_blocked()
    assert mem.counts["CreateMultipartUpload"] == 1
    await fs.setattr(inode.ino, SetAttr(mode=0o600), fh)
    await fs.flush(fh)
    await fs.release(fh)
    assert mem.objects["f"].metadata["mode"] == str(stat.S_IFREG | 0o600)
    assert stat.S_IMODE(inode.mode) == 0o600


async def test_chmod_before_anything_was_sent_rides_on_the_put(
        fs: Filesystem, mem: MemoryStore) -> None:
    inode, fh = await _create(fs, "f", mode=0o644)
    await fs.write(fh, 0, b"abc")
    await fs.setattr(inode.ino, SetAttr(mode=0o755), fh)
    await fs.release(fh)
    assert mem.objects["f"].metadata["mode"] == str(stat.S_IFREG | 0o755)
    assert mem.counts["CopyObject"] == 0


# -- names ---------------------------------------------------------------------------------


async def test_lookup_file_and_directory(fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("file", b"12345", metadata={"mode": str(stat.S_IFREG | 0o600),
                                              "uid": "42", "mtime": "1700000000.5"})
    await mem.put("dir/inner", b"x", metadata={})  # a prefix without a "dir/" marker
    await mem.put("marked/", b"", metadata={})  # only a marker
    f = await fs.lookup(ROOT_INODE, "file")
    assert (f.kind, f.size, f.uid) == (Kind.FILE, 5, 42)
    assert f.mode == stat.S_IFREG | 0o600
    assert f.mtime_ns == 1_700_000_000_500_000_000
    d = await fs.lookup(ROOT_INODE, "dir")
    assert d.kind is Kind.DIR and stat.S_ISDIR(d.mode)
    assert (await fs.lookup(ROOT_INODE, "marked")).kind is Kind.DIR
    inner = await fs.lookup(d.ino, "inner")
    assert (inner.kind, inner.path) == (Kind.FILE, "dir/inner")
    assert await _errno(fs.lookup(ROOT_INODE, "missing")) == errno.ENOENT
    assert await _errno(fs.lookup(d.ino, "missing")) == errno.ENOENT
    assert await _errno(fs.lookup(f.ino, "x")) == errno.ENOTDIR
    assert await fs.lookup(d.ino, "..") is fs.inodes[ROOT_INODE]


async def test_lookup_name_both_file_and_prefix_is_a_directory(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("both", b"file", metadata={})
    await mem.put("both/child", b"x", metadata={})
    assert (await fs.lookup(ROOT_INODE, "both")).kind is Kind.DIR


async def _readdir(fs: Filesystem, ino: int) -> dict[str, Inode]:
    fh = fs.opendir(ino)
    try:
        entries = list(await fs.readdir(fh, 0))
    finally:
        fs.releasedir(fh)
    names = [name for name, _, _ in entries]
    assert len(names) == len(set(names)), names
    assert [c for n, _, c in entries if n in (".", "..")] == [False, False]
    return {name: inode for name, inode, _ in entries}


async def test_readdir(fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("a.txt", b"aaa", metadata={})
    await mem.put("sub/x", b"x", metadata={})
    await mem.put("sub/deeper/y", b"y", metadata={})
    await mem.put("empty/", b"", metadata={})
    _, fh = await _create(fs, "being-written")
    await fs.write(fh, 0, b"partial")
    entries = await _readdir(fs, ROOT_INODE)
    assert sorted(entries) == [".", "..", "a.txt", "being-written", "empty", "sub"]
    assert entries["a.txt"].kind is Kind.FILE and entries["a.txt"].size == 3
    assert entries["sub"].kind is Kind.DIR and entries["empty"].kind is Kind.DIR
    assert fs.size_of(entries["being-written"]) == 7
    assert entries["."] is fs.inodes[ROOT_INODE]

    sub = entries["sub"]
    below = await _readdir(fs, sub.ino)
    assert sorted(below) == [".", "..", "deeper", "x"]
    assert below["."] is sub and below[".."] is fs.inodes[ROOT_INODE]
    assert below["x"].path == "sub/x"
    await fs.release(fh)


async def test_readdir_from_an_offset(fs: Filesystem, mem: MemoryStore) -> None:
    for name in ("a", "b", "c"):
        await mem.put(name, b"", metadata={})
    fh = fs.opendir(ROOT_INODE)
    first = list(await fs.readdir(fh, 0))
    rest = list(await fs.readdir(fh, 3))
    fs.releasedir(fh)
    assert [n for n, _, _ in first] == [".", "..", "a", "b", "c"]
    assert [n for n, _, _ in rest] == ["b", "c"]


async def test_readdir_of_100_000_entries_in_kernel_sized_batches(
        fs: Filesystem, mem: MemoryStore) -> None:
    """101 pages of ListObjectsV2 (files and prefixes interleaved across page boundaries),
    read the way the kernel does: a batch at a time, each call resuming at the offset after the
    last entry it took. Every name exactly once, in order, offsets stable."""
    names = {f"f{i:06d}" for i in range(100_500)}
    for name in names:
        key = f"big/{name}" if int(name[1:]) % 10 else f"big/{name}/inner"  # every 10th: a dir
        mem.objects[key] = _Object(b"", f'"{name}"', 0.0, {})  # direct: 100k puts are slow
    before = mem.counts.get("ListObjectsV2", 0)
    big = await fs.lookup(ROOT_INODE, "big")
    fh = fs.opendir(big.ino)
    seen: list[str] = []
    offset = 0
    while True:
        batch = list(itertools.islice(await fs.readdir(fh, offset), 331))  # a kernel buffer
        if not batch:
            break
        seen += [n for n, _, _ in batch]
        offset += len(batch)
    fs.releasedir(fh)
    assert seen[:2] == [".", ".."]
    assert seen[2:] == sorted(names)
    assert (mem.counts["ListObjectsV2"] - before) >= 100  # it really paged
    tenth = fs.inodes.by_path("big/f000010")
    assert tenth is not None and tenth.kind is Kind.DIR


async def test_mkdir_writes_a_marker(fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("file", b"x", metadata={})
    d = await fs.mkdir(ROOT_INODE, "newdir", 0o750, UID, GID)
    assert d.kind is Kind.DIR
    marker = mem.objects["newdir/"]
    assert marker.data == b""
    assert marker.metadata["mode"] == str(stat.S_IFDIR | 0o750)
    assert await _errno(fs.mkdir(ROOT_INODE, "newdir", 0o755, UID, GID)) == errno.EEXIST
    assert await _errno(fs.mkdir(ROOT_INODE, "file", 0o755, UID, GID)) == errno.EEXIST
    nested = await fs.mkdir(d.ino, "inner", 0o755, UID, GID)
    assert nested.path == "newdir/inner"
    assert "newdir/inner/" in mem.objects


async def test_rmdir(fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"", metadata={})
    d = await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
    await mem.put("d/file", b"x", metadata={})
    assert await _errno(fs.rmdir(ROOT_INODE, "d")) == errno.ENOTEMPTY
    assert "d/" in mem.objects
    await mem.delete("d/file")
    await fs.mkdir(d.ino, "sub", 0o755, UID, GID)
    assert await _errno(fs.rmdir(ROOT_INODE, "d")) == errno.ENOTEMPTY  # a subdirectory
    await fs.rmdir(d.ino, "sub")
    assert "d/sub/" not in mem.objects
    await fs.rmdir(ROOT_INODE, "d")
    assert "d/" not in mem.objects
    assert await _errno(fs.lookup(ROOT_INODE, "d")) == errno.ENOENT

    assert await _errno(fs.rmdir(ROOT_INODE, "f")) == errno.ENOTDIR
    assert await _errno(fs.rmdir(ROOT_INODE, "nothing")) == errno.ENOENT


async def test_rmdir_with_a_file_being_written_is_enotempty(
        fs: Filesystem, mem: MemoryStore) -> None:
    d = await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
    _, fh = await _create(fs, "pending", parent=d.ino)
    assert await _errno(fs.rmdir(ROOT_INODE, "d")) == errno.ENOTEMPTY
    await fs.release(fh)
    assert "d/pending" in mem.objects


async def test_unlink(fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"x", metadata={})
    await mem.put("keep", b"y", metadata={})
    await fs.lookup(ROOT_INODE, "f")
    await fs.unlink(ROOT_INODE, "f")
    assert "f" not in mem.objects and "keep" in mem.objects
    assert await _errno(fs.lookup(ROOT_INODE, "f")) == errno.ENOENT
    assert await _errno(fs.unlink(ROOT_INODE, "f")) == errno.ENOENT
    await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
    assert await _errno(fs.unlink(ROOT_INODE, "d")) == errno.EISDIR


async def test_unlink_while_writing_stores_nothing(fs: Filesystem, mem: MemoryStore) -> None:
    _, fh = await _create(fs, "f")
    await fs.write(fh, 0, _data(PART + 3))
    await trio.testing.wait_all_tasks_blocked()
    await fs.unlink(ROOT_INODE, "f")
    await fs.write(fh, PART + 3, b"more")
    await fs.flush(fh)
    await fs.release(fh)
    assert mem.objects == {}
    assert mem.uploads == {}


async def test_chmod_on_a_closed_file_rewrites_metadata_by_copy(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"contents", metadata={"mode": str(stat.S_IFREG | 0o644), "uid": "5"})
    inode = await fs.lookup(ROOT_INODE, "f")
    await fs.setattr(inode.ino, SetAttr(mode=0o600))
    assert mem.counts["CopyObject"] == 1
    info = await mem.head("f")
    assert info.metadata["mode"] == str(stat.S_IFREG | 0o600)
    assert info.metadata["uid"] == "5"
    assert await mem.get_range("f", 0, 100) == b"contents"
    assert inode.etag == info.etag
    await fs.setattr(inode.ino, SetAttr(mode=0o600))  # no change: no request
    assert mem.counts["CopyObject"] == 1


async def test_chmod_of_a_replaced_object_is_refused(fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"v1", metadata={})
    inode = await fs.lookup(ROOT_INODE, "f")
    await mem.put("f", b"v2 by someone else", metadata={})
    with pytest.raises(StoreError):
        await fs.setattr(inode.ino, SetAttr(mode=0o600))
    assert await mem.get_range("f", 0, 100) == b"v2 by someone else"


async def test_truncate_of_a_closed_file(fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"contents", metadata={"mode": str(stat.S_IFREG | 0o600)})
    inode = await fs.lookup(ROOT_INODE, "f")
    await fs.setattr(inode.ino, SetAttr(size=3))
    assert mem.objects["f"].data == b"con"
    await fs.setattr(inode.ino, SetAttr(size=0))
    assert mem.objects["f"].data == b""
    assert inode.size == 0
    assert mem.objects["f"].metadata["mode"] == str(stat.S_IFREG | 0o600)


async def test_ftruncate_updates_the_mtime_and_ctime(fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"contents", metadata={"mtime": "1700000000", "ctime": "1700000000"})
    inode = await fs.lookup(ROOT_INODE, "f")
    fh = await fs.open(inode.ino, os.O_WRONLY)
    before = time.time_ns()
    await fs.setattr(inode.ino, SetAttr(size=3), fh)
    assert inode.mtime_ns >= before and inode.ctime >= before
    await fs.flush(fh)
    await fs.release(fh)
    assert mem.objects["f"].data == b"con"


# -- reading -------------------------------------------------------------------------------


async def test_read_through_a_read_handle(fs: Filesystem, mem: MemoryStore) -> None:
    data = _data(3 * MiB + 17)
    await mem.put("f", data, metadata={})
    inode = await fs.lookup(ROOT_INODE, "f")
    fh = await fs.open(inode.ino, os.O_RDONLY)
    assert await fs.read(fh, 0, 10) == data[:10]
    assert await fs.read(fh, 10, 128 * 1024) == data[10:10 + 128 * 1024]
    assert await fs.read(fh, 2 * MiB, MiB) == data[2 * MiB:3 * MiB]
    assert await fs.read(fh, 5, 5) == data[5:10]  # backwards seek
    assert await fs.read(fh, len(data) - 7, 4096) == data[-7:]  # short read at the end
    assert await fs.read(fh, len(data), 4096) == b""
    assert await fs.read(fh, len(data) + 100, 10) == b""
    await fs.release(fh)
    assert inode.open_handles == 0


async def test_a_fresh_open_of_a_replaced_object_reads_the_new_version(
        fs: Filesystem, mem: MemoryStore) -> None:
    """Opened from cached attributes (a listing, a lookup within the TTL) after another client
    replaced the object: the first read's 412 refreshes the inode and reads the new bytes."""
    await mem.put("f", b"v1" * 1000, metadata={})
    inode = await fs.lookup(ROOT_INODE, "f")
    await mem.put("f", b"version 2 is longer" * 1000, metadata={"mode": "33152"})
    fh = await fs.open(inode.ino, os.O_RDONLY)  # from the cached ETag
    assert bytes(await fs.read(fh, 0, 19)) == b"version 2 is longer"
    assert inode.size == 19000 and inode.mode == 33152  # stat shows the new object too
    assert bytes(await fs.read(fh, 18990, 100)) == b" is longer"
    await fs.release(fh)


async def test_read_of_an_object_replaced_while_being_read_is_estale(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"v1" * 8_000_000, metadata={})
    inode = await fs.lookup(ROOT_INODE, "f")
    fh = await fs.open(inode.ino, os.O_RDONLY)
    assert bytes(await fs.read(fh, 0, 4)) == b"v1v1"
    await mem.put("f", b"v2" * 8_000_000, metadata={})
    assert await _errno(fs.read(fh, 15_000_000, 10)) == errno.ESTALE  # never spliced
    await fs.release(fh)
    assert inode.etag is None  # the next open asks S3


# -- reading while writing (readback.py) -----------------------------------------------------


async def test_any_descriptor_reads_what_was_written_before_close(
        fs: Filesystem, mem: MemoryStore) -> None:
    inode, fh = await _create(fs, "f")
    await fs.write(fh, 0, b"hello ")
    await fs.write(fh, 6, b"world")
    assert bytes(await fs.read(fh, 0, 100)) == b"hello world"  # the writer's own descriptor
    reader = await fs.open(inode.ino, os.O_RDONLY)  # another process's reader
    assert bytes(await fs.read(reader, 6, 5)) == b"world"
    assert "f" not in mem.objects  # nothing stored for it
    await fs.release(fh)
    assert bytes(await fs.read(reader, 0, 100)) == b"hello world"  # stored now
    await fs.release(reader)


async def test_pread_on_an_o_rdwr_descriptor_of_a_stored_file(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("db", b"0123456789", metadata={})
    inode = await fs.lookup(ROOT_INODE, "db")
    fh = await fs.open(inode.ino, os.O_RDWR)
    assert bytes(await fs.read(fh, 2, 4)) == b"2345"  # before any write: the stored bytes
    await fs.write(fh, 4, b"ab")
    assert bytes(await fs.read(fh, 0, 100)) == b"0123ab6789"
    await fs.release(fh)
    assert mem.objects["db"].data == b"0123ab6789"


async def test_a_large_file_reads_back_what_is_held_and_says_why_not_the_rest(
        fs: Filesystem, mem: MemoryStore, caplog: pytest.LogCaptureFixture) -> None:
    _, fh = await _create(fs, "big")
    data = _data(3 * PART + 100)
    for off in range(0, len(data), MiB):
        await fs.write(fh, off, data[off:off + MiB])
    await trio.testing.wait_all_tasks_blocked()  # parts 2 and 3 acknowledged
    assert bytes(await fs.read(fh, 10, 20)) == data[10:30]  # part 1: kept until completion
    assert bytes(await fs.read(fh, 3 * PART, 100)) == data[3 * PART:]  # the filling buffer
    assert await _errno(fs.read(fh, PART + 5, 10)) == errno.EIO  # in the incomplete upload
    assert "bytes 5242885-5242895 cannot be read while the file is written" in caplog.text
    await fs.release(fh)
    assert mem.objects["big"].data == data


async def test_a_file_unlinked_while_open_stays_readable_and_writable_then_goes(
        fs: Filesystem, mem: MemoryStore) -> None:
    inode, fh = await _create(fs, "tmp")
    await fs.write(fh, 0, b"scratch")
    await fs.flush(fh)  # stored once
    assert mem.objects["tmp"].data == b"scratch"
    await fs.unlink(ROOT_INODE, "tmp")
    assert "tmp" not in mem.objects  # the name and its object go at once
    assert await _errno(fs.lookup(ROOT_INODE, "tmp")) == errno.ENOENT
    await fs.write(fh, 7, b" data")
    assert fs.size_of(inode) == 12  # fstat
    assert bytes(await fs.read(fh, 0, 100)) == b"scratch data"
    await fs.flush(fh)  # close() of a copy: stores nothing
    big = _data(2 * PART)
    await fs.write(fh, 12, big)  # a part goes to an upload that will never complete
    await trio.testing.wait_all_tasks_blocked()
    await fs.release(fh)
    assert set(mem.objects) == set() and mem.uploads == {}


async def test_o_excl_never_replaces_an_object_stored_meanwhile(
        fs: Filesystem, mem: MemoryStore) -> None:
    excl = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    _, fh = await fs.create(ROOT_INODE, "k", 0o644, UID, GID, flags=excl)
    await fs.write(fh, 0, b"mine")
    await mem.put("k", b"another client's", metadata={})  # lands before our close
    assert await _errno(fs.flush(fh)) == errno.EEXIST
    await fs.release(fh)
    assert mem.objects["k"].data == b"another client's"
    _, fh = await fs.create(ROOT_INODE, "k2", 0o644, UID, GID, flags=excl)
    await fs.write(fh, 0, b"one")
    await fs.flush(fh)
    await fs.write(fh, 3, b" two")  # a re-commit replaces its own object
    await fs.release(fh)
    assert mem.objects["k2"].data == b"one two"


# -- read-only -----------------------------------------------------------------------------


async def test_read_only_refuses_every_change(mem: MemoryStore) -> None:
    await mem.put("f", b"data", metadata={})
    await mem.put("d/", b"", metadata={})
    async with trio.open_nursery() as n:
        fs = Filesystem(mem, _opts(read_only=True))
        fs.start(n)
        inode = await fs.lookup(ROOT_INODE, "f")
        assert await _errno(fs.create(ROOT_INODE, "new", 0o644, UID, GID)) == errno.EROFS
        assert await _errno(fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)) == errno.EROFS
        assert await _errno(fs.mkdir(ROOT_INODE, "x", 0o755, UID, GID)) == errno.EROFS
        assert await _errno(fs.rmdir(ROOT_INODE, "d")) == errno.EROFS
        assert await _errno(fs.unlink(ROOT_INODE, "f")) == errno.EROFS
        assert await _errno(fs.setattr(inode.ino, SetAttr(mode=0o600))) == errno.EROFS
        fh = await fs.open(inode.ino, os.O_RDONLY)  # reading still works
        assert await fs.read(fh, 0, 100) == b"data"
        await fs.release(fh)
    assert set(mem.objects) == {"f", "d/"}
    assert mem.objects["f"].data == b"data"
    assert mem.counts["PutObject"] == 2 and mem.counts["DeleteObject"] == 0


async def test_prefix_option_maps_paths_below_the_prefix(mem: MemoryStore) -> None:
    await mem.put("outside", b"not ours", metadata={})
    await mem.put("pre/", b"", metadata={})
    await mem.put("pre/existing", b"e", metadata={})
    async with trio.open_nursery() as n:
        fs = Filesystem(mem, _opts(prefix="pre/"))
        fs.start(n)
        assert sorted(await _readdir(fs, ROOT_INODE)) == [".", "..", "existing"]
        assert await _errno(fs.lookup(ROOT_INODE, "outside")) == errno.ENOENT
        d = await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
        _, fh = await _create(fs, "f", parent=d.ino)
        await fs.write(fh, 0, b"hi")
        await fs.release(fh)
    assert set(mem.objects) == {"outside", "pre/", "pre/existing", "pre/d/", "pre/d/f"}
    assert mem.objects["pre/d/f"].data == b"hi"


@pytest.mark.parametrize("ttl", [0.0, 5.0])
async def test_internal_directory_is_no_name_at_the_root(mem: MemoryStore, ttl: float) -> None:
    await mem.put(".s3mpfs/uploads/0123", b"{}", metadata={})
    async with trio.open_nursery() as n:
        fs = Filesystem(mem, _opts(metadata_ttl=ttl))
        fs.start(n)
        assert sorted(await _readdir(fs, ROOT_INODE)) == [".", ".."]
        heads = mem.counts["HeadObject"]
        assert await _errno(fs.lookup(ROOT_INODE, ".s3mpfs")) == errno.ENOENT
        assert mem.counts["HeadObject"] == heads  # refused without asking S3
        assert await _errno(_create(fs, ".s3mpfs")) == errno.EPERM
        assert await _errno(fs.mkdir(ROOT_INODE, ".s3mpfs", 0o755, UID, GID)) == errno.EPERM
        d = await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
        _, fh = await _create(fs, ".s3mpfs", parent=d.ino)  # only the root's is reserved
        await fs.release(fh)
    assert set(mem.objects) == {".s3mpfs/uploads/0123", "d/", "d/.s3mpfs"}


async def test_internal_directory_is_an_ordinary_name_below_a_prefix(mem: MemoryStore) -> None:
    await mem.put("pre/.s3mpfs", b"mine", metadata={})
    async with trio.open_nursery() as n:
        fs = Filesystem(mem, _opts(prefix="pre/"))
        fs.start(n)
        assert (await fs.lookup(ROOT_INODE, ".s3mpfs")).size == 4


async def test_names_s3_cannot_hold_are_refused(fs: Filesystem) -> None:
    assert await _errno(_create(fs, "x" * 256)) == errno.ENAMETOOLONG
    assert await _errno(fs.mkdir(ROOT_INODE, "y" * 256, 0o755, UID, GID)) == errno.ENAMETOOLONG
    assert await _errno(fs.lookup(ROOT_INODE, "")) == errno.EINVAL


# -- never replace what was not seen ---------------------------------------------------------


async def test_append_to_a_name_a_cached_listing_misses_keeps_the_object(
        fs: Filesystem, mem: MemoryStore) -> None:
    """ls, another client stores k, then `echo tail >> k` within the TTL: the listing says k
    is absent, but the create's HEAD finds it and the append keeps its bytes."""
    await _readdir(fs, ROOT_INODE)  # a complete listing of the root, cached
    await mem.put("k", b"x" * 1000, metadata={"mode": "33184"})  # another client
    assert await _errno(fs.lookup(ROOT_INODE, "k")) == errno.ENOENT  # the cache says so
    heads = mem.counts["HeadObject"]
    inode, fh = await fs.create(ROOT_INODE, "k", 0o644, UID, GID,
                                flags=os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    assert mem.counts["HeadObject"] == heads + 1
    assert inode.size == 1000 and inode.mode == 33184
    await fs.write(fh, 1000, b"tail")
    await fs.release(fh)
    assert mem.objects["k"].data == b"x" * 1000 + b"tail"


async def test_creates_cost_no_head_where_the_outcome_is_known(
        fs: Filesystem, mem: MemoryStore) -> None:
    await _readdir(fs, ROOT_INODE)
    d = await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
    heads = mem.counts["HeadObject"]
    plain = os.O_WRONLY | os.O_CREAT
    _, fh = await fs.create(d.ino, "in-own-dir", 0o644, UID, GID, flags=plain)  # made here
    await fs.release(fh)
    _, fh = await fs.create(ROOT_INODE, "t", 0o644, UID, GID, flags=plain | os.O_TRUNC)
    await fs.release(fh)
    _, fh = await fs.create(ROOT_INODE, "x", 0o644, UID, GID, flags=plain | os.O_EXCL)
    await fs.release(fh)
    await fs.unlink(ROOT_INODE, "t")
    _, fh = await fs.create(ROOT_INODE, "t", 0o644, UID, GID, flags=plain)  # removed here
    await fs.release(fh)
    assert mem.counts["HeadObject"] == heads
    _, fh = await fs.create(ROOT_INODE, "new", 0o644, UID, GID, flags=plain)  # only cached
    await fs.release(fh)
    assert mem.counts["HeadObject"] == heads + 1


# -- the window between a close and the release's store ---------------------------------------


@pytest.mark.parametrize("then", ["open", "rename", "chmod", "unlink"])
async def test_operations_in_the_close_to_store_window_wait_for_the_store(
        mem: MemoryStore, then: str) -> None:
    """`touch f && X f`: FUSE sends RELEASE after close() returned, so X may arrive while the
    release's PutObject is on its way. X waits for it; nothing fails, nothing is lost."""
    store = FaultyStore(mem)
    async with trio.open_nursery() as n:
        fs = Filesystem(store, _opts())
        fs.start(n)
        inode, fh = await _create(fs, "f")
        gate = store.gate("put")
        n.start_soon(fs.release, fh)  # the empty file's PutObject waits at the gate
        await trio.testing.wait_all_tasks_blocked()
        assert "f" not in mem.objects
        done = trio.Event()

        async def act() -> None:
            if then == "open":
                rfh = await fs.open(inode.ino, os.O_RDONLY)
                assert bytes(await fs.read(rfh, 0, 10)) == b""
                await fs.release(rfh)
            elif then == "rename":
                await fs.rename(ROOT_INODE, "f", ROOT_INODE, "g")
            elif then == "chmod":
                await fs.setattr(inode.ino, SetAttr(mode=0o600))
            else:
                await fs.unlink(ROOT_INODE, "f")
            done.set()

        n.start_soon(act)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()  # waits for the store
        gate.set()
        await done.wait()
    want = {"open": {"f"}, "rename": {"g"}, "chmod": {"f"}, "unlink": set()}[then]
    assert {k for k in mem.objects if not k.startswith(".s3mpfs/")} == want
    if then == "chmod":
        assert mem.objects["f"].metadata["mode"] == str(stat.S_IFREG | 0o600)
