"""The per-request S3 parameters of object options, for BotoStore and MemoryStore alike.

`ObjectOptions` (config.py) holds the user's choices; `ObjectArgs` turns them into the extra
boto3 parameters of each S3 operation, in this one place:

    operation                    storage class, SSE, content type,   SSE-C key      condition
                                 tags, ACL                                          (--no-clobber)
    PutObject                    yes                                 yes            yes
    CreateMultipartUpload        yes                                 yes            -
    UploadPart                   -                                   yes            -
    CompleteMultipartUpload      -                                   yes (1)        yes
    UploadPartCopy               -                                   yes, + source  -
    CopyObject (rename, chmod)   class (2), SSE, type (3), ACL       yes, + source  yes (4)
    GetObject, HeadObject        -                                   yes (5)        -

(1) S3 needs the SSE-C key on Complete when the upload carries checksums (ours do).
(2) The configured class, else the source's (a CopyObject without x-amz-storage-class makes a
    STANDARD object): known from this store's own writes, listings and HEADs (`Known`), else one
    HeadObject of the source.
(3) Tags are kept by S3 (x-amz-tagging-directive COPY). Content-Type: a copy that replaces the
    metadata (chmod, a rename carrying changed attributes) must send it or S3 resets it; a rename
    to a name of another type (rsync's `.name.XXXXXX` -> `name`) gets the new name's type.
(4) Not for a copy onto the same key (a metadata change); If-None-Match: * for a rename.
(5) An object stored without SSE-C makes S3 answer 400 when the key is sent: BotoStore retries
    such a read (or copy source) once without it, so plain objects stay readable.

Keys the options leave alone: s3mpfs's own upload markers (`.s3mpfs/` at the bucket root,
markers.py) get only --sse and --acl (so `s3mpfs uploads` reads them without the SSE-C key and
they never land in a cold class); directory markers (`dir/`, 0 bytes) stay in S3's default class,
carry no SSE-C key (foreign markers must stay readable) and are exempt from --no-clobber (chmod
of a directory rewrites its marker); their Content-Type is application/x-directory (s3fs-fuse's).

No-clobber is a mount option, so the store applies it itself: every PutObject and
CompleteMultipartUpload of a new object, and every CopyObject onto another key (a rename),
carries If-None-Match: * without the caller asking. The caller states only the one exception,
explicitly: `put(..., replacing=ETAG)` and `complete_upload(..., replacing=ETAG)` may replace
exactly the object with that ETag, which the writer stored itself (a file that continues after
its own earlier commit, a second close() on the same open file, see upload.py; a multipart copy
of an object onto itself, objcopy.py), and carry If-Match: ETAG instead. Without --no-clobber
`replacing` sends nothing. A refused condition (412) becomes `ObjectExists`, which the
filesystem turns into EEXIST.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from s3mpfs.config import ObjectOptions
from s3mpfs.errors import ObjectExists, PreconditionFailed
from s3mpfs.store.markers import INTERNAL_PREFIX

log = logging.getLogger(__name__)

# HTTP headers S3 stores with an object (boto3's parameter names) beside Content-Type: a copy
# that replaces the metadata (chmod, touch, setxattr, a rename) must send them again or S3
# drops them; they are known from HEADs and this store's own writes (`Known`).
SYSTEM_HEADERS = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage",
                  "Expires")
DIRECTORY_TYPE = "application/x-directory"
DEFAULT_TYPE = "application/octet-stream"
# mimetypes names compressions as an encoding ("x.tar.gz" -> application/x-tar + gzip). A
# Content-Encoding header would make HTTP clients unpack the download, so the object gets the
# compressor's own type instead, as a careful user would set it.
_ENCODING_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                   "xz": "application/x-xz", "compress": "application/x-compress",
                   "br": "application/x-brotli"}


# -- per key ---------------------------------------------------------------------------------


def is_internal(key: str) -> bool:
    return key.startswith(INTERNAL_PREFIX)


def is_dir_marker(key: str) -> bool:
    return key.endswith("/")


def guess_content_type(key: str) -> str:
    """Content-Type from the file name, as `aws s3 cp` guesses it (mimetypes, which also reads
    /etc/mime.types); compressed files get the compressor's type; unknown: octet-stream."""
    if is_dir_marker(key):
        return DIRECTORY_TYPE
    name = key.rpartition("/")[2]
    ctype, encoding = mimetypes.guess_type(name)
    if encoding is not None:
        return _ENCODING_TYPES.get(encoding, DEFAULT_TYPE)
    return ctype or DEFAULT_TYPE


