"""Symbolic links, special files, hard links, stored attributes in listings, s3fs's directory
objects and the root's attributes (s3mpfs.links, namespace.read_meta), on MemoryStore."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator

import pytest
import trio

from s3mpfs.errors import AccessDenied
from s3mpfs.fs import Filesystem, SetAttr
from s3mpfs.inodes import ROOT_INODE, Inode
from s3mpfs.store.memory import MemoryStore
from tests.helpers.memfs import GID, UID
from tests.helpers.memfs import errno_of as _errno
from tests.helpers.memfs import fs_options as _opts

T = 1_600_000_000  # a stored mtime far from "now"


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


def _fs(mem: MemoryStore, nursery: trio.Nursery, **kw: object) -> Filesystem:
    fs = Filesystem(mem, _opts(**kw))
    fs.start(nursery)
    return fs


@pytest.fixture
def fs(mem: MemoryStore, nursery: trio.Nursery) -> Filesystem:
    return _fs(mem, nursery)


async def _ls(fs: Filesystem, ino: int = ROOT_INODE) -> dict[str, Inode]:
    fh = fs.opendir(ino)
    try:
        return {name: inode for name, inode, counted in await fs.readdir(fh, 0) if counted}
    finally:
        fs.releasedir(fh)


def _meta(mode: int, uid: int = 7, gid: int = 8, **extra: str) -> dict[str, str]:
    return {"mode": str(mode), "uid": str(uid), "gid": str(gid), "mtime": str(T), **extra}


# -- symbolic links --------------------------------------------------------------------------


async def test_symlink_is_stored_in_s3fs_format_and_reads_back(
        fs: Filesystem, mem: MemoryStore, nursery: trio.Nursery) -> None:
    link = await fs.links.symlink(ROOT_INODE, "l", b"../some/target", UID, GID)
    obj = mem.objects["l"]
    assert obj.data == b"../some/target"
    assert int(obj.metadata["mode"]) == stat.S_IFLNK | 0o777
    assert (obj.metadata["uid"], obj.metadata["gid"]) == (str(UID), str(GID))
    assert "mtime" in obj.metadata
    assert stat.S_ISLNK(link.mode) and link.size == len(b"../some/target")
    gets = mem.counts["GetObject"]
    assert await fs.links.readlink(link.ino) == b"../some/target"
    assert mem.counts["GetObject"] == gets  # known: it wrote it
    # A fresh mount: lookup HEADs it (the type comes from x-amz-meta-mode), readlink GETs it.
    fresh = _fs(mem, nursery)
    inode = await fresh.lookup(ROOT_INODE, "l")
    assert stat.S_ISLNK(inode.mode) and inode.size == 14
    assert await fresh.links.readlink(inode.ino) == b"../some/target"
    assert await fresh.links.readlink(inode.ino) == b"../some/target"
    assert mem.counts["GetObject"] == gets + 1


async def test_absolute_dangling_and_long_targets(fs: Filesystem, mem: MemoryStore) -> None:
    await fs.links.symlink(ROOT_INODE, "abs", b"/etc/passwd", UID, GID)
    await fs.links.symlink(ROOT_INODE, "dangling", b"nowhere/at/all", UID, GID)
    assert mem.objects["abs"].data == b"/etc/passwd"
    assert mem.objects["dangling"].data == b"nowhere/at/all"
    assert await _errno(fs.links.symlink(ROOT_INODE, "abs", b"x", UID, GID)) == errno.EEXIST
    assert await _errno(fs.links.symlink(ROOT_INODE, "long", b"x" * 4096, UID, GID)) == \
        errno.ENAMETOOLONG
    regular, fh = await fs.create(ROOT_INODE, "f", 0o644, UID, GID)
    await fs.release(fh)
    assert await _errno(fs.links.readlink(regular.ino)) == errno.EINVAL


async def test_a_links_own_mtime_and_owner_are_stored_and_keep_its_type(
        fs: Filesystem, mem: MemoryStore) -> None:
    link = await fs.links.symlink(ROOT_INODE, "l", b"target", UID, GID)
    await fs.setattr(link.ino, SetAttr(mtime_ns=T * 10**9, uid=5, gid=6))
    obj = mem.objects["l"]
    assert obj.data == b"target"
    assert int(obj.metadata["mode"]) == stat.S_IFLNK | 0o777
    assert (obj.metadata["mtime"], obj.metadata["uid"], obj.metadata["gid"]) == \
        (str(T), "5", "6")
    assert stat.S_ISLNK(link.mode)


async def test_rename_and_unlink_of_a_link(fs: Filesystem, mem: MemoryStore,
                                           nursery: trio.Nursery) -> None:
    await fs.links.symlink(ROOT_INODE, "l", b"dir/target", UID, GID)
    await fs.rename(ROOT_INODE, "l", ROOT_INODE, "m")
    assert "l" not in mem.objects
    assert mem.objects["m"].data == b"dir/target"
    assert int(mem.objects["m"].metadata["mode"]) == stat.S_IFLNK | 0o777
    fresh = _fs(mem, nursery)
    moved = await fresh.lookup(ROOT_INODE, "m")
    assert await fresh.links.readlink(moved.ino) == b"dir/target"
    await fs.unlink(ROOT_INODE, "m")
    assert "m" not in mem.objects


# -- special files -------------------------------------------------------------------------


async def test_symlink_mknod_and_link_move_their_directorys_mtime_and_ctime(
        mem: MemoryStore, nursery: trio.Nursery) -> None:
    fs = _fs(mem, nursery, hard_links="copy")
    d = await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
    f, fh = await fs.create(d.ino, "f", 0o644, UID, GID)
    await fs.release(fh)
    for step in ("symlink", "mknod", "link"):
        d.mtime_ns = d.ctime_ns = T * 10**9
        if step == "symlink":
            await fs.links.symlink(d.ino, "l", b"f", UID, GID)
        elif step == "mknod":
            await fs.links.mknod(d.ino, "p", stat.S_IFIFO | 0o600, 0, UID, GID)
        else:
            await fs.links.link(f.ino, d.ino, "h")
        assert d.mtime_ns > T * 10**9 and d.ctime_ns is not None and d.ctime_ns > T * 10**9


async def test_mknod_fifo_socket_device_and_regular(
        fs: Filesystem, mem: MemoryStore, nursery: trio.Nursery) -> None:
    fifo = await fs.links.mknod(ROOT_INODE, "fifo", stat.S_IFIFO | 0o640, 0, UID, GID)
    sock = await fs.links.mknod(ROOT_INODE, "sock", stat.S_IFSOCK | 0o755, 0, UID, GID)
    dev = os.makedev(8, 1)
    blk = await fs.links.mknod(ROOT_INODE, "sda1", stat.S_IFBLK | 0o660, dev, 0, 6)
    reg = await fs.links.mknod(ROOT_INODE, "empty", stat.S_IFREG | 0o600, 0, UID, GID)
    assert stat.S_ISFIFO(fifo.mode) and stat.S_ISSOCK(sock.mode) and stat.S_ISREG(reg.mode)
    assert stat.S_ISBLK(blk.mode) and blk.rdev == dev
    assert int(mem.objects["fifo"].metadata["mode"]) == stat.S_IFIFO | 0o640
    assert int(mem.objects["sock"].metadata["mode"]) == stat.S_IFSOCK | 0o755
    assert int(mem.objects["sda1"].metadata["mode"]) == stat.S_IFBLK | 0o660
    assert mem.objects["sda1"].metadata["rdev"] == str(dev)
    assert "rdev" not in mem.objects["fifo"].metadata
    assert int(mem.objects["empty"].metadata["mode"]) == stat.S_IFREG | 0o600
    assert all(mem.objects[k].data == b"" for k in ("fifo", "sock", "sda1", "empty"))
    # A fresh mount lists them with their types, device number included.
    listed = await _ls(_fs(mem, nursery))
    assert stat.S_ISFIFO(listed["fifo"].mode) and stat.S_ISSOCK(listed["sock"].mode)
    assert stat.S_ISBLK(listed["sda1"].mode) and listed["sda1"].rdev == dev
    assert (listed["sda1"].uid, listed["sda1"].gid) == (0, 6)
    assert stat.S_IMODE(listed["empty"].mode) == 0o600


# -- hard links ----------------------------------------------------------------------------


async def test_link_is_refused_with_eopnotsupp_by_default(
        fs: Filesystem, mem: MemoryStore) -> None:
    f, fh = await fs.create(ROOT_INODE, "f", 0o644, UID, GID)
    await fs.write(fh, 0, b"data")
    await fs.release(fh)
    assert await _errno(fs.links.link(f.ino, ROOT_INODE, "g")) == errno.EOPNOTSUPP
    assert "g" not in mem.objects


async def test_link_with_hard_links_copy_is_an_independent_copy(
        mem: MemoryStore, nursery: trio.Nursery) -> None:
    fs = _fs(mem, nursery, hard_links="copy")
    f, fh = await fs.create(ROOT_INODE, "f", 0o600, UID, GID)
    await fs.write(fh, 0, b"data")
    await fs.release(fh)
    g = await fs.links.link(f.ino, ROOT_INODE, "g")
    assert g.ino != f.ino and stat.S_IMODE(g.mode) == 0o600 and g.size == 4
    assert mem.objects["g"].data == b"data"
    assert mem.objects["g"].metadata["mode"] == mem.objects["f"].metadata["mode"]
    assert await _errno(fs.links.link(f.ino, ROOT_INODE, "g")) == errno.EEXIST
    with pytest.raises(ValueError):
        _opts(hard_links="symlink")


# -- stored attributes in listings -----------------------------------------------------------


async def test_readdir_shows_stored_attributes_and_types_never_defaults(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("d/key", b"secret", metadata=_meta(stat.S_IFREG | 0o600))
    await mem.put("d/link", b"key", metadata=_meta(stat.S_IFLNK | 0o777))
    await mem.put("d/plain", b"p", metadata={})  # another tool's object: the defaults
    await mem.put("d/sub/", b"", metadata=_meta(stat.S_IFDIR | 0o700, uid=3))
    await mem.put("d/sub/x", b"x", metadata={})
    d = await fs.lookup(ROOT_INODE, "d")
    heads = mem.counts["HeadObject"]
    listed = await _ls(fs, d.ino)
    assert mem.counts["HeadObject"] - heads == 4  # 3 objects and the sub/ marker
    key = listed["key"]
    assert stat.S_ISREG(key.mode) and stat.S_IMODE(key.mode) == 0o600
    assert (key.uid, key.gid, key.mtime_ns) == (7, 8, T * 10**9)
    assert stat.S_ISLNK(listed["link"].mode) and listed["link"].size == 3
    assert stat.S_IMODE(listed["plain"].mode) == 0o644 and listed["plain"].uid == UID
    assert stat.S_IMODE(listed["sub"].mode) == 0o700 and listed["sub"].uid == 3
    # Read once: listing again costs no HEAD while the ETags hold.
    await _ls(fs, d.ino)
    assert mem.counts["HeadObject"] - heads == 4
    # A changed object is read again.
    await mem.put("d/key", b"other", metadata=_meta(stat.S_IFREG | 0o640))
    fs.names.dropped("d")
    listed = await _ls(fs, d.ino)
    assert stat.S_IMODE(listed["key"].mode) == 0o640
    assert mem.counts["HeadObject"] - heads == 5


async def test_what_this_mount_wrote_lists_without_heads(fs: Filesystem,
                                                         mem: MemoryStore) -> None:
    for name in ("a", "b", "c"):
        _, fh = await fs.create(ROOT_INODE, name, 0o640, UID, GID)
        await fs.write(fh, 0, b"x")
        await fs.release(fh)
    await fs.links.symlink(ROOT_INODE, "l", b"a", UID, GID)
    await fs.mkdir(ROOT_INODE, "dir", 0o755, UID, GID)
    heads = mem.counts["HeadObject"]
    fs.names.dropped("")  # a real listing, not the cached one
    listed = await _ls(fs)
    assert set(listed) == {"a", "b", "c", "l", "dir"}
    assert mem.counts["HeadObject"] == heads
    assert stat.S_ISLNK(listed["l"].mode)


async def test_readdir_reads_ahead_in_batches(fs: Filesystem, mem: MemoryStore) -> None:
    for i in range(300):
        await mem.put(f"many/f{i:03d}", b"", metadata=_meta(stat.S_IFREG | 0o600))
    many = await fs.lookup(ROOT_INODE, "many")
    fh = fs.opendir(many.ino)
    heads = mem.counts["HeadObject"]
    first = [inode for _, inode, _ in await fs.readdir(fh, 0)][:50]
    assert 128 <= mem.counts["HeadObject"] - heads < 300  # one batch, not the directory
    assert all(stat.S_IMODE(i.mode) == 0o600 for i in first[2:])
    rest = list(await fs.readdir(fh, 200))
    assert all(stat.S_IMODE(i.mode) == 0o600 for _, i, _ in rest)
    fs.releasedir(fh)


# -- s3fs's directory objects, the root --------------------------------------------------------


async def test_a_key_marked_application_x_directory_is_a_directory(
        fs: Filesystem, mem: MemoryStore, nursery: trio.Nursery) -> None:
    await mem.put("olddir", b"", metadata=_meta(stat.S_IFDIR | 0o750))
    mem.objects["olddir"].props["ContentType"] = "application/x-directory"
    await mem.put("file", b"", metadata={})
    listed = await _ls(fs)
    assert listed["olddir"].is_dir and stat.S_ISDIR(listed["olddir"].mode)
    assert stat.S_IMODE(listed["olddir"].mode) == 0o750
    assert not listed["file"].is_dir
    fresh = _fs(mem, nursery)
    olddir = await fresh.lookup(ROOT_INODE, "olddir")
    assert olddir.is_dir and stat.S_IMODE(olddir.mode) == 0o750
    assert await _ls(fresh, olddir.ino) == {}
    await fresh.rmdir(ROOT_INODE, "olddir")
    assert "olddir" not in mem.objects


async def test_root_attributes_of_a_bucket_mount_stay_in_memory(
        fs: Filesystem, mem: MemoryStore) -> None:
    before = sum(mem.counts.values())
    root = await fs.setattr(ROOT_INODE, SetAttr(mode=0o700, mtime_ns=T * 10**9, uid=4))
    assert stat.S_IMODE(root.mode) == 0o700 and root.uid == 4 and stat.S_ISDIR(root.mode)
    assert sum(mem.counts.values()) == before and "" not in mem.objects


async def test_root_attributes_of_a_prefix_mount_live_on_its_marker(
        mem: MemoryStore, nursery: trio.Nursery) -> None:
    fs = _fs(mem, nursery, prefix="p/")
    await fs.setattr(ROOT_INODE, SetAttr(mode=0o710, mtime_ns=T * 10**9))
    assert int(mem.objects["p/"].metadata["mode"]) == stat.S_IFDIR | 0o710
    fresh = _fs(mem, nursery, prefix="p/")
    root = await fresh.getattr(ROOT_INODE)
    assert stat.S_IMODE(root.mode) == 0o710 and root.mtime_ns == T * 10**9


async def test_an_object_s3_will_not_head_does_not_fail_the_directory(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("d/ok", b"x", metadata=_meta(stat.S_IFREG | 0o600))
    await mem.put("d/refused", b"x", metadata=_meta(stat.S_IFREG | 0o600))
    d = await fs.lookup(ROOT_INODE, "d")
    real_head = mem.head

    async def head(key: str) -> object:
        if key == "d/refused":
            raise AccessDenied("denied", code="AccessDenied")
        return await real_head(key)

    mem.head = head  # type: ignore[method-assign,assignment]
    listed = await _ls(fs, d.ino)
    assert stat.S_IMODE(listed["ok"].mode) == 0o600
    assert not listed["refused"].known  # not cached by the kernel (fuse_ops: timeout 0)


async def test_mv_of_an_s3fs_directory_object_leaves_no_old_name(
        fs: Filesystem, mem: MemoryStore, nursery: trio.Nursery) -> None:
    await mem.put("olddir", b"", metadata=_meta(stat.S_IFDIR | 0o750))
    mem.objects["olddir"].props["ContentType"] = "application/x-directory"
    await mem.put("olddir/f", b"x", metadata={})
    olddir = await fs.lookup(ROOT_INODE, "olddir")
    assert olddir.is_dir
    await fs.rename(ROOT_INODE, "olddir", ROOT_INODE, "newdir")
    assert sorted(mem.objects) == ["newdir/", "newdir/f"]
    assert int(mem.objects["newdir/"].metadata["mode"]) == stat.S_IFDIR | 0o750
    listed = await _ls(_fs(mem, nursery))
    assert set(listed) == {"newdir"} and stat.S_IMODE(listed["newdir"].mode) == 0o750
