"""`s3mpfs uploads BUCKET[:PREFIX]`: find and abort the multipart uploads s3mpfs left behind,
and the one WARNING at mount time when there are some.

A multipart upload that is never completed nor aborted (the daemon was killed with -9, the
machine lost power, an abort failed) stays in the bucket, invisible to listings and billed for
its parts, until someone aborts it. The store marks each upload s3mpfs starts with a marker
object under `.s3mpfs/uploads/` (store/markers.py: the format, and when markers are written and
deleted).

The command (`main`) lists the multipart uploads, matches them with the markers, and with
--abort aborts the ones s3mpfs started (with --all also the others). It also deletes stale
markers, whose upload no longer exists. At mount time `warn_at_mount` counts the marked uploads
under the mount's prefix (one ListMultipartUploads page, plus one page of markers only when
there are uploads) and logs one WARNING with the command to clean them. Both work on any
ObjectStore.

Which word means what: `s3mpfs uploads X ...` is this command when X is a valid
BUCKET[:PREFIX] and no file or directory X exists; otherwise it is the mount of a bucket named
"uploads" on X, as always. `s3mpfs --uploads X ...` always means this command.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from s3mpfs.config import ConfigError, S3Config, parse_bucket
from s3mpfs.errors import NotFound, StoreError
from s3mpfs.store.base import ObjectInfo, ObjectStore, UploadInfo
from s3mpfs.store.markers import (
    MARKER_MAX,
    MARKER_PREFIX,
    Marker,
    is_marker_key,
    marker_key,
    parse_marker,
    remove,
    running_here,
)

log = logging.getLogger(__name__)

# Markers read or uploads aborted at once by the command.
PARALLEL = 8
# The mount-time count looks at one page of uploads (and of markers): S3's largest.
MOUNT_PAGE = 1000


# -- finding uploads -----------------------------------------------------------------------


@dataclass
class Entry:
    """One multipart upload in the bucket."""

    key: str
    upload_id: str
    initiated: float
    marked: bool  # a marker exists: s3mpfs started it
    marker: Marker | None = None  # its contents, when readable
    running: bool = False  # the process that started it is alive on this host

    @property
    def started(self) -> float:
        """When the upload began: S3's Initiated, or the marker's time if that is later (the
        younger estimate wins, so --older-than never catches a fresh upload; some S3
        imitations report a fixed Initiated)."""
        if self.marker is not None:
            return max(self.initiated, self.marker.started)
        return self.initiated

    def owner(self) -> str:
        if not self.marked:
            return "other (not started by s3mpfs)"
        if self.marker is None:
            return "s3mpfs (marker unreadable)"
        text = f"s3mpfs host={self.marker.host} pid={self.marker.pid}"
        return text + (" (still running)" if self.running else "")


@dataclass
class Scan:
    entries: list[Entry]  # uploads under the prefix, marked or not, sorted by key
    stale_markers: list[str] = field(default_factory=list)  # markers without an upload


async def _list_all(store: ObjectStore, prefix: str) -> list[ObjectInfo]:
    out: list[ObjectInfo] = []
    token: str | None = None
    while True:
        page = await store.list_page(prefix, delimiter=None, token=token)
        out += page.objects
        token = page.next_token
        if token is None:
            return out


async def _read_marker(store: ObjectStore, entry: Entry) -> None:
    try:
        data = await store.get_range(marker_key(entry.upload_id), 0, MARKER_MAX)
    except StoreError as exc:
        log.debug("cannot read the marker of %s: %s", entry.upload_id, exc)
        return
    marker = parse_marker(data)
    if marker is not None and marker.upload_id == entry.upload_id:
        entry.marker = marker


async def scan(store: ObjectStore, prefix: str = "", *,
               is_running: Callable[[Marker], bool] = running_here) -> Scan:
    """Every multipart upload under prefix, with its marker if s3mpfs started it, and the
    markers whose upload is gone.

    Markers are listed *before* uploads: a marker is written after its upload is created, so
    every marker seen first belongs to an upload that the later listing shows unless it has
    ended since. The other order could take a brand-new upload's marker for a stale one."""
    markers = {o.key for o in await _list_all(store, MARKER_PREFIX) if is_marker_key(o.key)}
    uploads: list[UploadInfo] = await store.list_uploads("")  # whole bucket: for staleness
    live = {marker_key(u.upload_id) for u in uploads}
    entries = [Entry(u.key, u.upload_id, u.initiated, marker_key(u.upload_id) in markers)
               for u in uploads if u.key.startswith(prefix)]
    limiter = trio.CapacityLimiter(PARALLEL)

    async def read(entry: Entry) -> None:
        async with limiter:
            await _read_marker(store, entry)
        if entry.marker is not None:
            entry.running = is_running(entry.marker)

    async with trio.open_nursery() as nursery:
        for entry in entries:
            if entry.marked:
                nursery.start_soon(read, entry)
    entries.sort(key=lambda e: (e.key, e.initiated, e.upload_id))
    return Scan(entries, sorted(markers - live))