# -- no-clobber's refusals -------------------------------------------------------------------


@contextlib.contextmanager
def no_clobber_errors(op: str, key: str, kw: Mapping[str, Any]) -> Iterator[None]:
    """A 412 on a request that carries our no-clobber condition -> ObjectExists."""
    try:
        yield
    except PreconditionFailed as exc:
        if isinstance(exc, ObjectExists) or not ({"IfNoneMatch", "IfMatch"} & set(kw)):
            raise
        if "IfMatch" in kw:
            why = ("was replaced since this file's last close() stored it; --no-clobber keeps "
                   "the other object")
        else:
            why = "already exists; --no-clobber keeps it"
        raise ObjectExists(f"{op} {key}: not stored: an object under this key {why}",
                           code=exc.code, status=exc.status) from exc


def warn_refused(exc: ObjectExists) -> None:
    """The log line of a refused no-clobber write (the writer's close() gets EEXIST)."""
    log.warning("%s", exc)


# -- what a store knows about its objects ---------------------------------------------------


@dataclass(frozen=True)
class Source:
    """What a copy keeps from its source. None: not known."""

    etag: str
    storage_class: str | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] | None = None
    headers: Mapping[str, Any] | None = None  # SYSTEM_HEADERS it has (all of them)


def system_headers(kw: Mapping[str, Any]) -> dict[str, Any]:
    """The SYSTEM_HEADERS among a request's or a response's parameters."""
    return {k: kw[k] for k in SYSTEM_HEADERS if kw.get(k) is not None}


def _same_etag(a: str, b: str) -> bool:
    return a.strip('"') == b.strip('"')


class Known:
    """Storage class, Content-Type and metadata of objects this store wrote, listed or HEADed
    lately, by key and ETag: a copy keeps its source's class without a HeadObject of its own.
    Bounded (least recently learnt first out) and short-lived (a lifecycle rule may move an
    object to another class without changing its ETag)."""

    def __init__(self, max_entries: int = 50_000, ttl: float = 300.0) -> None:
        self.max_entries, self.ttl = max_entries, ttl
        self._entries: OrderedDict[str, tuple[float, Source]] = OrderedDict()

    def learn(self, key: str, source: Source) -> None:
        old = self.get(key, source.etag)
        if old is not None:  # a listing adds the class to what a HEAD told, and vice versa
            source = Source(source.etag, source.storage_class or old.storage_class,
                            source.content_type or old.content_type,
                            source.metadata if source.metadata is not None else old.metadata,
                            source.headers if source.headers is not None else old.headers)
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic() + self.ttl, source)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, key: str, etag: str | None) -> Source | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, source = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        if etag is not None and not _same_etag(etag, source.etag):
            return None
        return source

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


# -- the parameters of each request ----------------------------------------------------------


