"""Configuration: frozen dataclasses built by cli.py and validated here, once.

One `MountConfig` per mount, composed of the parts each layer takes as is: `S3Config` (the
store's connection), `ObjectOptions` (what every object carries: store/objectargs.py),
`FsConfig` (the filesystem: fs.Filesystem), holding `UploadConfig` (upload.py) and
`ReadConfig` (prefetch.py). Also the parsers of the command line's strings into them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

MiB = 1024 * 1024
GiB = 1024 * MiB

# S3 rejects non-last parts smaller than 5 MiB (EntityTooSmall) and any part over 5 GiB.
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
# S3 part numbers run 1..10,000 (same source).
MAX_PARTS = 10_000
# 8 MiB: the size mountpoint-s3 and s3transfer use; 10,000 of them reach 78 GiB.
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_UPLOAD_CONCURRENCY = 4
# Bytes of parts queued or in flight across all open files. Each open file also holds one
# filling buffer of part_size; that one is not counted here, so a writer can always proceed.
DEFAULT_MEMORY_LIMIT = 256 * MiB


class ConfigError(ValueError):
    """Bad user input; the message is shown as is."""


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'8M', '8MiB', '8388608', '1g' -> bytes (binary units: K = 1024)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ConfigError(f"not a size: {text!r} (examples: 8M, 16MiB, 1G, 5242880)")
    value, unit = int(m.group(1)), m.group(2).lower()
    return value * {"": 1, "k": 1024, "m": MiB, "g": GiB, "t": 1024 * GiB}[unit]


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = ""  # "" or ends with "/"
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


@dataclass(frozen=True)
class UploadConfig:
    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = DEFAULT_UPLOAD_CONCURRENCY
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    # Some S3-compatible stores allow fewer parts (1,000 on some); the schedule adapts.
    max_parts: int = MAX_PARTS
    # What every part (and PutObject) carries for S3 to verify; see checksums.py.
    checksum: str = "crc64nvme"
    # Uploaded parts of a new file a write may still rewrite (their buffers kept in the pool of
    # free part buffers, upload.py); 0: as many as --upload-concurrency (no extra memory).
    rewrite_window: int = 0

    def __post_init__(self) -> None:
        if self.checksum not in ("crc64nvme", "crc32c", "md5", "off"):
            raise ConfigError(f"--checksum {self.checksum!r}: use crc64nvme, crc32c, md5 or off")
        if not 1 <= self.max_parts <= MAX_PARTS:
            raise ConfigError(f"--max-parts must be between 1 and {MAX_PARTS} (S3's limit)")
        if self.part_size < MIN_PART_SIZE:
            raise ConfigError(
                f"--part-size {self.part_size} is below 5 MiB ({MIN_PART_SIZE} bytes), "
                "S3's minimum size for every part but the last"
            )
        if self.part_size > MAX_PART_SIZE:
            raise ConfigError(f"--part-size {self.part_size} is above S3's 5 GiB part limit")
        if self.concurrency < 1:
            raise ConfigError("--upload-concurrency must be at least 1")
        if self.rewrite_window < 0:
            raise ConfigError("--rewrite-window must not be negative")
        if self.memory_limit < self.part_size:
            raise ConfigError("--memory-limit must hold at least one part (--part-size)")

    @property
    def max_parts_in_memory(self) -> int:
        return max(1, self.memory_limit // self.part_size)

    @property
    def held_parts(self) -> int:
        """Uploaded parts kept for rewrites (--rewrite-window, default the concurrency)."""
        return self.rewrite_window or self.concurrency

    @property
    def pool_buffers(self) -> int:
        """Free part buffers kept for reuse, and the most that sparing held parts may make:
        what one file streaming at full concurrency holds anyway (heldparts.py)."""
        return max(self.concurrency, self.held_parts) + 1


# Reads: what the constants mean and where they come from is in prefetch.py's docstring.
INITIAL_WINDOW = 1 * MiB + 128 * 1024
MAX_WINDOW = 64 * MiB
REQUEST_SIZE = 8 * MiB
KEEP_BEHIND = 1 * MiB
SEEK_TOLERANCE = 1 * MiB
# Ahead of the frontier (MAX_WINDOW), plus the chunk holding the frontier and the one kept behind
# it (each up to REQUEST_SIZE).
MAX_BUFFER = MAX_WINDOW + 2 * REQUEST_SIZE
DEFAULT_READ_MEMORY = 256 * MiB


@dataclass(frozen=True)
class ReadConfig:
    initial_window: int = INITIAL_WINDOW
    max_window: int = MAX_WINDOW
    request_size: int = REQUEST_SIZE
    keep_behind: int = KEEP_BEHIND
    seek_tolerance: int = SEEK_TOLERANCE
    max_buffer: int = MAX_BUFFER  # bytes one handle may hold or have in flight
    # Speculative (prefetched) bytes across every open handle: prefetch.ReadBudget's limit.
    memory_limit: int = DEFAULT_READ_MEMORY

    def __post_init__(self) -> None:
        if self.request_size < 1 or self.initial_window < 1:
            raise ConfigError("request_size and initial_window (--first-read) must be positive")
        if self.max_window < self.initial_window:
            raise ConfigError("max_window (--read-ahead) must be at least initial_window "
                              "(--first-read)")
        if self.keep_behind < 0 or self.seek_tolerance < 0:
            raise ConfigError("keep_behind and seek_tolerance must not be negative")
        # A read is served in pieces of at most request_size; the chunks it needs (the piece
        # plus at most one partly used chunk on each side) must always fit.
        if self.max_buffer < 3 * self.request_size:
            raise ConfigError("max_buffer must hold at least three requests")
        if self.memory_limit < 0:
            raise ConfigError("--read-memory must not be negative")

    @classmethod
    def tuned(cls, read_ahead: int = MAX_WINDOW, first_read: int | None = None,
              memory_limit: int = DEFAULT_READ_MEMORY) -> ReadConfig:
        """The command line's read options. A handle may hold its window plus the chunk at
        the frontier and the one behind it (as MAX_BUFFER); the first read is INITIAL_WINDOW,
        or the whole window if that is smaller. tuned() == ReadConfig()."""
        first = min(INITIAL_WINDOW, read_ahead) if first_read is None else first_read
        where = "--read-ahead" if first_read is None else "--first-read"
        if first < 1:
            raise ConfigError(f"{where} must be at least 1 byte (to fetch only what is read, "
                              "use --read-memory 0)")
        if read_ahead < first:
            raise ConfigError(f"--read-ahead {read_ahead} is below --first-read {first}: the "
                              "window starts at the first read's size and only grows")
        return cls(initial_window=first, max_window=read_ahead,
                   max_buffer=max(read_ahead, REQUEST_SIZE) + 2 * REQUEST_SIZE,
                   memory_limit=memory_limit)


# Storage classes S3 takes in x-amz-storage-class (PutObject, CreateMultipartUpload, CopyObject).
STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                   "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS",
                   "SNOW", "EXPRESS_ONEZONE")
# Classes whose objects must be restored (RestoreObject) before GET or a copy can read them.
ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read",
               "aws-exec-read", "bucket-owner-read", "bucket-owner-full-control",
               "log-delivery-write")
SSE_C_KEY_BYTES = 32  # AES-256
MAX_TAGS = 10  # S3's limit per object
_TAG_TEXT = re.compile(r"^[\w +\-=.:/@]*$")  # S3: letters, digits, spaces, + - = . _ : / @
_MIME_TYPE = re.compile(r"^[A-Za-z0-9][\w.+\-]*/[\w.+\-]+( *; *[\w.+\-]+=[\w.+\-\"]+)*$",
                        re.ASCII)


@dataclass(frozen=True)
class ObjectOptions:
    """What every object the mount writes carries (store/objectargs.py: how, per request)."""

    storage_class: str | None = None  # None: S3's default (STANDARD); copies keep the source's
    sse: str | None = None  # None: the bucket's default encryption
    sse_kms_key_id: str | None = None
    sse_c_key: bytes | None = field(default=None, repr=False)  # never shown, never logged
    no_clobber: bool = False
    content_type: str = "auto"  # "auto" (from the name), "none", or a MIME type for all
    tags: tuple[tuple[str, str], ...] = ()
    acl: str | None = None

    def __post_init__(self) -> None:
        if self.storage_class is not None and self.storage_class not in STORAGE_CLASSES:
            raise ConfigError(f"--storage-class {self.storage_class}: unknown storage class; "
                              f"use one of {', '.join(STORAGE_CLASSES)}")
        if self.sse is not None and self.sse not in SSE_MODES:
            raise ConfigError(f"--sse {self.sse}: use {', '.join(SSE_MODES)}")
        if self.sse_kms_key_id is not None and self.sse not in ("aws:kms", "aws:kms:dsse"):
            raise ConfigError("--sse-kms-key-id needs --sse aws:kms (or aws:kms:dsse)")
        if self.sse_c_key is not None:
            if self.sse is not None:
                raise ConfigError("--sse-c-key-file and --sse exclude each other: an object has "
                                  "one server-side encryption")
            if len(self.sse_c_key) != SSE_C_KEY_BYTES:
                raise ConfigError(f"the SSE-C key must be exactly {SSE_C_KEY_BYTES} bytes, not "
                                  f"{len(self.sse_c_key)}")
        if self.content_type not in ("auto", "none") and not _MIME_TYPE.match(self.content_type):
            raise ConfigError(f"--content-type {self.content_type!r}: use auto, none or a MIME "
                              "type such as application/octet-stream")
        if len(self.tags) > MAX_TAGS:
            raise ConfigError(f"--tag: at most {MAX_TAGS} tags per object (S3's limit)")
        seen: set[str] = set()
        for key, value in self.tags:
            where = f"--tag {key}={value}"
            if not 1 <= len(key) <= 128 or len(value) > 256:
                raise ConfigError(f"{where}: keys are 1-128 characters, values at most 256")
            if key.lower().startswith("aws:"):
                raise ConfigError(f"{where}: the aws: prefix is reserved for AWS")
            if not (_TAG_TEXT.match(key) and _TAG_TEXT.match(value)):
                raise ConfigError(f"{where}: tags may hold letters, digits, spaces and "
                                  "+ - = . _ : / @ only")
            if key in seen:
                raise ConfigError(f"{where}: tag key {key!r} given twice")
            seen.add(key)
        if self.acl is not None and self.acl not in CANNED_ACLS:
            raise ConfigError(f"--acl {self.acl}: unknown canned ACL; use one of "
                              f"{', '.join(CANNED_ACLS)}")


HARD_LINKS = ("refuse", "copy")


@dataclass(frozen=True)
class FsConfig:
    """What the filesystem (fs.Filesystem) takes."""

    prefix: str = ""  # S3Config.prefix
    upload: UploadConfig = field(default_factory=UploadConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    read_only: bool = False
    # How long attributes and listings learnt from S3 are trusted (the kernel caches them as
    # long); 0 asks S3 every time.
    metadata_ttl: float = 5.0
    # How long "no such name" is remembered; our own create/mkdir/rename forget it at once.
    negative_ttl: float = 1.0
    # Permission bits of objects and directories that carry no x-amz-meta-mode.
    file_mode: int = 0o644
    dir_mode: int = 0o755
    # --no-clobber: never replace an object (O_TRUNC on one and rename onto one: EEXIST);
    # ObjectOptions.no_clobber puts the condition on the requests.
    no_clobber: bool = False
    # --durable-close: every close() stores, also of rsync's temporary files (holds.py).
    durable_close: bool = False
    # --hard-links: "refuse" (link() fails with EOPNOTSUPP, as s3fs-fuse) or "copy" (link()
    # makes an independent server-side copy).
    hard_links: str = "refuse"

    def __post_init__(self) -> None:
        if self.hard_links not in HARD_LINKS:
            raise ValueError(f"--hard-links: {self.hard_links!r} is not one of "
                             f"{', '.join(HARD_LINKS)}")


@dataclass(frozen=True)
class MountConfig:
    """One mount: cli.parse_args builds it, mount.run hands each part to its layer as is."""

    s3: S3Config
    mountpoint: str
    fs: FsConfig = field(default_factory=FsConfig)
    # Storage class, encryption, no-clobber, content type, tags, ACL of the objects written.
    objects: ObjectOptions = field(default_factory=ObjectOptions)
    foreground: bool = False
    debug: bool = False
    log_file: str | None = None
    fuse_options: tuple[str, ...] = ()
    # Run as a systemd service: stay in the foreground, log to stderr with journald's <N>
    # priority prefixes (also chosen automatically under systemd: see logs.py).
    systemd: bool = False

    def __post_init__(self) -> None:
        # The store side and the filesystem each read their own copy of these two.
        if (self.fs.prefix, self.fs.no_clobber) != (self.s3.prefix, self.objects.no_clobber):
            raise ValueError("MountConfig: fs.prefix and fs.no_clobber must match s3.prefix "
                             "and objects.no_clobber")


def parse_seconds(text: str, what: str) -> float:
    """'5', '0.5', '0' -> seconds (a cache time: 0 or more, at most a day)."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what} {text}: not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise ConfigError(f"{what} {text}: must be between 0 and 86400 seconds")
    return value