async def remove_stale(store: ObjectStore, keys: Sequence[str]) -> int:
    """Delete markers whose upload no longer exists; returns how many went."""
    removed = 0
    for key in keys:
        try:
            await store.delete(key)
            removed += 1
        except StoreError as exc:
            log.warning("could not delete the stale marker %s: %s", key, exc)
    return removed


async def abort(store: ObjectStore, entry: Entry) -> str:
    """Abort one upload (and drop its marker); returns what happened, for the listing."""
    try:
        await store.abort_upload(entry.key, entry.upload_id)
        result = "aborted"
    except NotFound:
        result = "already gone"
    except StoreError as exc:
        return f"abort failed: {exc}"
    if entry.marked:
        await remove(store, entry.upload_id)
    return result


# -- ages ----------------------------------------------------------------------------------

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_age(text: str) -> float:
    """'30m', '12h', '1d', '2w' (also '45s') -> seconds."""
    m = _AGE_RE.match(text)
    if not m:
        raise ConfigError(f"not an age: {text!r} (examples: 30m, 12h, 1d, 2w)")
    return int(m.group(1)) * _AGE_UNITS[m.group(2).lower()]


def format_age(seconds: float) -> str:
    """The largest unit of which there are at least 2, rounded down: 119m, 2h, 47h, 2d."""
    seconds = max(0, int(seconds))
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- the command ---------------------------------------------------------------------------

FD_MOUNTPOINT = re.compile(r"^/dev/fd/\d+$")


def wants_uploads(argv: Sequence[str]) -> bool:
    """Is this command line `s3mpfs uploads ...` rather than a mount of bucket "uploads"?

    `--uploads` always is. `uploads X` is when X is a valid BUCKET[:PREFIX] and nothing
    exists at path X (a mount point must exist; a dead FUSE mount there counts as existing)."""
    if argv[:1] == ["--uploads"]:
        return True
    if len(argv) < 2 or argv[0] != "uploads":
        return False
    spec = argv[1]
    if spec in ("-h", "--help"):
        return True  # a mount's --help would only print the mount's help
    if spec.startswith("-") or FD_MOUNTPOINT.match(spec):
        return False
    try:
        parse_bucket(spec)
    except ConfigError:
        return False
    try:
        os.lstat(spec)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # ENOTCONN (a dead mount), EACCES: something is there
    return False


USAGE = ("s3mpfs uploads BUCKET[:PREFIX] [--abort] [--older-than AGE] [--all] "
         "[--endpoint-url URL] [--region R] [--profile P]")