class ObjectArgs:
    """Builds the extra boto3 parameters of every request from one ObjectOptions."""

    def __init__(self, options: ObjectOptions | None = None) -> None:
        self.options = options or ObjectOptions()
        self.known = Known()
        self._uploads: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}

    # what applies to which key

    def storage_class(self, key: str) -> str | None:
        """The configured class for a new object under key (None: S3's default)."""
        if is_internal(key) or is_dir_marker(key):
            return None
        return self.options.storage_class

    def content_type(self, key: str) -> str | None:
        mode = self.options.content_type
        if mode == "none" or is_internal(key):
            return None
        if mode == "auto" or is_dir_marker(key):
            return guess_content_type(key)
        return mode

    def _encryption(self, key: str) -> dict[str, Any]:
        o = self.options
        kw: dict[str, Any] = {}
        if o.sse:
            kw["ServerSideEncryption"] = o.sse
            if o.sse_kms_key_id:
                kw["SSEKMSKeyId"] = o.sse_kms_key_id
        kw.update(self.sse_c(key))
        return kw

    def sse_c(self, key: str) -> dict[str, Any]:
        """The SSE-C key (raw: botocore base64-encodes it and adds its MD5)."""
        if self.options.sse_c_key is None or is_internal(key) or is_dir_marker(key):
            return {}
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self.options.sse_c_key}

    def copy_source_sse_c(self, src_key: str) -> dict[str, Any]:
        return {f"CopySource{k}": v for k, v in self.sse_c(src_key).items()}

    @property
    def etag_is_md5(self) -> bool:
        """Whether S3's ETag of a single PUT is the body's MD5 (not with SSE-KMS or SSE-C)."""
        return self.options.sse_c_key is None and not (self.options.sse or "").startswith("aws:")

    # requests

    def new_object(self, key: str, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """PutObject and CreateMultipartUpload; `headers`: SYSTEM_HEADERS to set as well (a
        multipart copy keeping its source's)."""
        o = self.options
        kw: dict[str, Any] = system_headers(headers or {})
        storage_class = self.storage_class(key)
        if storage_class:
            kw["StorageClass"] = storage_class
        kw.update(self._encryption(key))
        ctype = self.content_type(key)
        if ctype:
            kw["ContentType"] = ctype
        if o.tags and not is_internal(key):
            kw["Tagging"] = urllib.parse.urlencode(o.tags, quote_via=urllib.parse.quote)
        if o.acl:
            kw["ACL"] = o.acl
        return kw

    def condition(self, key: str, replacing: str | None = None,
                  create_only: bool = False) -> dict[str, Any]:
        """PutObject and CompleteMultipartUpload: --no-clobber's precondition. `replacing`:
        the ETag of the one object this write may replace (the writer's own earlier commit).
        `create_only` (a file created with O_EXCL): If-None-Match: * on this write whatever
        the mount's options, so an object another client stored meanwhile is never replaced."""
        if is_internal(key) or is_dir_marker(key):
            return {}
        if create_only and replacing is None:
            return {"IfNoneMatch": "*"}
        if not self.options.no_clobber:
            return {}
        return {"IfMatch": replacing} if replacing else {"IfNoneMatch": "*"}

    def copy_needs(self, src_key: str, dst_key: str,
                   metadata: Mapping[str, str] | None) -> frozenset[str]:
        """What copy() must know about the source: "class", "type", "metadata", "headers"."""
        needs = set()
        if self.options.storage_class is None and not is_dir_marker(dst_key):
            needs.add("class")  # directory markers stay in S3's default class
        mode = self.options.content_type
        if metadata is not None:  # keep the object's type unless the name's type changes
            if mode == "none" or (mode == "auto" and (
                    src_key == dst_key
                    or self.content_type(src_key) == self.content_type(dst_key))):
                needs.add("type")
        elif mode == "auto" and src_key != dst_key and \
                self.content_type(src_key) != self.content_type(dst_key):
            needs.add("metadata")
        if metadata is not None or "metadata" in needs:
            needs.add("headers")  # REPLACE: Cache-Control & co. are sent again
        return frozenset(needs)

    @staticmethod
    def satisfies(source: Source | None, needs: frozenset[str]) -> bool:
        if source is None:
            return not needs
        return (("class" not in needs or source.storage_class is not None)
                and ("type" not in needs or source.content_type is not None)
                and ("metadata" not in needs or source.metadata is not None)
                and ("headers" not in needs or source.headers is not None))

    def copy(self, src_key: str, dst_key: str, metadata: Mapping[str, str] | None,
             source: Source | None) -> dict[str, Any]:
        """CopyObject (besides Bucket, Key, CopySource and CopySourceIfMatch)."""
        o = self.options
        kw: dict[str, Any] = {}
        needs = self.copy_needs(src_key, dst_key, metadata)
        storage_class = self.storage_class(dst_key)
        if storage_class is None and source is not None and source.storage_class:
            storage_class = source.storage_class  # keep it: S3 would make it STANDARD
        if storage_class and storage_class != "STANDARD":
            kw["StorageClass"] = storage_class
        kw.update(self._encryption(dst_key))
        kw.update(self.copy_source_sse_c(src_key))
        if o.acl:
            kw["ACL"] = o.acl
        if "metadata" in needs and source is not None and source.metadata is not None:
            metadata = source.metadata  # renamed to another type: REPLACE, keeping the rest
        if metadata is not None:
            kw["Metadata"] = dict(metadata)
            kw["MetadataDirective"] = "REPLACE"
            if source is not None and source.headers:
                kw.update({k: v for k, v in source.headers.items() if k in SYSTEM_HEADERS})
            if "type" in needs:
                ctype = source.content_type if source is not None else None
                if ctype is None and o.content_type == "auto":
                    ctype = self.content_type(dst_key)
            else:
                ctype = self.content_type(dst_key)
            if ctype:
                kw["ContentType"] = ctype
        if src_key != dst_key:
            kw.update(self.condition(dst_key))
        return kw

    # what the store learns

    def learn_written(self, key: str, etag: str, kw: Mapping[str, Any],
                      metadata: Mapping[str, str] | None) -> None:
        """After a PutObject / CompleteMultipartUpload / CopyObject with these parameters."""
        self.known.learn(key, Source(
            etag, str(kw.get("StorageClass") or "STANDARD"), kw.get("ContentType"),
            {k.lower(): v for k, v in metadata.items()} if metadata is not None else None,
            system_headers(kw)))

    def learn_copied(self, key: str, etag: str, kw: Mapping[str, Any],
                     source: Source | None) -> None:
        """After a CopyObject: what it set, else (COPY directive) what the source had."""
        replaced = kw.get("MetadataDirective") == "REPLACE"
        kept = None if replaced else source
        self.known.learn(key, Source(
            etag, str(kw.get("StorageClass") or "STANDARD"),
            kw.get("ContentType") or (kept.content_type if kept else None),
            kw.get("Metadata") if replaced else (kept.metadata if kept else None),
            system_headers(kw) if replaced else (kept.headers if kept else None)))

    # multipart uploads: what CreateMultipartUpload set, learnt when Complete makes the object

    def started(self, upload_id: str, kw: Mapping[str, Any],
                metadata: Mapping[str, str]) -> None:
        self._uploads[upload_id] = (dict(kw), dict(metadata))

    def completed(self, key: str, upload_id: str, etag: str) -> None:
        kw, metadata = self._uploads.pop(upload_id, ({}, None))
        if metadata is not None:
            self.learn_written(key, etag, kw, metadata)

    def finished(self, upload_id: str) -> None:
        self._uploads.pop(upload_id, None)

    def learn_listed(self, key: str, etag: str, storage_class: str | None) -> None:
        if self.options.storage_class is None and etag:  # only copies without a class use it
            self.known.learn(key, Source(etag, storage_class or "STANDARD"))


__all__ = ["DEFAULT_TYPE", "DIRECTORY_TYPE", "SYSTEM_HEADERS", "Known", "ObjectArgs", "Source",
           "system_headers",
           "guess_content_type", "is_dir_marker", "is_internal", "no_clobber_errors",
           "warn_refused"]
