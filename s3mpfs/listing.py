"""Directory listings: ListObjectsV2 pages (delimiter "/") -> directory entries.

Common prefixes are directories whether or not a "dir/" marker object exists. Keys that a
POSIX directory cannot show (empty segments as in "a//b", "." or "..", names over 255 bytes)
are skipped with a warning instead of crashing the listing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from s3mpfs.inodes import Kind
from s3mpfs.store.base import ObjectStore
from s3mpfs.store.markers import INTERNAL_DIR

log = logging.getLogger(__name__)

NAME_MAX = 255  # bytes, Linux's limit for one path component


@dataclass(frozen=True)
class DirEntry:
    name: str
    kind: Kind
    size: int = 0
    mtime: float = 0.0
    etag: str | None = None  # a directory's: of an object under its name without "/"


def valid_name(name: str) -> bool:
    return name not in ("", ".", "..") and len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX


async def list_dir(store: ObjectStore, dir_key: str,
                   max_pages: int | None = None) -> list[DirEntry] | None:
    """Every entry directly below dir_key ("" or ending in "/"), sorted by name, no duplicates.
    A name that is both a file and a prefix is listed once, as a directory. With max_pages,
    None when the directory has more pages than that."""
    entries: dict[str, DirEntry] = {}
    token: str | None = None
    pages = 0
    while True:
        if max_pages is not None and pages == max_pages:
            return None
        pages += 1
        page = await store.list_page(dir_key, token=token)
        for p in page.prefixes:
            name = p[len(dir_key):-1]
            if name == INTERNAL_DIR and not dir_key:  # upload markers: never shown
                continue
            if valid_name(name):
                shadowed = entries.get(name)  # an object `name` on an earlier page
                entries[name] = DirEntry(name, Kind.DIR,
                                         etag=shadowed.etag if shadowed is not None else None)
            else:
                log.warning("skipping prefix %r: not a valid directory name", p)
        for o in page.objects:
            name = o.key[len(dir_key):]
            if name == "":
                continue  # the directory's own marker
            if not valid_name(name):
                log.warning("skipping key %r: not a valid file name", o.key)
            elif name in entries:
                log.warning("key %r is both a file and a prefix; showing the directory", o.key)
                # its ETag marks the directory's entry: it may be s3fs's `dir` object
                entries[name] = DirEntry(name, Kind.DIR, etag=o.etag)
            else:
                entries[name] = DirEntry(name, Kind.FILE, o.size, o.mtime, o.etag)
        token = page.next_token
        if token is None:
            break
    return [entries[n] for n in sorted(entries)]
