"""One suite, two stores: MemoryStore must behave like S3 (moto's server) wherever the
filesystem depends on it. Every test runs against both; a difference is a bug in memory.py
(or, where marked, a known gap in moto that real S3 does not have)."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from typing import Any

import pytest
import trio

from s3mpfs.config import MIN_PART_SIZE, S3Config
from s3mpfs.errors import NoSuchUpload, NotFound, PreconditionFailed, StoreError
from s3mpfs.store import boto as boto_module
from s3mpfs.store.base import ObjectStore
from s3mpfs.store.boto import BotoStore
from s3mpfs.store.markers import MARKER_MAX, MARKER_PREFIX, marker_key, parse_marker
from s3mpfs.store.memory import MemoryStore

PART = MIN_PART_SIZE
MOTO_IGNORES_COPY_IF_MATCH = (
    "moto 5.2 ignores x-amz-copy-source-if-match (it only checks -if-none-match); real S3 "
    "answers 412. test_boto_sends_copy_source_if_match checks BotoStore sends the header."
)


@pytest.fixture(params=["memory", "boto"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    if request.param == "memory":
        return MemoryStore()
    url = request.getfixturevalue("moto_server").url
    bucket = request.getfixturevalue("bucket")
    return BotoStore(S3Config(bucket, endpoint_url=url), threads=8)


def _moto_gap(request: pytest.FixtureRequest, store: ObjectStore, reason: str,
              capability: str = "copy_source_if_match") -> None:
    """Strict xfail for BotoStore on a server lacking `capability` (moto; see `reason`): passes
    again (and fails) once the server is fixed. Servers that have it run the test as is."""
    if isinstance(store, BotoStore):
        server = request.getfixturevalue("server")
        if not server.has(capability):
            why = reason if server.kind == "moto" else server.why_not(capability)
            request.applymarker(pytest.mark.xfail(strict=True, reason=why))


def _md5(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def _multipart_etag(etags: list[str]) -> str:
    digest = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for e in etags)).hexdigest()
    return f'"{digest}-{len(etags)}"'


def _pattern(size: int, seed: int = 0) -> bytes:
    block = bytes((i * 7 + seed) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


async def _all_pages(store: ObjectStore, prefix: str, *, max_keys: int,
                     delimiter: str | None = "/") -> tuple[list[str], list[str], int]:
    keys: list[str] = []
    prefixes: list[str] = []
    pages = 0
    token: str | None = None
    while True:
        page = await store.list_page(prefix, delimiter=delimiter, token=token,
                                     max_keys=max_keys)
        pages += 1
        assert len(page.objects) + len(page.prefixes) <= max_keys
        keys += [o.key for o in page.objects]
        prefixes += page.prefixes
        token = page.next_token
        if token is None:
            return keys, prefixes, pages
        assert pages < 100, "listing does not end"


# -- objects -------------------------------------------------------------------------------


async def test_put_head_get_range(store: ObjectStore) -> None:
    data = b"hello, world: " + _pattern(1000)
    etag = await store.put("dir/obj", data, metadata={})
    assert etag == _md5(data)
    info = await store.head("dir/obj")
    assert (info.key, info.size, info.etag) == ("dir/obj", len(data), etag)
    assert info.mtime > 0
    assert await store.get_range("dir/obj", 0, len(data)) == data
    assert await store.get_range("dir/obj", 0, 5) == b"hello"
    assert await store.get_range("dir/obj", 7, 12) == b"world"
    assert await store.get_range("dir/obj", len(data) - 1, len(data)) == data[-1:]
    assert await store.get_range("dir/obj", 5, 5) == b""
    # A range running past the end is cut at the end, as HTTP Range is.
    assert await store.get_range("dir/obj", 100, len(data) + 500) == data[100:]


async def test_get_range_starting_past_the_end_is_an_error(store: ObjectStore) -> None:
    await store.put("k", b"0123456789", metadata={})
    for start in (10, 20):
        with pytest.raises(StoreError) as exc:
            await store.get_range("k", start, start + 5)
        assert exc.value.code == "InvalidRange"
        assert not isinstance(exc.value, NotFound)


async def test_put_replaces_and_accepts_bytearray_and_empty(store: ObjectStore) -> None:
    await store.put("k", bytearray(b"first version"), metadata={})
    etag = await store.put("k", b"second", metadata={})
    assert await store.get_range("k", 0, 100) == b"second"
    assert (await store.head("k")).etag == etag
    empty = await store.put("empty", b"", metadata={})
    assert empty == _md5(b"")
    assert (await store.head("empty")).size == 0


async def test_get_range_if_match(store: ObjectStore) -> None:
    etag = await store.put("k", b"abcdef", metadata={})
    assert await store.get_range("k", 1, 4, if_match=etag) == b"bcd"
    with pytest.raises(PreconditionFailed):
        await store.get_range("k", 1, 4, if_match=_md5(b"something else"))
    # The object is replaced after a reader saw its ETag: the reader's next GET refuses.
    await store.put("k", b"ABCDEF", metadata={})
    with pytest.raises(PreconditionFailed):
        await store.get_range("k", 0, 2, if_match=etag)


async def test_get_pieces_one_get_delivered_in_order(store: ObjectStore) -> None:
    data = os.urandom(300_000)
    etag = await store.put("k", data, metadata={})
    got: list[tuple[int, bytes]] = []

    def keep(i: int, piece: bytes | memoryview) -> bool:
        got.append((i, bytes(piece)))
        return True

    before = store.counts["GetObject"]
    await store.get_pieces("k", 1000, [100_000, 100_000, 50_000], keep, if_match=etag)
    assert store.counts["GetObject"] - before == 1
    assert got == [(0, data[1000:101_000]), (1, data[101_000:201_000]),
                   (2, data[201_000:251_000])]
    got.clear()
    await store.get_pieces("k", 0, [10, 10, 10], lambda i, p: keep(i, p) and i < 1)
    assert got == [(0, data[:10]), (1, data[10:20])]  # stopped after deliver said no
    with pytest.raises(PreconditionFailed):
        await store.get_pieces("k", 0, [10], keep, if_match=_md5(b"something else"))
    with pytest.raises(NotFound):
        await store.get_pieces("missing", 0, [10], keep)


async def test_get_pieces_reads_into_the_buffers_given(store: ObjectStore) -> None:
    data = os.urandom(300_000)
    await store.put("k", data, metadata={})
    given: list[bytearray] = []

    def buffers(n: int) -> memoryview:
        buf = bytearray(b"?" * (n + 10))  # larger than asked, as the pool's buffers are
        given.append(buf)
        return memoryview(buf)[:n]

    got: list[memoryview] = []

    def keep(i: int, piece: bytes | memoryview) -> bool:
        assert isinstance(piece, memoryview)
        got.append(piece)
        return True

    # The object ends 10,000 bytes into the second piece: that one comes short.
    await store.get_pieces("k", 250_000, [40_000, 40_000], keep, buffers=buffers)
    assert [bytes(p) for p in got] == [data[250_000:290_000], data[290_000:]]
    assert all(p.obj is buf for p, buf in zip(got, given, strict=True))  # the ones handed out
    assert given[1][10_000:] == b"?" * 30_010  # nothing written past the body


async def test_missing_key(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        await store.head("no/such/key")
    with pytest.raises(NotFound):
        await store.get_range("no/such/key", 0, 10)
    with pytest.raises(NotFound):
        await store.copy("no/such/key", "dst", metadata={})


async def test_delete(store: ObjectStore) -> None:
    await store.put("a/b", b"x", metadata={})
    await store.put("a/c", b"y", metadata={})
    await store.delete("a/b")
    with pytest.raises(NotFound):
        await store.head("a/b")
    assert (await store.head("a/c")).size == 1  # only that key went
    await store.delete("a/b")  # deleting a missing key is not an error
    await store.delete("never/existed")


async def test_metadata_round_trip_lowercases_keys(store: ObjectStore) -> None:
    meta = {"Mode": "33188", "UID": "1000", "gid": "1000", "mtime": "1700000000.123456789"}
    await store.put("m", b"data", metadata=meta)
    assert (await store.head("m")).metadata == {k.lower(): v for k, v in meta.items()}

    upload_id = await store.create_upload("mp", metadata={"Mode": "384"})
    etag = await store.upload_part("mp", upload_id, 1, b"tail")
    await store.complete_upload("mp", upload_id, [(1, etag)])
    assert (await store.head("mp")).metadata == {"mode": "384"}


async def test_copy_keeps_metadata_without_replacement(store: ObjectStore) -> None:
    data = _pattern(3000)
    src_etag = await store.put("src", data, metadata={"mode": "33188", "uid": "7"})
    etag = await store.copy("src", "dst")
    assert etag == src_etag  # same bytes, single part: same MD5 ETag
    info = await store.head("dst")
    assert (info.size, info.etag) == (len(data), etag)
    assert info.metadata == {"mode": "33188", "uid": "7"}
    assert await store.get_range("dst", 0, len(data)) == data
    assert (await store.head("src")).metadata == {"mode": "33188", "uid": "7"}


async def test_copy_replaces_metadata(store: ObjectStore) -> None:
    await store.put("src", b"payload", metadata={"mode": "33188", "uid": "7"})
    await store.copy("src", "dst", metadata={"Mode": "33261"})
    assert (await store.head("dst")).metadata == {"mode": "33261"}
    assert (await store.head("src")).metadata == {"mode": "33188", "uid": "7"}
    assert await store.get_range("dst", 0, 100) == b"payload"


HEADERS = {"CacheControl": "max-age=3600", "ContentDisposition": 'attachment; filename="r.bin"',
           "ContentEncoding": "identity", "ContentLanguage": "de-CH"}


async def _put_with_headers(store: ObjectStore, key: str, data: bytes) -> str:
    """An object another tool stored, with Cache-Control & co. and foreign x-amz-meta-*."""
    meta = {"md5chksum": "abc", "app": "x"}
    if isinstance(store, BotoStore):
        r = await trio.to_thread.run_sync(lambda: store.client.put_object(
            Bucket=store.bucket, Key=key, Body=data, Metadata=meta, ContentType="text/x-app",
            **HEADERS))
        return str(r["ETag"])
    assert isinstance(store, MemoryStore)
    etag = await store.put(key, data, metadata=meta)
    store.objects[key].props.update(HEADERS, ContentType="text/x-app")
    return etag


async def test_head_returns_system_headers_and_replacing_copies_keep_them(
        store: ObjectStore) -> None:
    """A self-copy with new metadata (chmod) and a rename to another type (REPLACE with the
    source's metadata) keep Cache-Control & co.: S3 drops them unless they are sent again."""
    etag = await _put_with_headers(store, "k.bin", b"payload")
    info = await store.head("k.bin")
    assert {k: info.headers.get(k) for k in HEADERS} == HEADERS
    assert info.headers["ContentType"] == "text/x-app"
    await store.copy("k.bin", "k.bin", metadata={**info.metadata, "mode": "33152"},
                     src_etag=etag)
    after = await store.head("k.bin")
    assert after.metadata == {"md5chksum": "abc", "app": "x", "mode": "33152"}
    assert {k: after.headers.get(k) for k in HEADERS} == HEADERS
    assert after.headers["ContentType"] == "text/x-app"  # a metadata change keeps the type
    await store.copy("k.bin", "k.txt")  # another type: REPLACE with the source's metadata
    moved = await store.head("k.txt")
    assert moved.headers["ContentType"] == "text/plain"
    assert {k: moved.headers.get(k) for k in HEADERS} == HEADERS
    assert moved.metadata["md5chksum"] == "abc"


async def test_multipart_upload_sets_the_headers_it_is_given(store: ObjectStore) -> None:
    """objcopy.py's multipart copy (> 5 GiB) keeps its source's Cache-Control & co. so."""
    upload_id = await store.create_upload("mp.bin", metadata={"m": "1"}, headers=HEADERS)
    etag = await store.upload_part("mp.bin", upload_id, 1, b"x")
    await store.complete_upload("mp.bin", upload_id, [(1, etag)])
    info = await store.head("mp.bin")
    assert {k: info.headers.get(k) for k in HEADERS} == HEADERS
    assert info.metadata == {"m": "1"}


async def test_copy_onto_itself_needs_new_metadata(store: ObjectStore) -> None:
    """fs.py changes x-amz-meta-* with CopyObject onto the same key (REPLACE); S3 refuses a
    self-copy that changes nothing."""
    etag = await store.put("k", b"payload", metadata={"mode": "33188"})
    new = await store.copy("k", "k", metadata={"mode": "33152"}, src_etag=etag)
    info = await store.head("k")
    assert (info.etag, info.metadata) == (new, {"mode": "33152"})
    assert await store.get_range("k", 0, 100) == b"payload"
    with pytest.raises(StoreError) as exc:
        await store.copy("k", "k")
    assert exc.value.code == "InvalidRequest"


async def test_copy_of_multipart_object_reports_the_stored_etag(store: ObjectStore) -> None:
    upload_id = await store.create_upload("mp", metadata={})
    e1 = await store.upload_part("mp", upload_id, 1, b"abc")
    await store.complete_upload("mp", upload_id, [(1, e1)])
    etag = await store.copy("mp", "copy", metadata={"mode": "1"})
    assert (await store.head("copy")).etag == etag
    assert await store.get_range("copy", 0, 10, if_match=etag) == b"abc"


async def test_copy_src_etag(request: pytest.FixtureRequest, store: ObjectStore) -> None:
    etag = await store.put("src", b"v1", metadata={})
    await store.copy("src", "dst", src_etag=etag)
    assert await store.get_range("dst", 0, 10) == b"v1"
    await store.put("src", b"v2", metadata={})
    _moto_gap(request, store, MOTO_IGNORES_COPY_IF_MATCH)
    with pytest.raises(PreconditionFailed):
        await store.copy("src", "dst2", src_etag=etag)


# -- listings ------------------------------------------------------------------------------

TREE = ["d/", "d/a/1", "d/a/2", "d/a/3", "d/b/x/deep", "d/c", "d/d/1", "d/e", "d/e/inner",
        "d/f", "d/g/1", "d/g/2", "d/h", "other/z", "top"]


async def _put_tree(store: ObjectStore) -> None:
    for i, key in enumerate(TREE):
        await store.put(key, b"x" * i, metadata={"mode": "420"})


async def test_list_page_delimiter_splits_objects_and_prefixes(store: ObjectStore) -> None:
    await _put_tree(store)
    page = await store.list_page("d/")
    assert page.next_token is None
    assert [o.key for o in page.objects] == ["d/", "d/c", "d/e", "d/f", "d/h"]
    assert page.prefixes == ["d/a/", "d/b/", "d/d/", "d/e/", "d/g/"]
    by_key = {o.key: o for o in page.objects}
    assert by_key["d/c"].size == TREE.index("d/c")
    assert by_key["d/c"].etag == _md5(b"x" * TREE.index("d/c"))
    assert all(o.metadata == {} for o in page.objects)  # listings carry no x-amz-meta

    root = await store.list_page("")
    assert [o.key for o in root.objects] == ["top"]
    assert root.prefixes == ["d/", "other/"]

    flat = await store.list_page("d/a", delimiter=None)
    assert [o.key for o in flat.objects] == ["d/a/1", "d/a/2", "d/a/3"]
    assert flat.prefixes == []

    assert await store.list_page("nothing/") == type(page)([], [], None)


@pytest.mark.parametrize("max_keys", [1, 2, 3, 4])
async def test_list_page_pagination(store: ObjectStore, max_keys: int) -> None:
    await _put_tree(store)
    keys, prefixes, pages = await _all_pages(store, "d/", max_keys=max_keys)
    # No duplicates across pages, even for a prefix whose keys span several pages.
    assert keys == ["d/", "d/c", "d/e", "d/f", "d/h"]
    assert prefixes == ["d/a/", "d/b/", "d/d/", "d/e/", "d/g/"]
    assert pages == -(-10 // max_keys)

    flat, none, _ = await _all_pages(store, "d/", max_keys=max_keys, delimiter=None)
    assert flat == sorted(k for k in TREE if k.startswith("d/"))
    assert none == []


# -- multipart uploads ---------------------------------------------------------------------


async def test_multipart_complete(store: ObjectStore) -> None:
    p1, p2, p3 = _pattern(PART, 1), _pattern(PART, 2), _pattern(1234, 3)
    upload_id = await store.create_upload("big", metadata={"mode": "33188"})
    e1 = await store.upload_part("big", upload_id, 1, p1)
    e2 = await store.upload_part("big", upload_id, 2, bytearray(p2))
    e3 = await store.upload_part("big", upload_id, 3, p3)
    assert [e1, e2, e3] == [_md5(p1), _md5(p2), _md5(p3)]
    etag = await store.complete_upload("big", upload_id, [(1, e1), (2, e2), (3, e3)])
    assert etag.endswith('-3"')
    assert etag == _multipart_etag([e1, e2, e3])
    info = await store.head("big")
    assert (info.size, info.etag, info.metadata) == (2 * PART + 1234, etag, {"mode": "33188"})
    assert await store.get_range("big", 0, info.size) == p1 + p2 + p3
    assert await store.get_range("big", PART - 2, PART + 2) == p1[-2:] + p2[:2]
    assert await store.list_uploads() == []


async def test_multipart_single_small_part(store: ObjectStore) -> None:
    upload_id = await store.create_upload("one", metadata={})
    e1 = await store.upload_part("one", upload_id, 1, b"short")
    etag = await store.complete_upload("one", upload_id, [(1, e1)])
    assert etag == _multipart_etag([e1])
    assert etag.endswith('-1"')
    assert await store.get_range("one", 0, 100) == b"short"


async def test_no_object_until_complete(store: ObjectStore) -> None:
    upload_id = await store.create_upload("pending", metadata={})
    etag = await store.upload_part("pending", upload_id, 1, b"abc")
    with pytest.raises(NotFound):
        await store.head("pending")
    assert (await store.list_page("")).objects == []
    uploads = await store.list_uploads()
    assert [(u.key, u.upload_id) for u in uploads] == [("pending", upload_id)]
    assert [u.key for u in await store.list_uploads("pen")] == ["pending"]
    assert await store.list_uploads("other") == []
    await store.complete_upload("pending", upload_id, [(1, etag)])
    assert (await store.head("pending")).size == 3


async def test_part_reupload_last_wins(store: ObjectStore) -> None:
    upload_id = await store.create_upload("k", metadata={})
    await store.upload_part("k", upload_id, 1, b"a" * PART)
    e1 = await store.upload_part("k", upload_id, 1, b"b" * PART)
    e2 = await store.upload_part("k", upload_id, 2, b"tail")
    parts = await store.list_parts("k", upload_id)
    assert [(p.number, p.size, p.etag) for p in parts] == [(1, PART, e1), (2, 4, e2)]
    await store.complete_upload("k", upload_id, [(1, e1), (2, e2)])
    assert await store.get_range("k", 0, 3) == b"bbb"
    assert (await store.head("k")).size == PART + 4


async def test_complete_with_stale_part_etag_fails(store: ObjectStore) -> None:
    upload_id = await store.create_upload("k", metadata={})
    old = await store.upload_part("k", upload_id, 1, b"first")
    await store.upload_part("k", upload_id, 1, b"second")
    with pytest.raises(StoreError) as exc:
        await store.complete_upload("k", upload_id, [(1, old)])
    assert exc.value.code == "InvalidPart"
    with pytest.raises(NotFound):
        await store.head("k")


async def test_small_non_last_part_is_entity_too_small(store: ObjectStore) -> None:
    upload_id = await store.create_upload("k", metadata={})
    e1 = await store.upload_part("k", upload_id, 1, b"a" * (PART - 1))
    e2 = await store.upload_part("k", upload_id, 2, b"b" * 10)
    with pytest.raises(StoreError) as exc:
        await store.complete_upload("k", upload_id, [(1, e1), (2, e2)])
    assert exc.value.code == "EntityTooSmall"
    with pytest.raises(NotFound):
        await store.head("k")


async def test_list_parts_sizes(store: ObjectStore) -> None:
    upload_id = await store.create_upload("k", metadata={})
    assert await store.list_parts("k", upload_id) == []
    e3 = await store.upload_part("k", upload_id, 3, b"z" * 77)
    e1 = await store.upload_part("k", upload_id, 1, b"y" * PART)
    parts = await store.list_parts("k", upload_id)
    assert [(p.number, p.size, p.etag) for p in parts] == [(1, PART, e1), (3, 77, e3)]
    # Gaps in part numbers are allowed at complete.
    await store.complete_upload("k", upload_id, [(1, e1), (3, e3)])
    assert (await store.head("k")).size == PART + 77


async def test_abort(store: ObjectStore) -> None:
    await store.put("k", b"previous", metadata={})
    upload_id = await store.create_upload("k", metadata={})
    other_id = await store.create_upload("other", metadata={})
    etag = await store.upload_part("k", upload_id, 1, b"new bytes")
    await store.abort_upload("k", upload_id)
    assert [u.upload_id for u in await store.list_uploads()] == [other_id]
    with pytest.raises(StoreError):
        await store.complete_upload("k", upload_id, [(1, etag)])
    with pytest.raises(NoSuchUpload):  # a NotFound, but EIO for a writer (errors.py)
        await store.list_parts("k", upload_id)
    with pytest.raises(StoreError):  # S3: NoSuchUpload; moto: 500
        await store.upload_part("k", upload_id, 2, b"late")
    assert await store.get_range("k", 0, 100) == b"previous"
    await store.abort_upload("other", other_id)
    assert await store.list_uploads() == []


async def test_list_uploads_one_page(request: pytest.FixtureRequest,
                                     store: ObjectStore) -> None:
    """max_uploads: one ListMultipartUploads request, the first uploads by key."""
    _moto_gap(request, store, "moto 5.2 ignores max-uploads", "max_uploads")
    for key in ("b", "a", "c"):
        await store.create_upload(key, metadata={})
    first = await store.list_uploads("", max_uploads=2)
    assert store.counts["ListMultipartUploads"] == 1
    assert sorted(u.key for u in await store.list_uploads("", max_uploads=1000)) == \
        ["a", "b", "c"]
    assert [u.key for u in first] == ["a", "b"]


async def test_marked_uploads_carry_a_marker_while_open(store: ObjectStore) -> None:
    """create_upload(mark=True): one PutObject of the marker; the store's Complete or Abort of
    that upload, one DeleteObject. Unmarked uploads cost nothing more."""
    upload_id = await store.create_upload("m", metadata={}, mark=True)
    marker = parse_marker(await store.get_range(marker_key(upload_id), 0, MARKER_MAX))
    assert marker is not None and (marker.key, marker.upload_id) == ("m", upload_id)
    etag = await store.upload_part("m", upload_id, 1, b"x")
    await store.complete_upload("m", upload_id, [(1, etag)])
    aborted = await store.create_upload("n", metadata={}, mark=True)
    await store.abort_upload("n", aborted)
    plain = await store.create_upload("p", metadata={})
    await store.abort_upload("p", plain)
    assert (await store.list_page(MARKER_PREFIX, delimiter=None)).objects == []
    assert store.counts == Counter({
        "CreateMultipartUpload": 3, "PutObject": 2, "GetObject": 1, "UploadPart": 1,
        "CompleteMultipartUpload": 1, "AbortMultipartUpload": 2, "DeleteObject": 2,
        "ListObjectsV2": 1})


async def test_upload_part_copy(store: ObjectStore) -> None:
    src = _pattern(PART + 5000, 9)
    src_etag = await store.put("src", src, metadata={"mode": "1"})
    upload_id = await store.create_upload("dst", metadata={"mode": "2"})
    c1 = await store.upload_part_copy("dst", upload_id, 1, "src", 0, PART, src_etag=src_etag)
    c2 = await store.upload_part_copy("dst", upload_id, 2, "src", 5000, PART + 5000)
    assert (c1, c2) == (_md5(src[:PART]), _md5(src[5000:]))
    e3 = await store.upload_part("dst", upload_id, 3, b"appended")
    parts = await store.list_parts("dst", upload_id)
    assert [(p.number, p.size) for p in parts] == [(1, PART), (2, PART), (3, 8)]
    etag = await store.complete_upload("dst", upload_id, [(1, c1), (2, c2), (3, e3)])
    assert etag == _multipart_etag([c1, c2, e3])
    info = await store.head("dst")
    assert info.metadata == {"mode": "2"}  # the upload's, not the source's
    assert await store.get_range("dst", 0, info.size) == src[:PART] + src[5000:] + b"appended"


async def test_upload_part_copy_from_the_key_being_replaced(store: ObjectStore) -> None:
    """upload.py continues a committed file by copying its parts onto the same key."""
    first = _pattern(PART, 4)
    up1 = await store.create_upload("f", metadata={})
    e1 = await store.upload_part("f", up1, 1, first)
    e2 = await store.upload_part("f", up1, 2, b"tail")
    committed = await store.complete_upload("f", up1, [(1, e1), (2, e2)])
    up2 = await store.create_upload("f", metadata={})
    c1 = await store.upload_part_copy("f", up2, 1, "f", 0, PART, src_etag=committed)
    e2b = await store.upload_part("f", up2, 2, b"tail and more")
    await store.complete_upload("f", up2, [(1, c1), (2, e2b)])
    assert await store.get_range("f", 0, 2 * PART) == first + b"tail and more"


async def test_upload_part_copy_src_etag_mismatch(request: pytest.FixtureRequest,
                                                  store: ObjectStore) -> None:
    old = await store.put("src", b"a" * 100, metadata={})
    await store.put("src", b"b" * 100, metadata={})
    upload_id = await store.create_upload("dst", metadata={})
    with pytest.raises(NotFound):
        await store.upload_part_copy("dst", upload_id, 1, "missing", 0, 10)
    _moto_gap(request, store, MOTO_IGNORES_COPY_IF_MATCH, "part_copy_if_match")
    with pytest.raises(PreconditionFailed):
        await store.upload_part_copy("dst", upload_id, 1, "src", 0, 100, src_etag=old)


async def test_counts_per_operation(store: ObjectStore) -> None:
    assert sum(store.counts.values()) == 0
    etag = await store.put("k", b"abc", metadata={})
    await store.head("k")
    await store.head("k")
    await store.get_range("k", 0, 2)
    await store.list_page("")
    await store.copy("k", "k2")
    await store.delete("k2")
    upload_id = await store.create_upload("m", metadata={})
    e1 = await store.upload_part_copy("m", upload_id, 1, "k", 0, 3, src_etag=etag)
    await store.upload_part("m", upload_id, 1, b"x")
    await store.list_parts("m", upload_id)
    await store.list_uploads()
    await store.complete_upload("m", upload_id, [(1, _md5(b"x"))])
    other = await store.create_upload("n", metadata={})
    await store.abort_upload("n", other)
    with pytest.raises(NotFound):
        await store.head("missing")  # failed requests are billed and counted too
    assert e1 == _md5(b"abc")
    assert store.counts == Counter({
        "PutObject": 1, "HeadObject": 3, "GetObject": 1, "ListObjectsV2": 1, "CopyObject": 1,
        "DeleteObject": 1, "CreateMultipartUpload": 2, "UploadPartCopy": 1, "UploadPart": 1,
        "ListParts": 1, "ListMultipartUploads": 1, "CompleteMultipartUpload": 1,
        "AbortMultipartUpload": 1,
    })


# -- BotoStore only ------------------------------------------------------------------------


async def test_boto_sends_copy_source_if_match(moto_server: Any, bucket: str) -> None:
    """What moto cannot check (see MOTO_IGNORES_COPY_IF_MATCH): the condition is on the wire."""
    store = BotoStore(S3Config(bucket, endpoint_url=moto_server.url), threads=2)
    sent: dict[str, object] = {}

    def capture(name: str) -> Any:
        def handler(request: Any, **_: Any) -> None:
            sent[name] = request.headers.get("x-amz-copy-source-if-match")
            sent[f"{name} legacy"] = request.headers.get("x-amz-copy-if-match")  # Ceph's
        return handler

    for op in ("CopyObject", "UploadPartCopy"):
        store.client.meta.events.register(f"before-send.s3.{op}", capture(op))
    etag = await store.put("src", b"payload", metadata={})
    await store.copy("src", "dst", src_etag=etag)
    upload_id = await store.create_upload("mp", metadata={})
    await store.upload_part_copy("mp", upload_id, 1, "src", 0, 7, src_etag=etag)
    header = {k: v.decode() if isinstance(v, bytes) else v for k, v in sent.items()}
    assert header["CopyObject"] == header["CopyObject legacy"] == etag
    assert header["UploadPartCopy"] == header["UploadPartCopy legacy"] == etag


async def test_boto_reads_pieces_straight_into_the_buffers(
    moto_server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path (http.client's readinto under botocore, no bytes object per piece) is
    taken with the botocore/urllib3 installed; body.read() plus a copy is only the fallback
    for versions built otherwise."""
    store = BotoStore(S3Config(bucket, endpoint_url=moto_server.url), threads=2)
    data = os.urandom(100_000)
    await store.put("k", data, metadata={})
    fallback = Counter[str]()

    def no_fallback(*args: Any) -> Any:
        fallback["calls"] += 1
        return read_bytes(*args)

    read_bytes = boto_module._read_bytes
    monkeypatch.setattr(boto_module, "_read_bytes", no_fallback)
    got: list[bytes] = []

    def keep(i: int, piece: bytes | memoryview) -> bool:
        got.append(bytes(piece))
        return True

    await store.get_pieces("k", 0, [60_000, 40_000], keep,
                           buffers=lambda n: memoryview(bytearray(n)))
    assert b"".join(got) == data
    assert fallback["calls"] == 0