DESCRIPTION = f"""\
List the unfinished multipart uploads in a bucket that s3mpfs started (a daemon killed with
-9, a crash, an abort that failed: such uploads are billed until aborted), one line each:
KEY, UPLOAD ID, AGE, OWNER (tab-separated). --abort aborts them. Markers under {MARKER_PREFIX}
whose upload no longer exists are deleted. Uploads of a still running s3mpfs on this host are
listed but never aborted.

"uploads X" means this command when X is not an existing file or directory; otherwise it
mounts a bucket named "uploads" on X. `s3mpfs --uploads X` always means this command."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s3mpfs uploads", usage=USAGE, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bucket", metavar="BUCKET[:PREFIX]",
                   help="the bucket; with :PREFIX only uploads of keys under PREFIX/")
    p.add_argument("--abort", action="store_true",
                   help="abort the uploads listed (those of other tools only with --all)")
    p.add_argument("--older-than", metavar="AGE",
                   help="only uploads started more than AGE ago: 30m, 12h, 1d, 2w")
    p.add_argument("--all", action="store_true",
                   help="also uploads s3mpfs did not start (other tools'), marked as such")
    p.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint")
    p.add_argument("--region", help="AWS region")
    p.add_argument("--profile", help="AWS profile")
    return p


@dataclass
class Report:
    lines: list[str]
    listed: int = 0
    hidden_foreign: int = 0
    aborted: int = 0
    failed: int = 0
    skipped_running: int = 0
    stale_removed: int = 0


async def run(store: ObjectStore, prefix: str, *, do_abort: bool, include_all: bool,
              older_than: float | None, now: float | None = None,
              is_running: Callable[[Marker], bool] = running_here) -> Report:
    """The command on any ObjectStore: list, abort, remove stale markers."""
    found = await scan(store, prefix, is_running=is_running)
    now = time.time() if now is None else now
    report = Report([])
    chosen: list[Entry] = []
    for entry in found.entries:
        if older_than is not None and now - entry.started < older_than:
            continue
        if not entry.marked and not include_all:
            report.hidden_foreign += 1
            continue
        chosen.append(entry)
    results: dict[str, str] = {}
    if do_abort:
        limiter = trio.CapacityLimiter(PARALLEL)

        async def abort_one(entry: Entry) -> None:
            async with limiter:
                results[entry.upload_id] = await abort(store, entry)

        async with trio.open_nursery() as nursery:
            for entry in chosen:
                if entry.running:
                    results[entry.upload_id] = "skipped: its s3mpfs is still running"
                    report.skipped_running += 1
                else:
                    nursery.start_soon(abort_one, entry)
    for entry in chosen:
        cells = [entry.key, entry.upload_id, format_age(now - entry.started), entry.owner()]
        result = results.get(entry.upload_id)
        if result is not None:
            cells.append(result)
            report.aborted += result in ("aborted", "already gone")
            report.failed += result.startswith("abort failed")
        report.lines.append("\t".join(cells))
    report.listed = len(chosen)
    report.stale_removed = await remove_stale(store, found.stale_markers)
    return report


def _summary(report: Report, do_abort: bool) -> str:
    text = f"{report.listed} upload{'' if report.listed == 1 else 's'} listed"
    if report.hidden_foreign:
        text += (f"; {report.hidden_foreign} upload{'' if report.hidden_foreign == 1 else 's'}"
                 " of other tools not shown (add --all)")
    if do_abort:
        text += f"; {report.aborted} aborted"
        if report.failed:
            text += f", {report.failed} could not be aborted"
        if report.skipped_running:
            text += f", {report.skipped_running} skipped (s3mpfs still running)"
    if report.stale_removed:
        text += f"; {report.stale_removed} stale marker{'' if report.stale_removed == 1 else 's'}"
        text += " removed"
    return text


def main(argv: Sequence[str]) -> int:
    """`s3mpfs uploads ...` (argv after the word "uploads"/"--uploads"); exit 0, 1 if S3
    failed or an abort failed, 2 for a bad command line."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    try:
        bucket, prefix = parse_bucket(args.bucket)
        older = parse_age(args.older_than) if args.older_than else None
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="s3mpfs: %(message)s")
    # Imported here for speed, not for an import cycle: cli.py imports this module for
    # wants_uploads() on every command line, and boto3 takes a while to import.
    from s3mpfs.store.boto import BotoStore

    cfg = S3Config(bucket, prefix, args.endpoint_url, args.region, args.profile)
    store = BotoStore(cfg, threads=PARALLEL)
    try:
        store.check_bucket()
        report = trio.run(lambda: run(store, prefix, do_abort=args.abort,
                                      include_all=args.all, older_than=older))
    except StoreError as exc:
        where = f" at {cfg.endpoint_url}" if cfg.endpoint_url else ""
        print(f"s3mpfs uploads: bucket {bucket!r}{where}: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(BrokenPipeError):
        for line in report.lines:
            print(line)
        sys.stdout.flush()
    print(_summary(report, args.abort), file=sys.stderr)
    return 1 if report.failed else 0


# -- at mount time -------------------------------------------------------------------------


def command_for(cfg: S3Config) -> str:
    spec = cfg.bucket + (":" + cfg.prefix.rstrip("/") if cfg.prefix else "")
    words = ["s3mpfs", "uploads", spec]
    for flag, value in (("--endpoint-url", cfg.endpoint_url), ("--region", cfg.region),
                        ("--profile", cfg.profile)):
        if value:
            words += [flag, value]
    return " ".join(words)


async def count_marked(store: ObjectStore, prefix: str) -> tuple[int, bool]:
    """(uploads under the prefix that carry a marker, whether there may be more), from one
    ListMultipartUploads page and, only if it has uploads, one page of markers. "More" errs on
    the safe side: a page of exactly MOUNT_PAGE uploads counts as possibly incomplete."""
    uploads = await store.list_uploads(prefix, max_uploads=MOUNT_PAGE)
    if not uploads:
        return 0, False
    page = await store.list_page(MARKER_PREFIX, delimiter=None, max_keys=MOUNT_PAGE)
    markers = {o.key for o in page.objects}
    count = sum(1 for u in uploads if marker_key(u.upload_id) in markers)
    return count, len(uploads) >= MOUNT_PAGE or page.next_token is not None


async def warn_at_mount(store: ObjectStore, cfg: S3Config) -> int:
    """Log one WARNING if uploads s3mpfs started under the mount's prefix are unfinished
    (left by a crash, or being written by another mount right now). Never raises; returns
    the count."""
    try:
        count, more = await count_marked(store, cfg.prefix)
    except Exception as exc:  # a report, not a check: never stop the mount over it
        log.debug("cannot look for orphaned multipart uploads: %s", exc)
        return 0
    if count:
        where = f"s3://{cfg.bucket}/{cfg.prefix}"
        log.warning("%s%d unfinished multipart upload%s started by s3mpfs under %s (left by "
                    "a crash or kill -9, or being written by another mount now); they are "
                    "billed until aborted. List them with: %s; abort them with: %s --abort",
                    "at least " if more else "", count, "" if count == 1 else "s", where,
                    command_for(cfg), command_for(cfg))
    return count


__all__ = ["Entry", "Report", "Scan", "abort", "count_marked", "main", "run", "scan",
           "wants_uploads", "warn_at_mount"]
