"""Extended attributes, kept metadata and the three timestamps (s3mpfs.xattrops, xattrs,
xattrcodec, inodes) on MemoryStore, without FUSE."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import trio

from s3mpfs import objcopy, xattrcodec
from s3mpfs.fs import Filesystem, SetAttr
from s3mpfs.inodes import METADATA_MAX, ROOT_INODE, Inode, metadata_size
from s3mpfs.store.memory import MemoryStore
from s3mpfs.xattrs import XATTR_CREATE, XATTR_REPLACE
from tests.helpers.memfs import GID, UID
from tests.helpers.memfs import errno_of as _errno
from tests.helpers.memfs import fs_options as _opts

BINARY = bytes(range(256))
FOREIGN = {"md5chksum": "1B2M2Y8AsgTpgAmY7PhCfg==", "application": "kept"}


async def _stored(fs: Filesystem, name: str, data: bytes = b"data") -> Inode:
    inode, fh = await fs.create(ROOT_INODE, name, 0o644, UID, GID)
    await fs.write(fh, 0, data)
    await fs.release(fh)
    return inode


async def _remounted(mem: MemoryStore, nursery: trio.Nursery) -> Filesystem:
    """A fresh mount of the same store: nothing cached, only what S3 holds."""
    other = Filesystem(mem, _opts())
    other.start(nursery)
    return other


# -- the x-amz-meta-xattr encoding (s3fs-fuse's build_xattrs / parse_xattrs) ----------------


def test_encoding_is_s3fs_byte_for_byte() -> None:
    # '{"user.a":"AP8=","user.b":""}' percent-encoded but for letters, digits and .-_~/
    value = xattrcodec.encode({"user.b": b"", "user.a": b"\x00\xff"})
    assert value == "%7B%22user.a%22%3A%22AP8%3D%22%2C%22user.b%22%3A%22%22%7D"
    assert xattrcodec.decode(value) == {"user.a": b"\x00\xff", "user.b": b""}
    assert xattrcodec.encode({}) == "%7B%7D"


def test_decoding_what_s3fs_writes_and_skips_what_does_not_parse() -> None:
    # s3fs writes names raw inside the JSON; a pair without ':' or quotes is skipped
    raw = '{"user.mime_type":"dGV4dC9wbGFpbg==","broken","user.x":"eA=="}'
    header = "".join(c if c.isalnum() or c in ".-_~/" else f"%{ord(c):02X}" for c in raw)
    assert xattrcodec.decode(header) == {"user.mime_type": b"text/plain", "user.x": b"x"}
    assert xattrcodec.decode("not json") == {}


def test_names_s3fs_cannot_hold_round_trip() -> None:
    odd = {"user.a,b": b"1", "user.c:d": b"2", 'user."q"': b"3", "user.100%": b"4",
           "user.\u00e9t\u00e9": BINARY, "user.\udcff": b"5"}
    assert xattrcodec.decode(xattrcodec.encode(odd)) == odd


# -- setxattr / getxattr / listxattr / removexattr ------------------------------------------


async def test_set_on_a_stored_file_is_one_self_copy_that_keeps_the_rest(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"data", metadata={**FOREIGN, "mode": str(stat.S_IFREG | 0o600)})
    inode = await fs.lookup(ROOT_INODE, "f")
    before = dict(mem.counts)
    await fs.setxattr(inode.ino, "user.bin", BINARY)
    assert mem.counts["CopyObject"] == before.get("CopyObject", 0) + 1
    assert mem.counts["PutObject"] == before.get("PutObject", 0)
    meta = mem.objects["f"].metadata
    assert xattrcodec.decode(meta["xattr"]) == {"user.bin": BINARY}
    assert {k: meta[k] for k in FOREIGN} == FOREIGN
    assert meta["mode"] == str(stat.S_IFREG | 0o600)
    assert await fs.getxattr(inode.ino, "user.bin") == BINARY
    assert "user.bin" in await fs.listxattr(inode.ino)
    await fs.removexattr(inode.ino, "user.bin")
    assert "xattr" not in mem.objects["f"].metadata
    assert {k: mem.objects["f"].metadata[k] for k in FOREIGN} == FOREIGN
    assert await _errno(fs.getxattr(inode.ino, "user.bin")) == errno.ENODATA
    assert await _errno(fs.removexattr(inode.ino, "user.bin")) == errno.ENODATA


async def test_flags_and_namespaces(fs: Filesystem, mem: MemoryStore) -> None:
    inode = await _stored(fs, "f")
    await fs.setxattr(inode.ino, "user.a", b"1", XATTR_CREATE)
    assert await _errno(fs.setxattr(inode.ino, "user.a", b"2", XATTR_CREATE)) == errno.EEXIST
    assert await _errno(fs.setxattr(inode.ino, "user.b", b"2", XATTR_REPLACE)) == errno.ENODATA
    await fs.setxattr(inode.ino, "user.a", b"3", XATTR_REPLACE)
    assert await fs.getxattr(inode.ino, "user.a") == b"3"
    for name in ("user.s3.etag", "user.s3mpfs.progress", "user.s3mpfs.other"):
        assert await _errno(fs.setxattr(inode.ino, name, b"x")) == errno.EPERM
        assert await _errno(fs.removexattr(inode.ino, name)) == errno.EPERM
    for name in ("security.selinux", "trusted.x", "system.posix_acl_access"):
        assert await _errno(fs.setxattr(inode.ino, name, b"x")) == errno.EOPNOTSUPP
    assert await _errno(fs.getxattr(inode.ino, "system.posix_acl_access")) == errno.EOPNOTSUPP
    assert await _errno(fs.getxattr(inode.ino, "security.capability")) == errno.ENODATA
    # computed names are read by name, never listed: a copy of the file must not carry them
    assert await fs.listxattr(inode.ino) == ["user.a"]
    assert await fs.getxattr(inode.ino, "user.s3.etag") == str(inode.etag).strip('"').encode()


async def test_a_set_beyond_s3s_2_kb_fails_and_changes_nothing(
        fs: Filesystem, mem: MemoryStore) -> None:
    inode = await _stored(fs, "f")
    await fs.setxattr(inode.ino, "user.small", b"s")
    stored, copies = dict(mem.objects["f"].metadata), mem.counts["CopyObject"]
    assert await _errno(fs.setxattr(inode.ino, "user.big", b"x" * 1600)) == errno.E2BIG
    assert mem.objects["f"].metadata == stored
    assert mem.counts["CopyObject"] == copies
    assert await fs.listxattr(inode.ino) == ["user.small"]
    # the largest value that fits is accepted, and S3's count stays within 2 KB
    room = METADATA_MAX - metadata_size(inode.metadata())
    await fs.setxattr(inode.ino, "user.fit", b"y" * (room * 3 // 4 - 40))
    assert metadata_size(mem.objects["f"].metadata) <= METADATA_MAX


async def test_xattrs_ride_on_the_upload_of_a_file_being_written(
        fs: Filesystem, mem: MemoryStore) -> None:
    inode, fh = await fs.create(ROOT_INODE, "new", 0o644, UID, GID)
    await fs.write(fh, 0, b"abc")
    await fs.setxattr(inode.ino, "user.bin", BINARY)
    assert await fs.getxattr(inode.ino, "user.bin") == BINARY
    await fs.release(fh)
    assert mem.counts["CopyObject"] == 0 and mem.counts["PutObject"] == 1
    assert xattrcodec.decode(mem.objects["new"].metadata["xattr"]) == {"user.bin": BINARY}


async def test_after_a_remount_one_head_gives_the_stored_xattrs(
        fs: Filesystem, mem: MemoryStore) -> None:
    inode = await _stored(fs, "f")
    await fs.setxattr(inode.ino, "user.bin", BINARY)
    async with trio.open_nursery() as n:
        other = await _remounted(mem, n)
        heads = mem.counts["HeadObject"]
        # readdir reads the stored attributes of what it lists (one HEAD each), xattrs too
        entries = list(await other.readdir(other.opendir(ROOT_INODE), 0))
        listed = next(i for name, i, _ in entries if name == "f")
        assert listed.known and mem.counts["HeadObject"] == heads + 1
        assert await other.listxattr(listed.ino) == ["user.bin"]
        assert await other.getxattr(listed.ino, "user.bin") == BINARY
        assert mem.counts["HeadObject"] == heads + 1  # nothing more
        n.cancel_scope.cancel()


async def test_xattrs_and_foreign_metadata_survive_chmod_touch_and_rename(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("a", b"data", metadata=dict(FOREIGN))
    inode = await fs.lookup(ROOT_INODE, "a")
    await fs.setxattr(inode.ino, "user.k", b"v")
    await fs.setattr(inode.ino, SetAttr(mode=0o600, uid=5, mtime_ns=10**18))
    await fs.rename(ROOT_INODE, "a", ROOT_INODE, "b.txt")
    meta = mem.objects["b.txt"].metadata
    assert {k: meta[k] for k in FOREIGN} == FOREIGN
    assert xattrcodec.decode(meta["xattr"]) == {"user.k": b"v"}
    assert (meta["mode"], meta["uid"], meta["mtime"]) == (str(stat.S_IFREG | 0o600), "5",
                                                           "1000000000")


async def test_directory_xattrs_live_on_its_marker(fs: Filesystem, mem: MemoryStore) -> None:
    d = await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
    await fs.setxattr(d.ino, "user.dir", b"\x00")
    assert xattrcodec.decode(mem.objects["d/"].metadata["xattr"]) == {"user.dir": b"\x00"}
    async with trio.open_nursery() as n:
        other = await _remounted(mem, n)
        looked = await other.lookup(ROOT_INODE, "d")
        assert await other.getxattr(looked.ino, "user.dir") == b"\x00"
        n.cancel_scope.cancel()


# -- timestamps ------------------------------------------------------------------------------


async def test_ctime_moves_on_chmod_and_is_stored(fs: Filesystem, mem: MemoryStore) -> None:
    inode = await _stored(fs, "f")
    before = inode.ctime
    await trio.sleep(0.01)
    await fs.setattr(inode.ino, SetAttr(mode=0o600))
    assert inode.ctime > before and inode.mtime_ns < inode.ctime
    assert mem.objects["f"].metadata["ctime"] == _fmt(inode.ctime)


async def test_atime_is_set_by_utimens_kept_by_reads_and_stored(
        fs: Filesystem, mem: MemoryStore) -> None:
    inode = await _stored(fs, "f")
    atime = 1_500_000_000_123_456_789
    await fs.setattr(inode.ino, SetAttr(atime_ns=atime))
    assert inode.atime == atime and inode.mtime_ns != atime
    assert mem.objects["f"].metadata["atime"] == "1500000000.123456789"
    fh = await fs.open(inode.ino, 0)
    assert await fs.read(fh, 0, 4) == b"data"
    await fs.release(fh)
    assert inode.atime == atime  # noatime: reads never move it
    async with trio.open_nursery() as n:
        other = await _remounted(mem, n)
        again = await other.lookup(ROOT_INODE, "f")
        assert (again.atime, again.ctime) == (atime, inode.ctime)
        n.cancel_scope.cancel()


async def test_objects_without_atime_and_ctime_show_the_mtime(
        fs: Filesystem, mem: MemoryStore) -> None:
    await mem.put("f", b"x", metadata={"mtime": "1700000000"})
    inode = await fs.lookup(ROOT_INODE, "f")
    assert inode.atime == inode.ctime == inode.mtime_ns == 1_700_000_000 * 10**9


async def test_a_directorys_mtime_and_ctime_move_with_its_entries(fs: Filesystem) -> None:
    d = await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
    for step in ("create", "rename", "unlink"):
        before = d.mtime_ns
        await trio.sleep(0.01)
        if step == "create":
            _, fh = await fs.create(d.ino, "x", 0o644, UID, GID)
            await fs.release(fh)
        elif step == "rename":
            await fs.rename(d.ino, "x", d.ino, "y")
        else:
            await fs.unlink(d.ino, "y")
        assert d.mtime_ns > before and d.ctime == d.mtime_ns, step


async def test_rename_moves_ctime_and_stores_it(fs: Filesystem, mem: MemoryStore) -> None:
    inode = await _stored(fs, "f")
    before = inode.ctime
    await trio.sleep(0.01)
    await fs.rename(ROOT_INODE, "f", ROOT_INODE, "g")
    assert inode.ctime > before
    assert mem.objects["g"].metadata["ctime"] == _fmt(inode.ctime)


def _fmt(ns: int) -> str:
    sec, nsec = divmod(ns, 10**9)
    return f"{sec}.{nsec:09d}" if nsec else str(sec)


async def test_rewrites_keep_xattrs_and_foreign_metadata(
        fs: Filesystem, mem: MemoryStore) -> None:
    """An append or an O_TRUNC overwrite replaces the object but not the inode: on a disk its
    xattrs stay, and so do they here (and an application's own x-amz-meta-*)."""
    await mem.put("f", b"data", metadata=dict(FOREIGN))
    inode = await fs.lookup(ROOT_INODE, "f")
    await fs.setxattr(inode.ino, "user.k", BINARY)
    for flags, data in ((os.O_WRONLY | os.O_APPEND, b"more"), (os.O_WRONLY | os.O_TRUNC, b"x")):
        fh = await fs.open(inode.ino, flags)
        await fs.write(fh, 4 if flags & os.O_APPEND else 0, data)
        await fs.release(fh)
        meta = mem.objects["f"].metadata
        assert xattrcodec.decode(meta["xattr"]) == {"user.k": BINARY}, flags
        assert {k: meta[k] for k in FOREIGN} == FOREIGN, flags
    assert mem.objects["f"].data == b"x"


async def test_a_multipart_copy_keeps_cache_control_and_co(
        fs: Filesystem, mem: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects over 5 GiB are copied part by part: a new object, which keeps the source's
    Cache-Control & co. only because the copy sends them (5 GiB shrunk to 4 bytes here)."""
    monkeypatch.setattr(objcopy, "MAX_PART_SIZE", 3)
    monkeypatch.setattr(objcopy, "copy_ranges", lambda size: [(0, size)])
    await mem.put("big.bin", b"data", metadata=dict(FOREIGN))
    mem.objects["big.bin"].props.update(CacheControl="no-cache", ContentLanguage="fr")
    inode = await fs.lookup(ROOT_INODE, "big.bin")
    await fs.setattr(inode.ino, SetAttr(mode=0o600))
    await fs.rename(ROOT_INODE, "big.bin", ROOT_INODE, "moved.bin")
    assert mem.counts["UploadPartCopy"] == 2 and mem.counts["CopyObject"] == 0
    obj = mem.objects["moved.bin"]
    assert (obj.props["CacheControl"], obj.props["ContentLanguage"]) == ("no-cache", "fr")
    assert {k: obj.metadata[k] for k in FOREIGN} == FOREIGN
    assert obj.metadata["mode"] == str(stat.S_IFREG | 0o600) and obj.data == b"data"
