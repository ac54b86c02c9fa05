"""list_dir (s3mpfs.listing) on MemoryStore."""

from __future__ import annotations

import logging

import pytest

from s3mpfs.inodes import Kind
from s3mpfs.listing import NAME_MAX, DirEntry, valid_name
from s3mpfs.listing import list_dir as _list_dir
from s3mpfs.store.memory import MemoryStore


async def list_dir(store: MemoryStore, dir_key: str) -> list[DirEntry]:
    entries = await _list_dir(store, dir_key)
    assert entries is not None  # no max_pages: always the whole directory
    return entries


async def _put(store: MemoryStore, *keys: str, data: bytes = b"") -> None:
    for key in keys:
        await store.put(key, data, metadata={})


async def test_entries_are_files_and_prefixes_sorted(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    await _put(store, "d/b.txt", "d/a.txt", "d/sub/x", "d/sub/y", "d/zz/deep/er", "other/q")
    await _put(store, "d/sized", data=b"12345")
    entries = await list_dir(store, "d/")
    assert [(e.name, e.kind) for e in entries] == [
        ("a.txt", Kind.FILE), ("b.txt", Kind.FILE), ("sized", Kind.FILE),
        ("sub", Kind.DIR), ("zz", Kind.DIR),
    ]
    sized = next(e for e in entries if e.name == "sized")
    assert sized.size == 5
    assert sized.etag == store.objects["d/sized"].etag
    assert sized.mtime == pytest.approx(store.objects["d/sized"].mtime)
    assert caplog.records == []


async def test_root_listing() -> None:
    store = MemoryStore()
    await _put(store, "top", "dir/x")
    assert [(e.name, e.kind) for e in await list_dir(store, "")] == [
        ("dir", Kind.DIR), ("top", Kind.FILE)]


async def test_marker_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    await _put(store, "d/", "d/f", "d/empty/")
    entries = await list_dir(store, "d/")
    assert [(e.name, e.kind) for e in entries] == [("empty", Kind.DIR), ("f", Kind.FILE)]
    assert await list_dir(store, "d/empty/") == []
    assert caplog.records == []


@pytest.mark.parametrize("key", [
    "d/a//b",          # empty segment: prefix "d/a//" listed under "d/a/"
    "d/.", "d/..",     # files named . and ..
    "d/./x", "d/../x",  # directories named . and ..
    "d/" + "n" * (NAME_MAX + 1),
    "d/" + "p" * (NAME_MAX + 1) + "/x",
    "d/" + "é" * 128,  # 256 bytes of UTF-8 in 128 characters
])
async def test_invalid_names_are_skipped_with_a_warning(
        caplog: pytest.LogCaptureFixture, key: str) -> None:
    store = MemoryStore()
    await _put(store, key, "d/ok", "d/a/fine")
    caplog.set_level(logging.WARNING, logger="s3mpfs.listing")
    listed = {e.name for e in await list_dir(store, "d/")}
    listed |= {"a/" + e.name for e in await list_dir(store, "d/a/")}
    assert {"ok", "a", "a/fine"} <= listed
    assert len(listed) == 3, listed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipping" in warnings[0].getMessage()


async def test_longest_valid_name_is_listed() -> None:
    store = MemoryStore()
    name = "m" * NAME_MAX
    await _put(store, "d/" + name, "d/" + "é" * (NAME_MAX // 2))
    assert {e.name for e in await list_dir(store, "d/")} == {name, "é" * (NAME_MAX // 2)}


async def test_pagination_over_more_than_1000_keys() -> None:
    store = MemoryStore()
    files = [f"d/file{i:05d}" for i in range(2500)]
    dirs = [f"d/dir{i:04d}/x" for i in range(300)]
    await _put(store, *files, *dirs)
    store.counts.clear()
    entries = await list_dir(store, "d/")
    assert store.counts["ListObjectsV2"] == 3  # 2,800 entries, 1,000 per page
    names = [e.name for e in entries]
    assert names == sorted({k.split("/")[1] for k in files + dirs})
    assert len(names) == 2800
    assert sum(e.kind is Kind.DIR for e in entries) == 300


async def test_max_pages_gives_up_on_bigger_directories() -> None:
    store = MemoryStore()
    await _put(store, *(f"d/f{i:04d}" for i in range(1000)))
    one_page = await _list_dir(store, "d/", max_pages=1)
    assert one_page is not None and len(one_page) == 1000
    await _put(store, "d/one-more")
    store.counts.clear()
    assert await _list_dir(store, "d/", max_pages=1) is None
    assert store.counts["ListObjectsV2"] == 1


async def test_file_and_prefix_with_one_name_is_one_directory(
        caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    await _put(store, "d/x", "d/x/inner", "d/y")
    caplog.set_level(logging.WARNING, logger="s3mpfs.listing")
    entries = await list_dir(store, "d/")
    # The directory's entry carries the object's ETag (it may be s3fs's `dir` object).
    assert entries == [DirEntry("x", Kind.DIR, etag=store.objects["d/x"].etag), entries[1]]
    assert (entries[1].name, entries[1].kind) == ("y", Kind.FILE)
    assert any("both a file and a prefix" in r.getMessage() for r in caplog.records)


async def test_file_and_prefix_with_one_name_on_different_pages() -> None:
    """The object "d/x" ends page 1 and the prefix "d/x/" starts page 2."""
    store = MemoryStore()
    await _put(store, *(f"d/a{i:04d}" for i in range(999)), "d/x", "d/x/inner")
    entries = await list_dir(store, "d/")
    assert store.counts["ListObjectsV2"] == 2
    assert len(entries) == 1000
    assert entries[-1] == DirEntry("x", Kind.DIR, etag=store.objects["d/x"].etag)


def test_valid_name() -> None:
    assert valid_name("a") and valid_name("...") and valid_name(".hidden")
    assert not valid_name("") and not valid_name(".") and not valid_name("..")
    assert valid_name("x" * 255) and not valid_name("x" * 256)
