"""The S3 server the tests run against, and real processes for tests: moto's S3 server and an
s3mpfs mount, each started by PID and always stopped by PID (and, for a mount, unmounted with
fusermount3 -u).

By default the session starts moto's server on 127.0.0.1. With S3MPFS_TEST_ENDPOINT set, the
tests run against that endpoint instead (Ceph's RADOS Gateway, AWS, any S3) and start no
server: see `S3Server.from_env` and README "Tests".
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from s3mpfs.status import find_mount

# What a server may lack. Tests say what they need with @pytest.mark.needs("name") (skipped,
# with this text as the reason, on a server that lacks it) or ask `server.has("name")`.
CAPABILITIES = {
    "stored_checksums": "stores the CRC32C/CRC64NVME checksums a client sends and returns them "
                        "(HeadObject ChecksumMode=ENABLED, GetObjectAttributes)",
    "copy_source_if_match": "honours x-amz-copy-source-if-match on CopyObject (412 when the "
                            "source changed)",
    "part_copy_if_match": "honours x-amz-copy-source-if-match on UploadPartCopy (412 when the "
                          "source changed)",
    "conditional_complete": "honours If-None-Match/If-Match on CompleteMultipartUpload",
    "complete_if_none_match": "honours If-None-Match: * on CompleteMultipartUpload (412 when "
                              "the key exists)",
    "trailing_checksums": "accepts request bodies with trailing checksums (aws-chunked "
                          "STREAMING-UNSIGNED-PAYLOAD-TRAILER, boto3's default since 1.36)",
    "any_host_header": "answers requests whose Host header names another address, so the "
                       "fault-injecting proxy (tests/helpers/s3proxy.py) can sit in front of it",
    "part_number_reads": "answers HeadObject/GetObject with ?partNumber=N with that part of a "
                         "multipart object",
    "any_credentials": "accepts any access key and secret (so tests can make up their own)",
    "put_if_match": "honours If-Match on PutObject with the ETag as S3 sends it, quoted (412 "
                    "only when the object changed)",
    "storage_classes": "accepts AWS's storage classes (STANDARD_IA, GLACIER, DEEP_ARCHIVE, ...) "
                       "and keeps archived objects unreadable until restored",
    "sse": "accepts server-side encryption (SSE-S3 AES256, SSE-KMS aws:kms)",
    "sse_c": "accepts SSE-C keys (customer-provided) on this endpoint",
    "multipart_tagging": "keeps the x-amz-tagging of CreateMultipartUpload on the object",
    "max_uploads": "honours max-uploads on ListMultipartUploads (a page of at most that many "
                   "uploads, in key order)",
}

# What each kind of server lacks (measured: moto 5.2, Ceph 16.2; see
# ../shared/reference/test-servers.md and ../shared/tools/ceph-rgw/README.md).
LACKS: dict[str, frozenset[str]] = {
    # moto checks only x-amz-copy-source-if-none-match, and If-None-Match but not If-Match on
    # CompleteMultipartUpload.
    "moto": frozenset({"copy_source_if_match", "part_copy_if_match", "conditional_complete",
                       "max_uploads"}),
    "ceph": frozenset({"stored_checksums", "conditional_complete", "complete_if_none_match",
                       "trailing_checksums", "part_copy_if_match", "part_number_reads",
                       "any_credentials", "put_if_match", "storage_classes", "sse", "sse_c",
                       "multipart_tagging"}),
    # AWS routes requests by their Host header: no local proxy in front of it.
    "aws": frozenset({"any_host_header", "any_credentials"}),
    # Any other S3: assumed to be like AWS; S3MPFS_TEST_LACKS adds what it lacks.
    "s3": frozenset({"any_credentials"}),
}
# How a kind of server falls short, where that says more than the capability.
NOTES = {
    # CopyObject: Ceph 16 reads only the legacy x-amz-copy-if-match, which BotoStore sends too.
    ("ceph", "part_copy_if_match"): "Ceph 16 ignores every copy condition on UploadPartCopy",
    ("ceph", "stored_checksums"): "Ceph 16 accepts CRC headers and ignores them",
    ("ceph", "part_number_reads"): "Ceph 16 ignores partNumber and returns the whole object",
    ("ceph", "put_if_match"): "Ceph 16 compares the header with the unquoted ETag: a correct "
                              "quoted ETag gets 412",
    ("ceph", "storage_classes"): "a default Ceph zone knows only STANDARD: InvalidArgument",
    ("ceph", "sse"): "Ceph 16 without a KMS and over plain HTTP answers InvalidRequest",
    ("ceph", "sse_c"): "Ceph refuses SSE-C over plain HTTP (rgw_crypt_require_ssl)",
    ("ceph", "multipart_tagging"): "Ceph 16 drops it: the object has no tags",
    ("moto", "copy_source_if_match"): "moto 5.2 checks only x-amz-copy-source-if-none-match",
    ("moto", "part_copy_if_match"): "moto 5.2 checks only x-amz-copy-source-if-none-match",
    ("moto", "max_uploads"): "moto 5.2 ignores max-uploads and lists uploads in creation order",
}
KIND_NAMES = {"moto": "moto", "ceph": "Ceph RADOS Gateway", "aws": "AWS S3", "s3": "S3 server"}

MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

ENV_HELP = (
    "S3MPFS_TEST_ENDPOINT=URL S3MPFS_TEST_ACCESS_KEY=... S3MPFS_TEST_SECRET_KEY=... "
    "[S3MPFS_TEST_SESSION_TOKEN=...] [S3MPFS_TEST_REGION=us-east-1] "
    "[S3MPFS_TEST_SERVER=ceph|aws|moto|s3] [S3MPFS_TEST_LACKS=cap,cap] "
    "[S3MPFS_TEST_BUCKET_PREFIX=s3mpfs-test-]"
)


class ConfigError(Exception):
    """The S3MPFS_TEST_* environment is unusable (pytest reports it before running tests)."""


class S3Server:
    """An S3 endpoint the tests use: `.url`, `.kind` ("moto", "ceph", "aws", "s3"), the
    credentials (as environment variables) and what it lacks. This one is external: it was
    running before the tests and is left running; `start`/`stop` do nothing, and buckets the
    tests create on it are deleted at teardown (`Buckets`)."""

    external = True

    def __init__(self, url: str, kind: str, credentials: Mapping[str, str],
                 lacks: frozenset[str] = frozenset()) -> None:
        self.url, self.kind = url, kind
        self.credentials = dict(credentials)
        self.lacks = LACKS[kind] | lacks

    @property
    def region(self) -> str:
        return self.credentials["AWS_DEFAULT_REGION"]

    @property
    def access_key(self) -> str:
        return self.credentials["AWS_ACCESS_KEY_ID"]

    @property
    def secret_key(self) -> str:
        return self.credentials["AWS_SECRET_ACCESS_KEY"]

    def has(self, capability: str) -> bool:
        if capability not in CAPABILITIES:
            raise KeyError(f"unknown server capability {capability!r}: one of "
                           f"{', '.join(sorted(CAPABILITIES))}")
        return capability not in self.lacks

    def why_not(self, capability: str) -> str:
        """The skip reason for a test that needs `capability` here."""
        note = NOTES.get((self.kind, capability))
        return (f"{KIND_NAMES[self.kind]} ({self.kind}, {self.url}) lacks {capability} "
                f"(a server that {CAPABILITIES[capability]})" + (f": {note}" if note else ""))

    def describe(self) -> str:
        where = "external, left running" if self.external else "started for this session"
        lacks = ", ".join(sorted(self.lacks)) or "nothing"
        return (f"{KIND_NAMES[self.kind]} ({self.kind}) at {self.url} ({where}); "
                f"region {self.region}; lacks: {lacks}")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Server | None:
        """The server named by S3MPFS_TEST_ENDPOINT (and its keys), or None: moto then."""
        url = env.get("S3MPFS_TEST_ENDPOINT", "").strip()
        if not url:
            stray = sorted(k for k in env if k.startswith("S3MPFS_TEST_") and env[k]
                           and k != "S3MPFS_TEST_BUCKET_PREFIX")
            if stray:
                raise ConfigError(f"{', '.join(stray)} set without S3MPFS_TEST_ENDPOINT; "
                                  f"to test against an S3 server set {ENV_HELP}")
            return None
        if not re.match(r"https?://[^/]+/?$", url):
            raise ConfigError(f"S3MPFS_TEST_ENDPOINT={url!r}: expected http(s)://HOST[:PORT]")
        url = url.rstrip("/")
        missing = [k for k in ("S3MPFS_TEST_ACCESS_KEY", "S3MPFS_TEST_SECRET_KEY")
                   if not env.get(k)]
        if missing:
            raise ConfigError(f"S3MPFS_TEST_ENDPOINT is set but {' and '.join(missing)} "
                              f"not: {ENV_HELP}")
        kind = env.get("S3MPFS_TEST_SERVER") or ("aws" if "amazonaws.com" in url else "s3")
        if kind not in LACKS:
            raise ConfigError(f"S3MPFS_TEST_SERVER={kind!r}: one of {', '.join(LACKS)}")
        lacks = frozenset(c.strip() for c in env.get("S3MPFS_TEST_LACKS", "").split(",")
                          if c.strip())
        unknown = lacks - set(CAPABILITIES)
        if unknown:
            raise ConfigError(f"S3MPFS_TEST_LACKS: unknown {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(CAPABILITIES))}")
        credentials = {
            "AWS_ACCESS_KEY_ID": env["S3MPFS_TEST_ACCESS_KEY"],
            "AWS_SECRET_ACCESS_KEY": env["S3MPFS_TEST_SECRET_KEY"],
            "AWS_DEFAULT_REGION": env.get("S3MPFS_TEST_REGION") or "us-east-1",
        }
        if env.get("S3MPFS_TEST_SESSION_TOKEN"):
            credentials["AWS_SESSION_TOKEN"] = env["S3MPFS_TEST_SESSION_TOKEN"]
        return cls(url, kind, credentials, lacks)


# The server of this run, from the environment (None: a moto server the session starts), and
# the credentials every client uses: the `s3` fixture, BotoStore in the test process (through
# os.environ, set by tests/conftest.py) and every s3mpfs subprocess (Mount, the CLI tests).
TARGET = S3Server.from_env(os.environ)
CREDENTIALS: dict[str, str] = dict(TARGET.credentials if TARGET else MOTO_CREDENTIALS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll until predicate() is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class MotoServer(S3Server):
    """moto's server on 127.0.0.1 and a free port, started and stopped by the tests."""

    external = False

    def __init__(self) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", "moto", MOTO_CREDENTIALS)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **MOTO_CREDENTIALS},
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            return _answers(self.url)

        wait_for(up, 30, "moto server")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def fuse_unavailable() -> str | None:
    """Why FUSE tests cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt-get install fuse3)"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return f"/dev/fuse cannot be opened: {exc}"
    return None


def mounted_at(path: Path) -> bool:
    """Whether the kernel has a mount at `path`, also a dead FUSE mount (its daemon killed:
    stat gives ENOTCONN, so os.path.ismount says False and the mount would leak)."""
    return find_mount(str(path)) is not None


class Mount:
    """`python -m s3mpfs BUCKET MNT -f ...` as a subprocess, with its log in a file."""

    def __init__(
        self,
        bucket: str,
        mountpoint: Path,
        endpoint: str,
        log_path: Path,
        extra: list[str] | None = None,
    ) -> None:
        self.bucket, self.mountpoint, self.endpoint = bucket, mountpoint, endpoint
        self.log_path = log_path
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "s3mpfs",
            self.bucket,
            str(self.mountpoint),
            "--endpoint-url",
            self.endpoint,
            "--foreground",
            "--log-file",
            str(self.log_path),
            *self.extra,
        ]

    def start(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **CREDENTIALS},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

        def mounted() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise RuntimeError(
                    f"s3mpfs exited with {self.proc.returncode}: {err.decode()}{self.log()}"
                )
            return os.path.ismount(self.mountpoint)

        wait_for(mounted, 30, f"mount at {self.mountpoint}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def remount(self) -> None:
        """Unmount (the daemon must exit 0, with no traceback in its log) and mount again: a
        fresh daemon knows only what S3 holds."""
        code = self.unmount()
        assert code == 0, f"s3mpfs exited with {code}:\n{self.log()}"
        assert "Traceback" not in self.log(), self.log()
        self.start()

    def unmount(self, timeout: float = 60) -> int:
        """fusermount3 -u, then wait for the daemon to exit; returns its exit code."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if mounted_at(self.mountpoint):
            subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], check=False, capture_output=True
            )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if mounted_at(self.mountpoint):  # daemon died without unmounting
            subprocess.run(
                ["fusermount3", "-u", "-z", str(self.mountpoint)], check=False, capture_output=True
            )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
        return proc.returncode