def parse_mode(text: str) -> int:
    """'0640', '640', '0o640' -> 0o640: permission bits in octal, as chmod takes them."""
    digits = text.strip().lower().removeprefix("0o")
    if not re.fullmatch(r"[0-7]{1,4}", digits):
        raise ConfigError(f"not an octal mode: {text!r} (examples: 0644, 0750)")
    return int(digits, 8)


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,253}[a-z0-9]$")


def parse_bucket(spec: str) -> tuple[str, str]:
    """'bucket' or 'bucket:some/prefix' -> (bucket, 'some/prefix/')."""
    bucket, _, prefix = spec.partition(":")
    if not _BUCKET_RE.match(bucket):
        raise ConfigError(
            f"invalid bucket name {bucket!r}: 3-255 characters of a-z, 0-9, '.', '-', '_'"
        )
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


# -- objects: the command line's strings -> ObjectOptions -------------------------------------


def read_sse_c_key(path: str) -> bytes:
    """The SSE-C key: a file of exactly 32 raw bytes. The message never shows its content."""
    try:
        with open(path, "rb") as f:
            key = f.read(64)
    except OSError as exc:
        raise ConfigError(f"--sse-c-key-file {path}: cannot read it: "
                          f"{exc.strerror or exc}") from None
    if len(key) != SSE_C_KEY_BYTES:
        size = f"{len(key)} bytes" if len(key) < 64 else "64 bytes or more"
        hint = ("; it looks base64-encoded: store the decoded bytes (base64 -d)"
                if len(key.strip()) == 44 else "")
        raise ConfigError(f"--sse-c-key-file {path}: {size}; it must hold exactly "
                          f"{SSE_C_KEY_BYTES} raw bytes (e.g. head -c 32 /dev/urandom > key; "
                          f"chmod 600 key){hint}")
    return key


