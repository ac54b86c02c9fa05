"""Orphaned multipart uploads: the markers the store writes (s3mpfs.store.markers), the scan,
the `s3mpfs uploads` command and the report at mount time (s3mpfs.orphans). MemoryStore for the
logic; moto for the command's main() (no FUSE needed)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from s3mpfs import orphans
from s3mpfs.checksums import Checksum
from s3mpfs.config import MiB, S3Config, UploadConfig
from s3mpfs.errors import AccessDenied, FsError, StoreError
from s3mpfs.inodes import Kind
from s3mpfs.listing import list_dir
from s3mpfs.orphans import (
    format_age,
    parse_age,
    run,
    scan,
    wants_uploads,
    warn_at_mount,
)
from s3mpfs.store.base import Data, UploadInfo
from s3mpfs.store.markers import (
    MARKER_PREFIX,
    Marker,
    Markers,
    marker_body,
    marker_key,
    parse_marker,
    running_here,
)
from s3mpfs.store.memory import MemoryStore
from s3mpfs.upload import PartBudget, State, Upload
from tests.helpers.faults import FaultyStore
from tests.helpers.servers import CREDENTIALS, MotoServer

PART = 5 * MiB
NOW = 1_700_000_000.0


def _markers(store: MemoryStore) -> dict[str, dict[str, Any]]:
    return {k: json.loads(o.data) for k, o in store.objects.items()
            if k.startswith(MARKER_PREFIX)}


class MarkerFaults(MemoryStore):
    """MemoryStore whose requests on marker keys fail with `error` (they are counted, as S3
    bills refused requests too)."""

    def __init__(self, error: StoreError) -> None:
        super().__init__()
        self.error = error

    async def put(self, key: str, data: Data, *, metadata: Mapping[str, str],
                  checksum: Checksum | None = None, replacing: str | None = None,
                  create_only: bool = False) -> str:
        if key.startswith(MARKER_PREFIX):
            self.counts["PutObject"] += 1
            raise self.error
        return await super().put(key, data, metadata=metadata, checksum=checksum,
                                 replacing=replacing, create_only=create_only)

    async def delete(self, key: str) -> None:
        if key.startswith(MARKER_PREFIX):
            self.counts["DeleteObject"] += 1
            raise self.error
        await super().delete(key)


def _upload(store: Any, nursery: trio.Nursery, key: str = "k") -> Upload:
    cfg = UploadConfig(part_size=PART, concurrency=2, memory_limit=16 * PART)
    return Upload(store, key, cfg=cfg, budget=PartBudget(cfg.max_parts_in_memory),
                  nursery=nursery, metadata=lambda: {})


# -- markers -------------------------------------------------------------------------------


def test_marker_key_is_a_hash_of_the_upload_id_under_the_bucket_root() -> None:
    key = marker_key("abc")
    assert key.startswith(".s3mpfs/uploads/")
    name = key[len(".s3mpfs/uploads/"):]
    assert len(name) == 32 and int(name, 16) >= 0
    assert marker_key("abc") == key and marker_key("abd") != key


def test_marker_body_round_trips() -> None:
    body = marker_body("a/b.bin", "up-1", now=NOW, host="h1", pid=42)
    doc = json.loads(body)
    assert doc == {"key": "a/b.bin", "upload_id": "up-1", "started": "2023-11-14T22:13:20Z",
                   "host": "h1", "pid": 42}
    assert parse_marker(body) == Marker("a/b.bin", "up-1", NOW, "h1", 42)
    assert parse_marker(b"not json") is None
    assert parse_marker(b'{"key": "k"}') is None


async def test_register_writes_one_marker_and_unregister_deletes_it() -> None:
    store = MemoryStore()
    markers = Markers()
    await markers.register(store, "dir/f.bin", "up-7")
    assert dict(store.counts) == {"PutObject": 1}
    doc = _markers(store)[marker_key("up-7")]
    assert doc["key"] == "dir/f.bin" and doc["upload_id"] == "up-7"
    assert doc["host"] == socket.gethostname() and doc["pid"] == os.getpid()
    await markers.unregister(store, "up-7")
    assert store.counts["DeleteObject"] == 1
    assert _markers(store) == {}
    await markers.unregister(store, "up-7")  # once only
    await markers.unregister(store, "never-marked")  # not ours to delete
    assert store.counts["DeleteObject"] == 1


async def test_register_and_unregister_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    store = FaultyStore(MemoryStore())
    store.fail("put", StoreError("injected: SlowDown", code="SlowDown"), and_after=True)
    store.fail("delete", StoreError("injected: InternalError", code="InternalError"),
               and_after=True)
    markers = Markers()
    with caplog.at_level(logging.WARNING, logger="s3mpfs.store.markers"):
        await markers.register(store, "f", "up-1")
        await markers.unregister(store, "up-1")
    assert store.calls == ["put", "delete"]  # a marker whose write failed is deleted anyway
    messages = [r.getMessage() for r in caplog.records]
    assert any("up-1" in m and "SlowDown" in m for m in messages)
    assert any("InternalError" in m for m in messages)


async def test_access_denied_stops_marking_on_that_store() -> None:
    inner = MemoryStore()
    store = FaultyStore(inner)
    store.fail("put", AccessDenied("access denied", code="AccessDenied"), and_after=True)
    markers = Markers()
    await markers.register(store, "f", "up-1")
    await markers.register(store, "g", "up-2")
    await markers.unregister(store, "up-2")
    assert store.calls == ["put"]  # refused once, then never asked again (nor to delete)
    other = MemoryStore()  # another mount's store still marks
    await other.create_upload("f", metadata={}, mark=True)
    (upload_id,) = other.uploads
    assert marker_key(upload_id) in other.objects


async def test_a_store_refused_markers_stops_asking() -> None:
    store = MarkerFaults(AccessDenied("access denied", code="AccessDenied"))
    first = await store.create_upload("f", metadata={}, mark=True)
    second = await store.create_upload("g", metadata={}, mark=True)
    await store.abort_upload("f", first)
    await store.abort_upload("g", second)
    assert store.counts == {"CreateMultipartUpload": 2, "PutObject": 1,
                            "AbortMultipartUpload": 2}


# -- the store marks the uploads upload.py starts ------------------------------------------


async def test_multipart_upload_is_marked_while_open_and_unmarked_after_complete() -> None:
    store = MemoryStore()
    async with trio.open_nursery() as n:
        up = _upload(store, n, "big")
        await up.write(0, b"x" * (PART + 10))
        await trio.testing.wait_all_tasks_blocked()
        (upload_id,) = store.uploads
        assert _markers(store) == {marker_key(upload_id): {
            "key": "big", "upload_id": upload_id, "host": socket.gethostname(),
            "pid": os.getpid(), "started": _markers(store)[marker_key(upload_id)]["started"]}}
        await up.commit()
        await up.close()
    assert store.objects["big"].data == b"x" * (PART + 10)
    assert _markers(store) == {}
    assert store.uploads == {}


async def test_small_file_writes_no_marker() -> None:
    store = MemoryStore()
    async with trio.open_nursery() as n:
        up = _upload(store, n, "small")
        await up.write(0, b"hello")
        await up.commit()
        await up.close()
    assert set(store.objects) == {"small"}
    assert dict(store.counts) == {"PutObject": 1}


async def test_aborted_upload_is_unmarked() -> None:
    store = MemoryStore()
    async with trio.open_nursery() as n:
        up = _upload(store, n, "gone")
        await up.write(0, b"y" * (PART + 1))
        await trio.testing.wait_all_tasks_blocked()
        assert len(_markers(store)) == 1
        await up.abort("unmounted while open for writing")
        await up.close()
    assert store.uploads == {} and _markers(store) == {}
    assert "gone" not in store.objects


async def test_upload_whose_abort_fails_keeps_its_marker() -> None:
    """The leftover must stay findable: an abort that failed leaves the marker."""
    mem = MemoryStore()
    store = FaultyStore(mem)
    store.fail("upload_part", StoreError("injected: InternalError", code="InternalError"),
               and_after=True)
    store.fail("abort_upload", StoreError("injected: InternalError", code="InternalError"),
               and_after=True)
    async with trio.open_nursery() as n:
        up = _upload(store, n, "doomed")
        await up.write(0, b"z" * (PART + 1))
        with pytest.raises(FsError):
            await up.commit()
        assert up.state is State.FAILED
        await up.close()
    (upload_id,) = mem.uploads
    assert set(_markers(mem)) == {marker_key(upload_id)}
    found = await scan(mem)
    assert [(e.key, e.marked) for e in found.entries] == [("doomed", True)]


async def test_marker_failure_does_not_fail_the_write() -> None:
    store = MarkerFaults(StoreError("injected: InternalError", code="InternalError"))
    data = os.urandom(PART + 123)
    async with trio.open_nursery() as n:
        up = _upload(store, n, "f")
        await up.write(0, data)
        await up.commit()
        await up.close()
    assert store.objects["f"].data == data
    # the marker was tried, and its deletion too (one request each, as always)
    assert store.counts["PutObject"] == 1 and store.counts["DeleteObject"] == 1


async def test_uploads_created_without_mark_carry_no_marker() -> None:
    """Only upload.py asks for markers: a server-side copy's upload (objcopy.py) costs no
    marker requests, and completing or aborting an unmarked upload deletes nothing."""
    store = MemoryStore(min_part_size=1)
    first = await store.create_upload("a", metadata={})
    etag = await store.upload_part("a", first, 1, b"x")
    await store.complete_upload("a", first, [(1, etag)])
    second = await store.create_upload("b", metadata={})
    await store.abort_upload("b", second)
    assert store.counts == {"CreateMultipartUpload": 2, "UploadPart": 1,
                            "CompleteMultipartUpload": 1, "AbortMultipartUpload": 1}
    assert _markers(store) == {}


# -- scan and the command's logic ----------------------------------------------------------


async def _own_upload(store: MemoryStore, key: str, *, pid: int = 1, host: str = "elsewhere",
                      started: float = NOW) -> str:
    upload_id = await store.create_upload(key, metadata={})
    store.uploads[upload_id].initiated = started
    body = marker_body(key, upload_id, now=started, host=host, pid=pid)
    await store.put(marker_key(upload_id), body, metadata={})
    return upload_id


async def test_scan_tells_own_uploads_from_others_and_finds_stale_markers() -> None:
    store = MemoryStore()
    own = await _own_upload(store, "a/own.bin", pid=123)
    foreign = await store.create_upload("a/foreign.bin", metadata={})
    outside = await _own_upload(store, "b/other.bin")
    await store.put(marker_key("long-gone"), marker_body("x", "long-gone"), metadata={})
    await store.put(MARKER_PREFIX + "README", b"not a marker", metadata={})

    found = await scan(store, "a/", is_running=lambda m: False)
    assert [(e.key, e.upload_id, e.marked) for e in found.entries] == [
        ("a/foreign.bin", foreign, False), ("a/own.bin", own, True)]
    own_entry = found.entries[1]
    assert own_entry.marker == Marker("a/own.bin", own, NOW, "elsewhere", 123)
    assert own_entry.owner() == "s3mpfs host=elsewhere pid=123"
    assert found.entries[0].owner().startswith("other")
    # b/other.bin's marker is not stale although that upload is outside the prefix
    assert found.stale_markers == [marker_key("long-gone")]
    assert marker_key(outside) in store.objects


async def test_scan_lists_markers_before_uploads() -> None:
    """An upload created (and marked) while the scan runs is never taken for stale."""

    class Racy(MemoryStore):
        raced: str | None = None

        async def list_uploads(self, prefix: str = "", *,
                               max_uploads: int | None = None) -> list[UploadInfo]:
            if self.raced is None:  # a mount starts an upload between the two listings
                self.raced = await self.create_upload("new.bin", metadata={}, mark=True)
            return await super().list_uploads(prefix, max_uploads=max_uploads)

    store = Racy()
    found = await scan(store, is_running=lambda m: False)
    assert found.stale_markers == []
    report = await run(store, "", do_abort=False, include_all=False, older_than=None)
    assert report.stale_removed == 0
    assert store.raced is not None and marker_key(store.raced) in store.objects


async def test_run_lists_own_uploads_and_hides_others_without_all() -> None:
    store = MemoryStore()
    own = await _own_upload(store, "own.bin", pid=55, started=NOW - 7200)
    await store.create_upload("foreign.bin", metadata={})
    report = await run(store, "", do_abort=False, include_all=False, older_than=None, now=NOW)
    assert report.lines == [f"own.bin\t{own}\t2h\ts3mpfs host=elsewhere pid=55"]
    assert report.hidden_foreign == 1
    assert len(store.uploads) == 2  # listing aborts nothing


async def test_run_abort_aborts_own_uploads_only_unless_all() -> None:
    store = MemoryStore()
    own = await _own_upload(store, "own.bin")
    foreign = await store.create_upload("foreign.bin", metadata={})
    report = await run(store, "", do_abort=True, include_all=False, older_than=None, now=NOW)
    assert report.aborted == 1 and report.failed == 0
    assert report.lines[0].endswith("\taborted")
    assert set(store.uploads) == {foreign}
    assert marker_key(own) not in store.objects  # its marker went with it
    store.uploads[foreign].initiated = NOW - 90
    report = await run(store, "", do_abort=True, include_all=True, older_than=None, now=NOW)
    assert report.lines == [f"foreign.bin\t{foreign}\t90s\tother (not started by s3mpfs)"
                            "\taborted"]
    assert store.uploads == {}


async def test_run_older_than_uses_the_younger_of_initiated_and_marker_time() -> None:
    store = MemoryStore()
    old = await _own_upload(store, "old.bin", started=NOW - 3 * 86400)
    young = await _own_upload(store, "young.bin", started=NOW - 3600)
    # Some S3 imitations (moto) report a fixed Initiated years ago: the marker's time wins.
    store.uploads[young].initiated = NOW - 10 * 365 * 86400
    report = await run(store, "", do_abort=True, include_all=False,
                       older_than=parse_age("1d"), now=NOW)
    assert [line.split("\t")[:3] for line in report.lines] == [["old.bin", old, "3d"]]
    assert set(store.uploads) == {young}


async def test_run_never_aborts_an_upload_of_a_running_s3mpfs() -> None:
    store = MemoryStore()
    live = await _own_upload(store, "live.bin", pid=99)
    report = await run(store, "", do_abort=True, include_all=True, older_than=None, now=NOW,
                       is_running=lambda m: m.pid == 99)
    assert report.skipped_running == 1 and report.aborted == 0
    assert "(still running)" in report.lines[0] and "skipped" in report.lines[0]
    assert set(store.uploads) == {live}


async def test_run_reports_abort_failures_and_removes_stale_markers() -> None:
    mem = MemoryStore()
    await _own_upload(mem, "stuck.bin")
    await mem.put(marker_key("finished-long-ago"), b"{}", metadata={})
    store = FaultyStore(mem)
    store.fail("abort_upload", StoreError("injected: InternalError", code="InternalError"),
               and_after=True)
    report = await run(store, "", do_abort=True, include_all=False, older_than=None, now=NOW)
    assert report.failed == 1 and report.aborted == 0
    assert "abort failed" in report.lines[0] and "InternalError" in report.lines[0]
    assert report.stale_removed == 1
    assert marker_key("finished-long-ago") not in mem.objects
    assert len(_markers(mem)) == 1  # the stuck upload keeps its marker


def test_running_here_checks_host_and_process() -> None:
    me = socket.gethostname()
    assert not running_here(Marker("k", "u", NOW, "another-host", os.getpid()))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not running_here(Marker("k", "u", NOW, me, dead.pid))
    # A live process whose command line names s3mpfs
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()", "s3mpfs"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"up\n"  # exec'd: /proc/PID/cmdline is its own
        assert running_here(Marker("k", "u", NOW, me, proc.pid))
    finally:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()


# -- ages and the command line -------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("45s", 45), ("30m", 1800), ("12h", 43200), ("1d", 86400), ("2w", 1209600), ("1D", 86400),
])
def test_parse_age(text: str, seconds: int) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "d", "1y", "-1d", "1.5h"])
def test_parse_age_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not an age"):
        parse_age(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (5, "5s"), (119, "119s"), (120, "2m"), (7199, "119m"), (7200, "2h"), (86400, "24h"),
    (2 * 86400, "2d"), (13 * 86400, "13d"), (14 * 86400, "2w"), (-3, "0s"),
])
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_wants_uploads_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnt").mkdir()
    assert wants_uploads(["uploads", "mybucket"])
    assert wants_uploads(["uploads", "mybucket:some/prefix", "--abort"])
    assert wants_uploads(["--uploads", "mnt"])  # always the command
    assert wants_uploads(["uploads", "--help"])
    assert not wants_uploads(["uploads", "mnt"])  # an existing directory: mount "uploads"
    assert not wants_uploads(["uploads", str(tmp_path / "mnt")])
    assert not wants_uploads(["uploads", "/dev/fd/3"])  # mount.fuse3 -o drop_privileges
    assert not wants_uploads(["uploads", "-f", "mnt"])
    assert not wants_uploads(["uploads", "Not_A_Bucket"])
    assert not wants_uploads(["uploads"])
    assert not wants_uploads(["mybucket", "mnt"])


def test_cli_main_dispatches_to_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from s3mpfs import cli

    seen: list[list[str]] = []
    def fake_main(argv: list[str]) -> int:
        seen.append(list(argv))
        return 7

    monkeypatch.setattr(orphans, "main", fake_main)
    assert cli.main(["uploads", "no-such-dir-here-bucket", "--all"]) == 7
    assert cli.main(["--uploads", "b1b", "--abort"]) == 7
    assert seen == [["no-such-dir-here-bucket", "--all"], ["b1b", "--abort"]]


# -- at mount time -------------------------------------------------------------------------


async def _uploads(store: MemoryStore, keys: list[str], *, marked: list[str]) -> list[str]:
    """Uploads under the given keys, marked (as a crashed mount left them) where listed."""
    ids = [await store.create_upload(key, metadata={}) for key in keys]
    for key, upload_id in zip(keys, ids, strict=True):
        if key in marked:
            await store.put(marker_key(upload_id), marker_body(key, upload_id), metadata={})
    store.counts.clear()
    return ids


async def test_warn_at_mount_costs_one_request_when_there_are_no_uploads(
        caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    await _uploads(store, ["elsewhere/x"], marked=["elsewhere/x"])  # outside the prefix
    with caplog.at_level(logging.DEBUG, logger="s3mpfs.orphans"):
        assert await warn_at_mount(store, S3Config("bkt", "pre/")) == 0
    assert store.counts == {"ListMultipartUploads": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_warn_at_mount_counts_marked_uploads_in_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    await _uploads(store, ["pre/k0", "pre/k1", "pre/k2", "other/k3"],
                   marked=["pre/k0", "pre/k2", "other/k3"])
    await store.put(marker_key("gone"), marker_body("pre/gone", "gone"), metadata={})
    store.counts.clear()
    cfg = S3Config("bkt", "pre/", endpoint_url="http://127.0.0.1:9", profile="p")
    with caplog.at_level(logging.WARNING, logger="s3mpfs.orphans"):
        assert await warn_at_mount(store, cfg) == 2
    assert store.counts == {"ListMultipartUploads": 1, "ListObjectsV2": 1}
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    msg = record.getMessage()
    assert "\n" not in msg
    assert msg.startswith("2 unfinished multipart uploads started by s3mpfs under s3://bkt/pre/")
    assert ("s3mpfs uploads bkt:pre --endpoint-url http://127.0.0.1:9 --profile p --abort"
            in msg)


async def test_warn_at_mount_reads_one_page_and_says_when_there_may_be_more(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(orphans, "MOUNT_PAGE", 2)
    store = MemoryStore()
    await _uploads(store, ["a", "b", "c"], marked=["a", "c"])
    with caplog.at_level(logging.WARNING, logger="s3mpfs.orphans"):
        assert await warn_at_mount(store, S3Config("bkt")) == 1  # "a": "c" is on page 2
    assert store.counts == {"ListMultipartUploads": 1, "ListObjectsV2": 1}
    assert caplog.records[0].getMessage().startswith("at least 1 unfinished")


async def test_warn_at_mount_never_raises() -> None:
    store = FaultyStore(MemoryStore())
    store.fail("list_uploads", StoreError("injected: endpoint exploded"))
    assert await warn_at_mount(store, S3Config("bkt")) == 0


# -- the mount hides the markers -----------------------------------------------------------


async def test_listing_hides_the_marker_prefix_at_the_bucket_root_only() -> None:
    store = MemoryStore()
    await store.create_upload("f", metadata={}, mark=True)
    assert _markers(store)
    await store.put("f", b"x", metadata={})
    await store.put("sub/.s3mpfs/x", b"x", metadata={})
    root = await list_dir(store, "")
    assert [(e.name, e.kind) for e in root or []] == [("f", Kind.FILE), ("sub", Kind.DIR)]
    sub = await list_dir(store, "sub/")
    assert [e.name for e in sub or []] == [".s3mpfs"]


# -- main() against moto -------------------------------------------------------------------

ENV = {**os.environ, **CREDENTIALS}


def uploads_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3mpfs", "uploads", *args],
                          capture_output=True, text=True, env=ENV, timeout=60)


@pytest.fixture
def own_and_foreign(s3: Any, bucket: str) -> Iterator[tuple[str, str]]:
    """One upload marked as s3mpfs's (by a process that is gone) and one of another tool."""
    own = s3.create_multipart_upload(Bucket=bucket, Key="dir/own.bin")["UploadId"]
    s3.put_object(Bucket=bucket, Key=marker_key(own),
                  Body=marker_body("dir/own.bin", own, host="crashed-host", pid=4242))
    foreign = s3.create_multipart_upload(Bucket=bucket, Key="dir/foreign.bin")["UploadId"]
    yield own, foreign
    for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])


