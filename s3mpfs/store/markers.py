"""Upload markers: how s3mpfs knows the multipart uploads it started.

A multipart upload that is never completed nor aborted (the daemon was killed with -9, the
machine lost power, an abort failed) stays in the bucket, invisible to listings and billed for
its parts, until someone aborts it. ListMultipartUploads returns no metadata, so an upload
cannot say who started it; s3mpfs therefore writes a tiny *marker object* per upload:

    .s3mpfs/uploads/<sha256(upload id)[:32]>     (at the bucket root, whatever the prefix)
    {"key": ..., "upload_id": ..., "started": "2024-05-01T12:00:00Z", "host": ..., "pid": ...}

The store writes it itself: `create_upload(key, ..., mark=True)` (what upload.py asks for) puts
the marker right after CreateMultipartUpload, and the same store deletes it right after it
completes or aborts that upload (`Markers`, one per store). Both are best effort: one request
each, a failure is logged and never fails the user's write. An upload whose abort failed keeps
its marker, so it can be found. Uploads created without mark=True (a server-side copy of an
object over 5 GiB, objcopy.py) carry no marker and cost no marker requests.

`.s3mpfs/` (INTERNAL_DIR) is s3mpfs's own corner of the bucket, defined here once: the mount
hides it from the listing of the bucket root (listing.py), object options leave its keys alone
(objectargs.py), and `s3mpfs uploads` (orphans.py) reads the markers to tell s3mpfs's uploads
from other tools' and to find the ones whose process is gone.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import socket
import time
from dataclasses import dataclass

from s3mpfs.errors import AccessDenied
from s3mpfs.store.base import ObjectStore

log = logging.getLogger(__name__)

INTERNAL_DIR = ".s3mpfs"  # s3mpfs's own objects, at the bucket root
INTERNAL_PREFIX = INTERNAL_DIR + "/"
MARKER_PREFIX = f"{INTERNAL_PREFIX}uploads/"
_MARKER_NAME = re.compile(r"^[0-9a-f]{32}$")
MARKER_MAX = 64 * 1024  # bytes of a marker read back; ours are ~200


def marker_key(upload_id: str) -> str:
    """The marker object of one multipart upload (derivable from the upload id alone, so
    removing it needs nothing else)."""
    return MARKER_PREFIX + hashlib.sha256(upload_id.encode("utf-8")).hexdigest()[:32]


def is_marker_key(key: str) -> bool:
    """Is key a marker's name (not just any object under MARKER_PREFIX)?"""
    return key.startswith(MARKER_PREFIX) and bool(_MARKER_NAME.match(key[len(MARKER_PREFIX):]))


@dataclass(frozen=True)
class Marker:
    key: str
    upload_id: str
    started: float  # seconds since the epoch
    host: str
    pid: int


def marker_body(key: str, upload_id: str, *, now: float | None = None,
                host: str | None = None, pid: int | None = None) -> bytes:
    started = datetime.datetime.fromtimestamp(time.time() if now is None else now,
                                              datetime.UTC)
    return json.dumps({
        "key": key,
        "upload_id": upload_id,
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname() if host is None else host,
        "pid": os.getpid() if pid is None else pid,
    }, sort_keys=True).encode("utf-8")


def parse_marker(data: bytes) -> Marker | None:
    """A marker's body, or None if it is not one of ours (or damaged)."""
    try:
        doc = json.loads(data.decode("utf-8"))
        started = datetime.datetime.strptime(str(doc["started"]), "%Y-%m-%dT%H:%M:%SZ")
        return Marker(str(doc["key"]), str(doc["upload_id"]),
                      started.replace(tzinfo=datetime.UTC).timestamp(),
                      str(doc["host"]), int(doc["pid"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def running_here(marker: Marker) -> bool:
    """Is the s3mpfs process that wrote this marker still running on this host?"""
    if marker.host != socket.gethostname() or marker.pid <= 0:
        return False
    try:
        with open(f"/proc/{marker.pid}/cmdline", "rb") as f:
            return b"s3mpfs" in f.read()
    except OSError:
        return False


async def remove(store: ObjectStore, upload_id: str) -> None:
    """Delete the marker of a completed or aborted upload (one DeleteObject). Never raises."""
    try:
        await store.delete(marker_key(upload_id))
    except Exception as exc:  # a stale marker is harmless: `s3mpfs uploads` removes it
        log.warning("could not delete the marker %s of multipart upload %s (%s); "
                    "`s3mpfs uploads BUCKET` removes stale markers",
                    marker_key(upload_id), upload_id, exc)


class Markers:
    """The markers of the uploads one store starts with mark=True: `register` after
    CreateMultipartUpload, `unregister` after the store completed or aborted one of them
    (uploads it did not mark, such as those `s3mpfs uploads` aborts, are left alone).

    Once writing a marker is refused (AccessDenied), this store stops marking: later uploads
    skip the marker instead of paying a refused request each time."""

    def __init__(self) -> None:
        self.denied = False
        self._marked: set[str] = set()  # upload ids registered and not yet ended

    async def register(self, store: ObjectStore, key: str, upload_id: str) -> None:
        """Mark a multipart upload as started by s3mpfs (one PutObject). Never raises."""
        self._marked.add(upload_id)
        if self.denied:
            return
        try:
            await store.put(marker_key(upload_id), marker_body(key, upload_id), metadata={})
        except AccessDenied as exc:
            self.denied = True
            log.warning("%s: cannot write upload markers under %s (%s); from now on this "
                        "mount does not mark its multipart uploads, so uploads it leaves "
                        "behind after a crash are listed as other tools' (s3mpfs uploads "
                        "BUCKET --all)", key, MARKER_PREFIX, exc)
        except Exception as exc:  # best effort: never fail the user's write over a marker
            log.warning("%s: could not write the marker of multipart upload %s (%s); if this "
                        "upload is left behind, s3mpfs uploads lists it only with --all",
                        key, upload_id, exc)

    async def unregister(self, store: ObjectStore, upload_id: str) -> None:
        """The upload ended (completed, or aborted): forget its marker if register() made
        one. Never raises."""
        if upload_id not in self._marked:
            return
        self._marked.discard(upload_id)
        if not self.denied:
            await remove(store, upload_id)


__all__ = ["INTERNAL_DIR", "INTERNAL_PREFIX", "MARKER_MAX", "MARKER_PREFIX", "Marker",
           "Markers", "is_marker_key", "marker_body", "marker_key", "parse_marker", "remove",
           "running_here"]
