"""`s3mpfs status MOUNTPOINT`: the uploads in progress on a mount, read from the virtual
extended attribute user.s3mpfs.status of its root (see xattrs.py). Also the mount table
helpers mount.py uses to explain a busy mountpoint.

"status" is also a valid bucket name, so the subcommand is chosen only when the word is
followed by the mount point of a live s3mpfs mount (/proc/self/mountinfo lists it with type
fuse.s3mpfs): a bucket cannot be mounted there anyway, that directory is taken. `s3mpfs
--status MOUNTPOINT` always means the subcommand.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from s3mpfs.xattrs import STATUS

MOUNTINFO = "/proc/self/mountinfo"
FSTYPE = "fuse.s3mpfs"


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str
    options: str


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040, \\011, \\012, \\134."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """proc(5): ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER."""
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 3:
            continue
        entries.append(MountEntry(_unescape(fields[4]), _unescape(fields[sep + 1]),
                                  _unescape(fields[sep + 2]), fields[5]))
    return entries


def find_mount(path: str, mountinfo: str | None = None) -> MountEntry | None:
    """The mount whose mount point is `path` (the last one wins: it is the visible one)."""
    if mountinfo is None:
        try:
            with open(MOUNTINFO) as f:
                mountinfo = f.read()
        except OSError:
            return None
    target = os.path.normpath(os.path.abspath(path))
    found = None
    for entry in parse_mountinfo(mountinfo):
        if entry.mountpoint == target:
            found = entry
    return found


def is_s3mpfs_mount(path: str, mountinfo: str | None = None) -> bool:
    entry = find_mount(path, mountinfo)
    return entry is not None and entry.fstype == FSTYPE


def wants_status(argv: list[str], mountinfo: str | None = None) -> bool:
    """Is this command line the status subcommand rather than a mount of bucket "status"?"""
    if argv[:1] == ["--status"]:
        return True
    return len(argv) >= 2 and argv[0] == "status" and is_s3mpfs_mount(argv[1], mountinfo)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_status(mountpoint: str, source: str, status: dict[str, Any]) -> str:
    uploads = status.get("uploads", [])
    more = int(status.get("more_uploads", 0))
    count = len(uploads) + more
    head = (f"{mountpoint}: {source} (s3mpfs {status.get('version', '?')}, pid "
            f"{status.get('pid', '?')}): {count} upload{'' if count == 1 else 's'} open, "
            f"{status.get('parts_in_flight', 0)} of {status.get('max_parts_in_flight', '?')} "
            f"parts in flight across the mount")
    if not uploads:
        return head + "\n"
    rows = [("WRITTEN", "UPLOADED", "PARTS", "IN FLIGHT", "STATE", "PATH")]
    rows += [(_size(u["written"]), _size(u["uploaded"]), str(u["parts_done"]),
              str(u["parts_in_flight"]), u["state"], u["path"]) for u in uploads]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [head]
    for row in rows:
        cells = [row[i].rjust(widths[i]) if i < 4 else row[i].ljust(widths[i]) for i in range(5)]
        lines.append("  ".join([*cells, row[5]]))
    if more:
        lines.append(f"... and {more} more")
    return "\n".join(lines) + "\n"


def read_status(mountpoint: str) -> dict[str, Any]:
    value = os.getxattr(mountpoint, STATUS)
    result: dict[str, Any] = json.loads(value)
    return result


def main(argv: list[str]) -> int:
    """argv: what follows "status" / "--status"."""
    p = argparse.ArgumentParser(prog="s3mpfs status",
                                description="List the uploads in progress on an s3mpfs mount.")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    args = p.parse_args(argv)
    entry = find_mount(args.mountpoint)
    if entry is None or entry.fstype != FSTYPE:
        print(f"s3mpfs status: {args.mountpoint} is not an s3mpfs mount point", file=sys.stderr)
        return 1
    try:
        status = read_status(args.mountpoint)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.EACCES:
            why += " (mounted by another user without -o allow_other)"
        elif exc.errno == errno.ENOTCONN:
            why += " (the s3mpfs process is gone: fusermount3 -u -z " + args.mountpoint + ")"
        print(f"s3mpfs status: {args.mountpoint}: {why}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        sys.stdout.write(format_status(entry.mountpoint, entry.source, status))
    return 0