def _upload_ids(s3: Any, bucket: str) -> set[str]:
    return {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}


def test_command_lists_and_aborts_against_moto(moto_server: MotoServer, s3: Any, bucket: str,
                                               own_and_foreign: tuple[str, str]) -> None:
    own, foreign = own_and_foreign
    r = uploads_cli(bucket, "--endpoint-url", moto_server.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"dir/own.bin\t{own}\t{r.stdout.split(chr(9))[2]}\ts3mpfs host=crashed-host pid=4242"]
    assert "1 upload of other tools not shown (add --all)" in r.stderr

    r = uploads_cli(bucket, "--endpoint-url", moto_server.url, "--all")
    lines = r.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["dir/foreign.bin", "dir/own.bin"]
    assert lines[0].endswith("\tother (not started by s3mpfs)")

    r = uploads_cli(f"{bucket}:elsewhere", "--endpoint-url", moto_server.url, "--all")
    assert r.returncode == 0 and r.stdout == ""

    r = uploads_cli(bucket, "--endpoint-url", moto_server.url, "--abort")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith("\taborted")
    assert _upload_ids(s3, bucket) == {foreign}  # the foreign one needs --all
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=MARKER_PREFIX)

    r = uploads_cli(bucket, "--endpoint-url", moto_server.url, "--all", "--abort")
    assert r.returncode == 0, r.stderr
    assert _upload_ids(s3, bucket) == set()


def test_command_removes_stale_markers(moto_server: MotoServer, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key=marker_key("done"), Body=b"{}")
    r = uploads_cli(bucket, "--endpoint-url", moto_server.url)
    assert r.returncode == 0, r.stderr
    assert "1 stale marker removed" in r.stderr
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=MARKER_PREFIX)


def test_command_errors(moto_server: MotoServer) -> None:
    r = uploads_cli("no-such-bucket-here", "--endpoint-url", moto_server.url)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no-such-bucket-here" in r.stderr and "does not exist" in r.stderr
    r = uploads_cli("bkt", "--older-than", "soon", "--endpoint-url", moto_server.url)
    assert r.returncode == 2 and "not an age" in r.stderr