@contextlib.contextmanager
def mounted(*args: object, **kwargs: object) -> Iterator[Mount]:
    m = Mount(*args, **kwargs)  # type: ignore[arg-type]
    try:
        m.start()
        yield m
    finally:
        m.unmount()


# -- clients and buckets -------------------------------------------------------------------


def make_s3(endpoint: str, server: S3Server | None = None) -> Any:
    """A boto3 client for `endpoint` with the credentials of `server` (default: this run's)."""
    import boto3
    import botocore.config

    server = server or TARGET
    creds = server.credentials if server else MOTO_CREDENTIALS
    lacks = server.lacks if server else LACKS["moto"]
    # Ceph 16 rejects bodies with trailing checksums (boto3's default since 1.36).
    checksums: Literal["when_required", "when_supported"] = (
        "when_required" if "trailing_checksums" in lacks else "when_supported")
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=creds["AWS_DEFAULT_REGION"],
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
        config=botocore.config.Config(s3={"addressing_style": "path"},
                                      retries={"mode": "standard", "max_attempts": 3},
                                      request_checksum_calculation=checksums,
                                      response_checksum_validation=checksums),
    )


BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


def bucket_prefix(env: Mapping[str, str]) -> str:
    prefix = env.get("S3MPFS_TEST_BUCKET_PREFIX") or "s3mpfs-test-"
    if not BUCKET_NAME.fullmatch(prefix) or len(prefix) > 40:
        raise ConfigError(f"S3MPFS_TEST_BUCKET_PREFIX={prefix!r}: up to 40 of a-z, 0-9 and '-', "
                          "starting with a letter or digit (bucket names are built from it)")
    return prefix