def parse_tag(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise ConfigError(f"--tag {text!r}: use KEY=VALUE (e.g. --tag backup=daily)")
    return key, value


def _pick(option: str, value: str, allowed: Sequence[str]) -> str:
    """Case-insensitive choice (storage classes are upper case, ACLs lower case)."""
    for name in allowed:
        if name.lower() == value.strip().lower():
            return name
    what = {"--storage-class": "unknown storage class", "--acl": "unknown canned ACL",
            "--sse": "unknown server-side encryption"}[option]
    raise ConfigError(f"{option} {value}: {what}; use one of {', '.join(allowed)}")


def parse_object_options(*, storage_class: str | None = None, sse: str | None = None,
                         sse_kms_key_id: str | None = None, sse_c_key_file: str | None = None,
                         no_clobber: bool = False, content_type: str | None = None,
                         tags: Sequence[str] = (), acl: str | None = None) -> ObjectOptions:
    """The command line's strings -> ObjectOptions, or ConfigError with a one-line message."""
    ctype = (content_type or "auto").strip()
    if ctype.lower() in ("auto", "none"):
        ctype = ctype.lower()
    return ObjectOptions(
        storage_class=_pick("--storage-class", storage_class, STORAGE_CLASSES)
        if storage_class else None,
        sse=_pick("--sse", sse, SSE_MODES) if sse else None,
        sse_kms_key_id=sse_kms_key_id or None,
        sse_c_key=read_sse_c_key(sse_c_key_file) if sse_c_key_file else None,
        no_clobber=no_clobber,
        content_type=ctype,
        tags=tuple(parse_tag(t) for t in tags),
        acl=_pick("--acl", acl, CANNED_ACLS) if acl else None,
    )


def describe_objects(options: ObjectOptions) -> str:
    """One line for the mount's log (never the SSE-C key)."""
    words = [f"storage class {options.storage_class or 'default'}"]
    if options.storage_class in ARCHIVE_CLASSES:
        words[0] += (" (archived at once: reading, renaming or changing attributes of a stored "
                     "file, and continuing it after a close(), need a restore first)")
    if options.sse:
        words.append(f"SSE {options.sse}" + (f" key {options.sse_kms_key_id}"
                                              if options.sse_kms_key_id else ""))
    if options.sse_c_key is not None:
        words.append("SSE-C")
    if options.no_clobber:
        words.append("no-clobber")
    words.append(f"content type {options.content_type}")
    if options.tags:
        words.append(f"{len(options.tags)} tag(s)")
    if options.acl:
        words.append(f"ACL {options.acl}")
    return ", ".join(words)
