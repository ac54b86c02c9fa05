"""Backup-grade object options: the command line (s3mpfs.config), the per-request parameters
(s3mpfs.store.objectargs), MemoryStore's S3 rules for them, and their semantics in the
filesystem (no-clobber, archived objects, SSE-C on every read and write path), all on
MemoryStore."""

from __future__ import annotations

import errno
import logging
import os
import stat
import urllib.parse
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
import trio

from s3mpfs import cli
from s3mpfs.config import ConfigError, MiB, ObjectOptions, UploadConfig, describe_objects
from s3mpfs.errors import (
    FsError,
    NeedsRestore,
    ObjectExists,
    StoreError,
    errno_for,
)
from s3mpfs.fs import Filesystem, FsOptions, SetAttr
from s3mpfs.inodes import ROOT_INODE
from s3mpfs.logs import Redact
from s3mpfs.store.markers import MARKER_PREFIX
from s3mpfs.store.memory import MemoryStore
from s3mpfs.store.objectargs import Known, ObjectArgs, Source, guess_content_type

PART = 5 * MiB
UID, GID = 1000, 1000
KEY = bytes(range(7, 39))  # a 32-byte SSE-C key


def _args(*argv: str) -> ObjectOptions:
    return cli.parse_args(["bkt", "/mnt/x", *argv]).objects


# -- the command line --------------------------------------------------------------------------


def test_defaults_change_nothing() -> None:
    opts = _args()
    assert opts == ObjectOptions()
    args = ObjectArgs(opts)
    assert args.new_object("a.bin") == {"ContentType": "application/octet-stream"}
    assert args.condition("a.bin") == {} and args.sse_c("a.bin") == {}


