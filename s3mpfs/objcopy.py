"""Server-side copies of whole objects, for rename and metadata changes.

CopyObject copies up to 5 GiB in one request; larger objects are copied as a multipart upload
of UploadPartCopy ranges (S3's documented way; rclone's --s3-copy-cutoff and goofys do the
same). Every copy is pinned to the source ETag, so a source replaced meanwhile fails the copy
(PreconditionFailed) instead of copying something else.
"""

from __future__ import annotations

from collections.abc import Mapping

from s3mpfs.config import MAX_PART_SIZE
from s3mpfs.errors import StoreError
from s3mpfs.store.base import ObjectStore
from s3mpfs.store.objectargs import system_headers
from s3mpfs.upload import copy_ranges


async def copy_object(store: ObjectStore, src: str, dst: str, *, size: int, etag: str | None,
                      metadata: Mapping[str, str] | None) -> str:
    """Copy src to dst; metadata None keeps the source's."""
    if size <= MAX_PART_SIZE:
        return await store.copy(src, dst, metadata=metadata, src_etag=etag)
    # A multipart copy is a new object: it keeps the source's Cache-Control & co. only if it
    # sends them (one HEAD; its Content-Type is the new name's, as for any new object).
    source = await store.head(src)
    if metadata is None:
        metadata = source.metadata
    upload_id = await store.create_upload(dst, metadata=metadata,
                                          headers=system_headers(source.headers))
    try:
        parts = []
        for number, (start, end) in enumerate(copy_ranges(size), start=1):
            parts.append((number, await store.upload_part_copy(
                dst, upload_id, number, src, start, end, src_etag=etag)))
        # --no-clobber: a copy onto itself (a metadata change) replaces exactly its source
        return await store.complete_upload(dst, upload_id, parts,
                                           replacing=etag if src == dst else None)
    except StoreError:
        await store.abort_upload(dst, upload_id)
        raise