class Buckets:
    """Creates buckets named PREFIX + a random id of this run + a counter, so runs sharing a
    server (or an AWS account) never meet. On an external server `delete` aborts the bucket's
    multipart uploads, deletes its objects and the bucket; moto's buckets go with moto. Only
    names this object created are ever deleted."""

    def __init__(self, s3: Any, server: S3Server, prefix: str) -> None:
        self.s3, self.server, self.prefix = s3, server, prefix
        self.run_id = secrets.token_hex(4)
        self.count = 0
        self.created: set[str] = set()

    def create(self, tag: str = "") -> str:
        self.count += 1
        name = f"{self.prefix}{self.run_id}-{tag + '-' if tag else ''}{self.count}"
        assert BUCKET_NAME.fullmatch(name) and len(name) <= 63, name
        kw: dict[str, Any] = {}
        if self.server.region != "us-east-1":  # S3's rule: every other region is named
            kw["CreateBucketConfiguration"] = {"LocationConstraint": self.server.region}
        self.s3.create_bucket(Bucket=name, **kw)
        self.created.add(name)
        return name

    def delete(self, name: str) -> None:
        """Empty and delete `name` (external servers only; a no-op on moto)."""
        if name not in self.created:
            raise ValueError(f"refusing to delete bucket {name!r}: this run did not create it")
        if not self.server.external:
            return
        from botocore.exceptions import ClientError

        for attempt in range(5):
            try:
                self._empty(name)
                self.s3.delete_bucket(Bucket=name)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "NoSuchBucket":
                    break
                # BucketNotEmpty: something (a straggling daemon) wrote after the listing.
                if attempt == 4 or code != "BucketNotEmpty":
                    raise
                time.sleep(0.5 * (attempt + 1))
            else:
                break
        self.created.discard(name)

    def _empty(self, name: str) -> None:
        pages = self.s3.get_paginator("list_multipart_uploads").paginate(Bucket=name)
        for page in pages:
            for up in page.get("Uploads", []):
                self.s3.abort_multipart_upload(Bucket=name, Key=up["Key"],
                                               UploadId=up["UploadId"])
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                r = self.s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
                if r.get("Errors"):
                    raise RuntimeError(f"deleting objects of bucket {name}: {r['Errors'][:3]}")

    @contextlib.contextmanager
    def temporary(self, tag: str = "") -> Iterator[str]:
        name = self.create(tag)
        try:
            yield name
        finally:
            self.delete(name)

    def leftovers(self) -> list[str]:
        """Buckets this run created on an external server and could not delete."""
        return sorted(self.created) if self.server.external else []