def test_every_option_long_and_as_o(tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_bytes(KEY)
    long = _args("--storage-class", "standard_ia", "--sse-c-key-file", str(keyfile),
                 "--no-clobber", "--content-type", "text/plain; charset=utf-8",
                 "--tag", "backup=daily", "--tag", "owner=ops team", "--acl",
                 "BUCKET-OWNER-FULL-CONTROL")
    o = _args("-o", f"storage_class=STANDARD_IA,sse_c_key_file={keyfile},noclobber",
              "-o", "content_type=text/plain; charset=utf-8,tag=backup=daily",
              "-o", "tag=owner=ops team,acl=bucket-owner-full-control")
    assert long == o == ObjectOptions(
        storage_class="STANDARD_IA", sse_c_key=KEY, no_clobber=True,
        content_type="text/plain; charset=utf-8",
        tags=(("backup", "daily"), ("owner", "ops team")), acl="bucket-owner-full-control")
    kms = _args("--sse", "AWS:KMS", "--sse-kms-key-id", "alias/backups")
    assert (kms.sse, kms.sse_kms_key_id) == ("aws:kms", "alias/backups")
    assert _args("-o", "no_clobber,sse=aes256").no_clobber
    assert _args("-o", "sse=aes256").sse == "AES256"


@pytest.mark.parametrize(("argv", "message"), [
    (["--storage-class", "GLACIER_FAST"], "--storage-class GLACIER_FAST: unknown storage class"),
    (["-o", "storage_class=cold"], "--storage-class cold: unknown storage class; use one of "),
    (["--sse", "rot13"], "--sse rot13: unknown server-side encryption"),
    (["--sse-kms-key-id", "k1"], "--sse-kms-key-id needs --sse aws:kms"),
    (["--sse", "AES256", "--sse-kms-key-id", "k1"], "--sse-kms-key-id needs --sse aws:kms"),
    (["--sse-c-key-file", "{key}", "--sse", "AES256"], "--sse-c-key-file and --sse exclude"),
    (["--sse-c-key-file", "{short}"], "31 bytes; it must hold exactly 32 raw bytes"),
    (["--sse-c-key-file", "{long}"], "33 bytes; it must hold exactly 32 raw bytes"),
    (["--sse-c-key-file", "{b64}"], "looks base64-encoded"),
    (["--sse-c-key-file", "{missing}"], "cannot read it: No such file or directory"),
    (["--sse-c-key-file", "{dir}"], "cannot read it: Is a directory"),
    (["--tag", "daily"], "--tag 'daily': use KEY=VALUE"),
    (["--tag", "=x"], "use KEY=VALUE"),
    (["--tag", "a=b", "--tag", "a=c"], "tag key 'a' given twice"),
    (["--tag", "aws:x=1"], "reserved for AWS"),
    (["--tag", "a=b;c"], "tags may hold letters, digits, spaces"),
    (["--tag", "k=" + "v" * 257], "values at most 256"),
    ([f"--tag=k{i}=v" for i in range(11)], "at most 10 tags"),
    (["--acl", "everyone"], "--acl everyone: unknown canned ACL"),
    (["--content-type", "text"], "--content-type 'text': use auto, none or a MIME type"),
    (["--content-type", "text/plain\r\nX-Evil: 1"], "use auto, none or a MIME type"),
])
def test_bad_options_exit_2_with_one_line(argv: list[str], message: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    files = {"key": KEY, "short": KEY[:31], "long": KEY + b"x",
             "b64": b"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "dir").mkdir()
    paths = {name: str(tmp_path / name) for name in [*files, "dir", "missing"]}
    with pytest.raises(SystemExit) as exc:
        _args(*(a.format(**paths) for a in argv))
    assert exc.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], errors


def test_the_sse_c_key_is_never_shown(tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_bytes(b"A" * 32)
    cfg = cli.parse_args(["bkt", "/m", "--sse-c-key-file", str(keyfile)])
    assert cfg.objects.sse_c_key == b"A" * 32
    for text in (repr(cfg), str(cfg.objects), describe_objects(cfg.objects)):
        assert "AAAA" not in text and "QUFB" not in text  # raw or base64
    assert "SSE-C" in describe_objects(cfg.objects)


def test_the_log_filter_masks_sse_c_keys() -> None:
    def masked(message: str) -> str:
        record = logging.LogRecord("x", logging.INFO, "", 0, message, None, None)
        Redact().filter(record)
        return record.getMessage()

    assert masked("x-amz-server-side-encryption-customer-key: QUFBQUFB==") == \
        "x-amz-server-side-encryption-customer-key: <redacted>"
    assert "secret" not in masked("{'SSECustomerKey': b'sec ret\\'s', 'Key': 'k'}")
    assert "QUFB" not in masked("X-Amz-Copy-Source-Server-Side-Encryption-Customer-Key=QUFB&a=1")
    assert "m5m5" not in masked("'CopySourceSSECustomerKeyMD5': 'm5m5=='")
    assert masked("PutObject backup.tar: HTTP 200") == "PutObject backup.tar: HTTP 200"


def test_help_shows_the_objects_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "objects:" in out
    for option in ("--storage-class", "--sse", "--sse-kms-key-id", "--sse-c-key-file",
                   "--no-clobber", "--content-type", "--tag", "--acl", "DEEP_ARCHIVE",
                   "bucket-owner-full-control"):
        assert option in out, option


# -- per key and per request -------------------------------------------------------------------


@pytest.mark.parametrize(("key", "expected"), [
    ("x.txt", "text/plain"),
    ("dir/backup.tar", "application/x-tar"),
    ("backup.tar.gz", "application/gzip"),  # no Content-Encoding: clients would unpack it
    ("backup.tgz", "application/gzip"),
    ("db.sql.xz", "application/x-xz"),
    ("notes.JSON", "application/json"),
    ("noext", "application/octet-stream"),
    (".backup.tar.Xy12Zq", "application/octet-stream"),  # rsync's temporary name
    ("photos/", "application/x-directory"),
])
def test_guess_content_type(key: str, expected: str) -> None:
    assert guess_content_type(key) == expected


FULL = ObjectOptions(storage_class="GLACIER_IR", sse="aws:kms", sse_kms_key_id="k1",
                     no_clobber=True, tags=(("a b", "c/d"), ("e", "")), acl="private")


def test_new_object_parameters() -> None:
    args = ObjectArgs(FULL)
    assert args.new_object("p/x.tar") == {
        "StorageClass": "GLACIER_IR", "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1",
        "ContentType": "application/x-tar", "Tagging": "a%20b=c%2Fd&e=", "ACL": "private"}
    assert urllib.parse.parse_qsl(args.new_object("x")["Tagging"], keep_blank_values=True) == \
        [("a b", "c/d"), ("e", "")]
    # directory markers: no class (0 bytes in a cold class cost its minimum), their own type
    assert args.new_object("p/d/") == {
        "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1",
        "ContentType": "application/x-directory", "Tagging": "a%20b=c%2Fd&e=",
        "ACL": "private"}
    # s3mpfs's own upload markers: only encryption and ACL
    assert args.new_object(MARKER_PREFIX + "0" * 32) == {
        "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1", "ACL": "private"}
    assert ObjectArgs(ObjectOptions(content_type="none")).new_object("x.txt") == {}
    fixed = ObjectArgs(ObjectOptions(content_type="application/x-backup"))
    assert fixed.new_object("x.txt") == {"ContentType": "application/x-backup"}


def test_sse_c_parameters_and_exempt_keys() -> None:
    args = ObjectArgs(ObjectOptions(sse_c_key=KEY))
    sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY}
    assert args.sse_c("f") == sse
    assert args.new_object("f") == {**sse, "ContentType": "application/octet-stream"}
    assert args.copy_source_sse_c("f") == {"CopySourceSSECustomerAlgorithm": "AES256",
                                           "CopySourceSSECustomerKey": KEY}
    assert args.sse_c("d/") == {} and args.sse_c(MARKER_PREFIX + "x") == {}
    assert not args.etag_is_md5
    assert ObjectArgs(ObjectOptions(sse="AES256")).etag_is_md5


def test_no_clobber_condition() -> None:
    args = ObjectArgs(ObjectOptions(no_clobber=True))
    assert args.condition("f") == {"IfNoneMatch": "*"}
    assert args.condition("f", replacing='"e1"') == {"IfMatch": '"e1"'}
    assert args.condition("f", replacing=None) == {"IfNoneMatch": "*"}
    assert args.condition("d/") == {} and args.condition(MARKER_PREFIX + "x") == {}
    assert args.condition("d/", replacing='"e1"') == {}
    assert ObjectArgs().condition("f") == {} and ObjectArgs().condition("f", '"e1"') == {}


def test_copy_keeps_the_source_class_unless_one_is_configured() -> None:
    src = Source('"e"', "STANDARD_IA", "text/plain", {"mode": "1"})
    plain = ObjectArgs()
    assert plain.copy_needs("a", "b", None) == {"class"}
    assert plain.copy("a", "b", None, src) == {"StorageClass": "STANDARD_IA"}
    assert plain.copy("a", "b", None, Source('"e"', "STANDARD")) == {}
    configured = ObjectArgs(ObjectOptions(storage_class="DEEP_ARCHIVE"))
    assert configured.copy_needs("a", "b", None) == set()
    assert configured.copy("a", "b", None, None) == {"StorageClass": "DEEP_ARCHIVE"}
    # directory markers stay in S3's default class, whatever the source's
    assert configured.copy_needs("a/", "b/", None) == set()
    assert plain.copy_needs("a/", "b/", None) == set()
    assert configured.copy("a/", "b/", None, None) == {}


def test_copy_content_type_and_metadata() -> None:
    args = ObjectArgs(ObjectOptions(storage_class="STANDARD_IA"))
    src = Source('"e"', "STANDARD", "text/x-custom", {"mode": "33188"})
    # a rename to a name of another type: REPLACE with the source's metadata, the new type
    assert args.copy_needs(".x.tar.Ab12Cd", "x.tar", None) == {"metadata", "headers"}
    assert args.copy(".x.tar.Ab12Cd", "x.tar", None, src) == {
        "StorageClass": "STANDARD_IA", "Metadata": {"mode": "33188"},
        "MetadataDirective": "REPLACE", "ContentType": "application/x-tar"}
    # same type: S3 copies metadata and type (COPY)
    assert args.copy("a/x.tar", "b/x.tar", None, None) == {"StorageClass": "STANDARD_IA"}
    # a rename carrying new attributes: the new name's type
    assert args.copy("a.tmp", "a.txt", {"mode": "1"}, None)["ContentType"] == "text/plain"
    # a metadata change in place keeps the object's own type (set by another tool, say)
    assert args.copy_needs("x.txt", "x.txt", {"mode": "1"}) == {"type", "headers"}
    assert args.copy("x.txt", "x.txt", {"mode": "1"}, src)["ContentType"] == "text/x-custom"
    none = ObjectArgs(ObjectOptions(content_type="none"))
    assert none.copy_needs("a", "b.txt", {"m": "1"}) == {"class", "type", "headers"}
    assert none.copy("a", "b.txt", {"m": "1"}, src)["ContentType"] == "text/x-custom"
    assert ObjectArgs.satisfies(Source('"e"', "STANDARD"), frozenset({"class"}))
    assert not ObjectArgs.satisfies(Source('"e"', "STANDARD"), frozenset({"type"}))


def test_copy_replacing_metadata_sends_the_system_headers_again() -> None:
    """REPLACE makes S3 drop Cache-Control & co. unless the copy sends them: every copy that
    replaces the metadata (chmod, setxattr, a rename to another type) carries the source's."""
    args = ObjectArgs(ObjectOptions())
    headers = {"CacheControl": "max-age=60", "ContentDisposition": "attachment",
               "ContentEncoding": "identity", "ContentLanguage": "de", "Expires": "x"}
    src = Source('"e"', "STANDARD", "text/x-custom", {"mode": "33188"}, headers)
    in_place = args.copy("x.txt", "x.txt", {"mode": "1"}, src)
    assert {k: in_place[k] for k in headers} == headers
    assert in_place["ContentType"] == "text/x-custom"
    renamed = args.copy(".x.tar.Ab12Cd", "x.tar", None, src)
    assert {k: renamed[k] for k in headers} == headers
    assert renamed["ContentType"] == "application/x-tar"
    assert "CacheControl" not in args.copy("a/x.tar", "b/x.tar", None, src)  # COPY keeps them
    # a source whose headers are not known does not satisfy a REPLACE copy: HEAD it first
    assert not ObjectArgs.satisfies(Source('"e"', "STANDARD", "t/t", {}),
                                    args.copy_needs("x", "x", {"m": "1"}))
    assert ObjectArgs.satisfies(Source('"e"', "STANDARD", "t/t", {}, {}),
                                args.copy_needs("x", "x", {"m": "1"}))


def test_copy_conditions_and_encryption() -> None:
    args = ObjectArgs(ObjectOptions(no_clobber=True, sse_c_key=KEY, acl="private"))
    kw = args.copy("a", "b", None, Source('"e"', "STANDARD"))
    assert kw["IfNoneMatch"] == "*" and kw["ACL"] == "private"
    assert kw["SSECustomerKey"] == KEY and kw["CopySourceSSECustomerKey"] == KEY
    in_place = args.copy("a", "a", {"m": "1"}, Source('"e"', "STANDARD", "x/y"))
    assert "IfNoneMatch" not in in_place and "IfMatch" not in in_place


def test_known_sources() -> None:
    known = Known(max_entries=2)
    known.learn("a", Source('"1"', "STANDARD_IA"))
    known.learn("a", Source('"1"', None, "text/plain", {"m": "1"}))  # a HEAD adds to a listing
    assert known.get("a", '"1"') == Source('"1"', "STANDARD_IA", "text/plain", {"m": "1"})
    assert known.get("a", "1") is not None  # quotes do not matter
    assert known.get("a", '"2"') is None  # another object now
    known.learn("b", Source('"b"', "STANDARD"))
    known.learn("c", Source('"c"', "STANDARD"))
    assert known.get("a", None) is None and len(known) == 2  # the oldest went
    known.forget("b")
    assert known.get("b", None) is None
    stale = Known(ttl=0.0)
    stale.learn("a", Source('"1"', "GLACIER"))
    assert stale.get("a", None) is None


# -- MemoryStore: what it was given, and S3's rules --------------------------------------------


async def test_memory_store_records_and_keeps_the_options() -> None:
    mem = MemoryStore(min_part_size=1, options=FULL)
    await mem.put("x.txt", b"small", metadata={})
    up = await mem.create_upload("big.tar", metadata={})
    etag = await mem.upload_part("big.tar", up, 1, b"part")
    await mem.complete_upload("big.tar", up, [(1, etag)])
    for key in ("x.txt", "big.tar"):
        props = mem.objects[key].props
        assert props["StorageClass"] == "GLACIER_IR" and props["SSEKMSKeyId"] == "k1"
        assert props["Tagging"] == "a%20b=c%2Fd&e=" and props["ACL"] == "private"
    assert mem.objects["big.tar"].props["ContentType"] == "application/x-tar"
    ops = [(op, key) for op, key, _ in mem.sent]
    assert ops == [("PutObject", "x.txt"), ("CreateMultipartUpload", "big.tar"),
                   ("UploadPart", "big.tar"), ("CompleteMultipartUpload", "big.tar")]
    assert mem.sent[0][2]["IfNoneMatch"] == "*"
    assert mem.sent[3][2] == {"IfNoneMatch": "*"}


async def test_memory_store_honours_if_none_match(caplog: pytest.LogCaptureFixture) -> None:
    mem = MemoryStore(min_part_size=1, options=ObjectOptions(no_clobber=True))
    first = await mem.put("k", b"first", metadata={})
    with pytest.raises(ObjectExists) as exc:
        await mem.put("k", b"second", metadata={})
    assert errno_for(exc.value) == errno.EEXIST
    assert "--no-clobber keeps it" in caplog.text
    up = await mem.create_upload("k", metadata={})
    etag = await mem.upload_part("k", up, 1, b"x")
    with pytest.raises(ObjectExists):
        await mem.complete_upload("k", up, [(1, etag)])
    # our own commit may be replaced, and only that one
    second = await mem.put("k", b"second", metadata={}, replacing=first)
    with pytest.raises(ObjectExists):
        await mem.put("k", b"third", metadata={}, replacing=first)
    assert mem.objects["k"].data == b"second" and second != first
    await mem.put("k2", b"another", metadata={})
    with pytest.raises(ObjectExists):  # a rename onto it
        await mem.copy("k", "k2", src_etag=second)
    assert mem.objects["k2"].data == b"another"


async def test_memory_store_archived_objects_and_sse_c() -> None:
    mem = MemoryStore(min_part_size=1, options=ObjectOptions(storage_class="GLACIER",
                                                              sse_c_key=KEY))
    await mem.put("cold", b"frozen", metadata={})
    assert (await mem.head("cold")).size == 6  # HEAD works on archived objects
    with pytest.raises(NeedsRestore) as exc:
        await mem.get_range("cold", 0, 6)
    assert errno_for(exc.value) == errno.EACCES
    with pytest.raises(NeedsRestore):
        await mem.copy("cold", "elsewhere")
    mem.objects["cold"].props["Restored"] = True
    assert await mem.get_range("cold", 0, 6) == b"frozen"
    # the key is checked like S3 does: without it (another mount's store), or a wrong one
    other = MemoryStore()
    other.objects = mem.objects
    with pytest.raises(StoreError) as missing:
        await other.get_range("cold", 0, 6)
    assert missing.value.code == "InvalidRequest"
    wrong = MemoryStore(options=ObjectOptions(sse_c_key=b"w" * 32))
    wrong.objects = mem.objects
    with pytest.raises(StoreError) as denied:
        await wrong.head("cold")
    assert errno_for(denied.value) == errno.EACCES


# -- the filesystem ----------------------------------------------------------------------------


def _opts(**kw: Any) -> FsOptions:
    upload = UploadConfig(part_size=PART, concurrency=2, memory_limit=8 * PART)
    return FsOptions(upload=upload, uid=UID, gid=GID, **kw)


async def _errno(call: Awaitable[object]) -> int:
    with pytest.raises(FsError) as exc:
        await call
    return exc.value.errno


@pytest.fixture
async def noclobber() -> AsyncIterator[tuple[Filesystem, MemoryStore]]:
    mem = MemoryStore(options=ObjectOptions(no_clobber=True))
    async with trio.open_nursery() as n:
        fs = Filesystem(mem, _opts(no_clobber=True))
        fs.start(n)
        yield fs, mem


async def _write_file(fs: Filesystem, name: str, data: bytes) -> None:
    _, fh = await fs.create(ROOT_INODE, name, 0o644, UID, GID)
    await fs.write(fh, 0, data)
    await fs.flush(fh)
    await fs.release(fh)


def _data(size: int, seed: int = 1) -> bytes:
    return bytes((i * seed) % 251 for i in range(size))


async def test_no_clobber_new_files_are_stored(
        noclobber: tuple[Filesystem, MemoryStore]) -> None:
    fs, mem = noclobber
    await _write_file(fs, "small.txt", b"hello")
    await _write_file(fs, "big.bin", _data(2 * PART + 3))
    assert mem.objects["small.txt"].data == b"hello"
    assert mem.objects["big.bin"].data == _data(2 * PART + 3)
    conditions = {(op, key): extra for op, key, extra in mem.sent if "IfNoneMatch" in extra}
    assert set(conditions) == {("PutObject", "small.txt"),
                               ("CompleteMultipartUpload", "big.bin")}


async def test_no_clobber_refuses_o_trunc_on_an_existing_file(
        noclobber: tuple[Filesystem, MemoryStore]) -> None:
    fs, mem = noclobber
    await mem.put("f", b"precious", metadata={})
    inode = await fs.lookup(ROOT_INODE, "f")
    assert await _errno(fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)) == errno.EEXIST
    assert mem.objects["f"].data == b"precious"
    # reading it, and changing its attributes, are fine
    fh = await fs.open(inode.ino, os.O_RDONLY)
    assert await fs.read(fh, 0, 100) == b"precious"
    await fs.release(fh)
    await fs.setattr(inode.ino, SetAttr(mode=0o600))
    assert mem.objects["f"].metadata["mode"] == str(stat.S_IFREG | 0o600)
    assert mem.objects["f"].data == b"precious"


@pytest.mark.parametrize("size", [100, 2 * PART + 5])
async def test_no_clobber_close_fails_with_eexist_when_the_name_was_taken_meanwhile(
        noclobber: tuple[Filesystem, MemoryStore], size: int) -> None:
    fs, mem = noclobber
    _, fh = await fs.create(ROOT_INODE, "race", 0o644, UID, GID)
    await fs.write(fh, 0, _data(size))
    await mem.put("race", b"the other writer's", metadata={})
    assert await _errno(fs.flush(fh)) == errno.EEXIST
    await fs.release(fh)
    assert mem.objects["race"].data == b"the other writer's"
    assert mem.uploads == {}  # the multipart upload was aborted


async def test_no_clobber_a_file_may_continue_after_its_own_commit(
        noclobber: tuple[Filesystem, MemoryStore]) -> None:
    fs, mem = noclobber
    for name, first, more in [("small", b"a\n", b"b\n"),
                              ("big", _data(PART + 7), _data(PART + 9, 3))]:
        _, fh = await fs.create(ROOT_INODE, name, 0o644, UID, GID)
        await fs.write(fh, 0, first)
        await fs.flush(fh)  # a child's close(): commits
        assert mem.objects[name].data == first
        await fs.write(fh, len(first), more)
        await fs.flush(fh)  # commits the longer file over our own object: If-Match
        await fs.release(fh)
        assert mem.objects[name].data == first + more
    matched = [(op, key) for op, key, extra in mem.sent if "IfMatch" in extra]
    assert matched == [("PutObject", "small"), ("CompleteMultipartUpload", "big")]


async def test_no_clobber_refuses_append_truncate_and_rename_onto_a_file(
        noclobber: tuple[Filesystem, MemoryStore]) -> None:
    fs, mem = noclobber
    await mem.put("f", b"precious", metadata={})
    await mem.put("g", b"other", metadata={})
    inode = await fs.lookup(ROOT_INODE, "f")
    fh = await fs.open(inode.ino, os.O_WRONLY)  # `>>`: opening is fine, replacing is not
    await fs.write(fh, 8, b" more")
    assert await _errno(fs.flush(fh)) == errno.EEXIST
    await fs.release(fh)
    assert await _errno(fs.setattr(inode.ino, SetAttr(size=0))) == errno.EEXIST
    await fs.lookup(ROOT_INODE, "g")
    assert await _errno(fs.rename(ROOT_INODE, "g", ROOT_INODE, "f")) == errno.EEXIST
    assert (mem.objects["f"].data, mem.objects["g"].data) == (b"precious", b"other")
    await fs.rename(ROOT_INODE, "g", ROOT_INODE, "h")  # onto a new name: fine
    assert mem.objects["h"].data == b"other" and "g" not in mem.objects
    assert ("CopyObject", "h") in [(op, key) for op, key, x in mem.sent if "IfNoneMatch" in x]
    assert mem.uploads == {}


async def test_reading_an_archived_object_is_eacces_with_a_log_line() -> None:
    mem = MemoryStore()
    await mem.put("cold.tar", b"x" * 100, metadata={})
    mem.objects["cold.tar"].props["StorageClass"] = "DEEP_ARCHIVE"
    async with trio.open_nursery() as n:
        fs = Filesystem(mem, _opts())
        fs.start(n)
        inode = await fs.lookup(ROOT_INODE, "cold.tar")
        assert inode.size == 100  # stat works: HEAD and listings do
        fh = await fs.open(inode.ino, os.O_RDONLY)
        with pytest.raises(NeedsRestore) as exc:
            await fs.read(fh, 0, 100)
        assert errno_for(exc.value) == errno.EACCES
        assert "needs a restore" in str(exc.value)
        await fs.release(fh)


async def test_sse_c_reaches_every_read_and_write_path() -> None:
    """MemoryStore refuses an SSE-C object's reads without the key and parts without it, so
    each path below fails if one request lacks the key."""
    mem = MemoryStore(options=ObjectOptions(sse_c_key=KEY))
    async with trio.open_nursery() as n:
        fs = Filesystem(mem, _opts())
        fs.start(n)
        await mem.put("other.txt", b"by another client", metadata={"mode": "33152"})
        assert (await fs.lookup(ROOT_INODE, "other.txt")).mode == 33152  # HEAD
        await _write_file(fs, "small.txt", b"hello")
        big = _data(2 * PART + 11)
        await _write_file(fs, "big.bin", big)
        # read back (GET), append to both (GET of a small base, UploadPartCopy of a big one)
        for name, data in (("small.txt", b"hello"), ("big.bin", big)):
            inode = await fs.lookup(ROOT_INODE, name)
            fh = await fs.open(inode.ino, os.O_RDONLY)
            assert await fs.read(fh, 0, len(data)) == data
            await fs.release(fh)
            fh = await fs.open(inode.ino, os.O_WRONLY)
            await fs.write(fh, len(data), b"+tail")
            await fs.flush(fh)
            await fs.release(fh)
            assert mem.objects[name].data == data + b"+tail"
        inode = await fs.lookup(ROOT_INODE, "small.txt")
        await fs.setattr(inode.ino, SetAttr(mode=0o600))  # CopyObject onto itself
        await fs.rename(ROOT_INODE, "big.bin", ROOT_INODE, "moved.bin")  # CopyObject
        await fs.mkdir(ROOT_INODE, "d", 0o755, UID, GID)
    assert all(obj.props.get("SSECustomerKey") == KEY for key, obj in mem.objects.items()
               if not key.endswith("/"))
    assert mem.objects["moved.bin"].data == big + b"+tail"
    ops = {op for op, key, extra in mem.sent if extra.get("SSECustomerKey") == KEY}
    assert ops >= {"PutObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
                   "CompleteMultipartUpload", "GetObject", "HeadObject", "CopyObject"}
    assert {op for op, key, extra in mem.sent if "CopySourceSSECustomerKey" in extra} == \
        {"CopyObject", "UploadPartCopy"}
    assert "SSECustomerKey" not in mem.objects["d/"].props


def test_config_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="exactly 32 bytes"):
        ObjectOptions(sse_c_key=b"short")
    with pytest.raises(ConfigError, match="unknown storage class"):
        ObjectOptions(storage_class="standard")  # the dataclass takes S3's spelling only
