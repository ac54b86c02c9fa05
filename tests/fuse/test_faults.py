"""Never lose data quietly: the real mount against moto through the fault-injecting proxy.

Every file written here ends in exactly one of two ways, checked through boto3 straight
against moto (not through the proxy):

    stored          close() returned 0 and the object is byte for byte what was written
    failed loudly   close() (or a write) failed (EIO; EACCES when S3 refused) and S3 holds no
                    object under the key, or the previous object intact when the file
                    replaced one

Anything else is a *silent loss* (close() == 0 but the object is missing or different) or a
*partial object* (close() failed but the key holds something new). The module keeps a tally
(faults fired, as the proxy counts them; outcomes) that is printed at the end of the run and
must show zero of both.

botocore retries for s3mpfs (store/boto.py: retry mode "standard", 5 attempts): transient
faults (the first N requests of an operation) must be ridden out with close() == 0; a
persistent fault (times=-1) must fail close() with EIO, abort the multipart upload, and log
the key and the cause.

Tests that should recover share one long-lived mount, as a real mount sees fault after fault.
Tests whose faults are persistent get a mount of their own: each burns through botocore's
retry quota (see test_retry_quota_*), which would otherwise leak into the next test.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from s3mpfs.store.markers import MARKER_PREFIX, marker_key
from tests.conftest import running_proxy
from tests.fuse.conftest import SUMMARY_LINES
from tests.helpers.s3proxy import S3Proxy
from tests.helpers.servers import CREDENTIALS, Buckets, MotoServer, Mount, fuse_unavailable

MiB = 1024 * 1024
SMALL = 100
LARGE = 20 * MiB  # 8 + 8 + 4 MiB parts

pytestmark = pytest.mark.fuse


# -- the tally -----------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool  # every write() and close() returned without error
    errno: int | None
    seconds: float
    detail: str = ""


@dataclass
class Tally:
    faults: Counter[str] = field(default_factory=Counter)
    stored: int = 0
    failed_loudly: int = 0
    silent_losses: int = 0
    partial_objects: int = 0
    left_behind: int = 0  # uploads whose abort failed too: listed by `s3mpfs uploads`
    problems: list[str] = field(default_factory=list)

    def count_faults(self, rules: list[dict[str, Any]]) -> None:
        for rule in rules:
            kind = f"HTTP {rule['status']}" if rule["action"] == "status" else rule["action"]
            self.faults[kind] += int(rule["fired"])

    def judge(self, s3: Any, bucket: str, key: str, data: bytes, out: Outcome,
              old: bytes | None = None) -> str:
        body = object_or_none(s3, bucket, key)
        if out.ok:
            if body == data:
                self.stored += 1
                return "stored"
            self.silent_losses += 1
            self.problems.append(f"SILENT LOSS {key}: close() == 0 but S3 holds "
                                 f"{'nothing' if body is None else f'{len(body)} other bytes'}")
            return "silent loss"
        if body == old:
            self.failed_loudly += 1
            return "failed loudly"
        self.partial_objects += 1
        self.problems.append(f"PARTIAL OBJECT {key}: close() failed but S3 holds "
                             f"{len(body or b'')} new bytes")
        return "partial object"

    def summary(self) -> list[str]:
        fired = sum(self.faults.values())
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.faults.items()))
        total = self.stored + self.failed_loudly + self.silent_losses + self.partial_objects
        return [
            f"faults injected (fired, per the proxy): {fired} ({kinds})",
            f"files written: {total}; stored byte-exact with close() == 0: {self.stored}; "
            f"failed loudly (EIO or EACCES, no object or the old one intact): "
            f"{self.failed_loudly}",
            f"silent losses: {self.silent_losses}; partial objects: {self.partial_objects}; "
            f"uploads left behind by a failing abort (and listed by s3mpfs uploads): "
            f"{self.left_behind}",
            *self.problems,
        ]


# -- helpers -------------------------------------------------------------------------------


def object_or_none(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def part_count(s3: Any, bucket: str, key: str) -> int:
    """Parts of a stored object from its ETag ("...-3"); 0 for a single PUT."""
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    return int(etag.rsplit("-", 1)[1]) if "-" in etag else 0


def uploads_of(s3: Any, bucket: str, key: str) -> list[str]:
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    return [u["UploadId"] for u in uploads if u["Key"] == key]


def markers_of(s3: Any, bucket: str, key: str) -> list[str]:
    """Marker objects (store/markers.py) that name `key`."""
    found = []
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=MARKER_PREFIX).get("Contents", []):
        body = object_or_none(s3, bucket, obj["Key"])
        if body and json.loads(body).get("key") == key:
            found.append(obj["Key"])
    return found


def assert_nothing_left(s3: Any, bucket: str, key: str) -> None:
    """No multipart upload (completed or aborted) and no marker remain for key."""
    assert uploads_of(s3, bucket, key) == []
    assert markers_of(s3, bucket, key) == []


def write_file(path: Path, data: bytes, *, via: str, scratch: Path) -> Outcome:
    """Write `data` to `path` with cp (from a local copy) or Python file I/O."""
    t0 = time.monotonic()
    if via == "cp":
        src = scratch / f"src-{path.name}"
        src.write_bytes(data)
        r = subprocess.run(["cp", str(src), str(path)], capture_output=True, text=True,
                           timeout=180)
        src.unlink()
        err = errno.EIO if "Input/output error" in r.stderr else (None if r.returncode == 0
                                                                   else -1)
        return Outcome(r.returncode == 0, err, time.monotonic() - t0, r.stderr.strip())
    try:
        with open(path, "wb", buffering=0) as f:
            for pos in range(0, len(data), MiB):
                f.write(data[pos:pos + MiB])
    except OSError as exc:
        return Outcome(False, exc.errno, time.monotonic() - t0, str(exc))
    return Outcome(True, None, time.monotonic() - t0)


def log_since(mount: Mount, offset: int) -> str:
    return mount.log()[offset:]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " ERROR " in line]


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    t = Tally()
    yield t
    SUMMARY_LINES.extend(t.summary())
    assert t.silent_losses == 0 and t.partial_objects == 0, "\n".join(t.summary())


@pytest.fixture(scope="module")
def fault_proxy(moto_server: MotoServer) -> Iterator[S3Proxy]:
    with running_proxy(moto_server) as p:
        yield p


@pytest.fixture(scope="module")
def fbucket(buckets: Buckets) -> Iterator[str]:
    with buckets.temporary("faults") as name:  # deleted afterwards on an external server
        yield name


def _stop(m: Mount) -> None:
    m.unmount()
    assert "Traceback" not in m.log(), m.log()


@pytest.fixture(scope="module")
def shared_mount(fbucket: str, fault_proxy: S3Proxy,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One long-lived mount for the tests whose faults must be ridden out."""
    reason = fuse_unavailable()
    if reason:
        pytest.skip(f"FUSE unavailable: {reason}")
    d = tmp_path_factory.mktemp("shared")
    m = Mount(fbucket, d / "mnt", fault_proxy.url, d / "s3mpfs.log")
    try:
        m.start()
        yield m
    finally:
        _stop(m)


@pytest.fixture
def new_mount(fuse: None, fbucket: str, fault_proxy: S3Proxy,
              tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """Mounts of their own (fresh botocore client and retry quota); unmounted afterwards."""
    mounts: list[Mount] = []

    def make(spec: str | None = None) -> Mount:
        d = tmp_path / f"m{len(mounts)}"
        m = Mount(spec or fbucket, d / "mnt", fault_proxy.url, d / "s3mpfs.log")
        mounts.append(m)
        m.start()
        return m

    try:
        yield make
    finally:
        for m in mounts:
            _stop(m)


@pytest.fixture(autouse=True)
def faults(fault_proxy: S3Proxy, tally: Tally) -> Iterator[S3Proxy]:
    """The proxy with no rules and zeroed counts; afterwards the fired faults are tallied."""
    fault_proxy.reset()
    yield fault_proxy
    tally.count_faults(fault_proxy.faults())
    fault_proxy.reset()


# -- transient faults: botocore's retries must ride them out --------------------------------

EXPECTED_REQUESTS: dict[str, Callable[[int], int]] = {
    "PutObject": lambda parts: 1,
    "UploadPart": lambda parts: parts,
    "CreateMultipartUpload": lambda parts: 1,
    "CompleteMultipartUpload": lambda parts: 1,
}


@pytest.mark.parametrize("op", ["PutObject", "UploadPart", "CreateMultipartUpload",
                                "CompleteMultipartUpload"])
def test_transient_500_and_503_are_retried(op: str, shared_mount: Mount, faults: S3Proxy,
                                           s3: Any, fbucket: str, tally: Tally,
                                           tmp_path: Path) -> None:
    """The first request of `op` gets 500 InternalError, the second 503 SlowDown."""
    faults.add_fault(op, "status", status=500, times=1)
    faults.add_fault(op, "status", status=503, nth=2, times=1)
    size, via = (SMALL, "python") if op == "PutObject" else (LARGE, "cp")
    key = f"transient-{op}.bin"
    data = os.urandom(size)
    out = write_file(shared_mount.mountpoint / key, data, via=via, scratch=tmp_path)
    assert tally.judge(s3, fbucket, key, data, out) == "stored", out
    assert [r["fired"] for r in faults.faults()] == [1, 1]
    parts = part_count(s3, fbucket, key)
    assert (parts > 1) == (size == LARGE)
    assert faults.counts()[op] == EXPECTED_REQUESTS[op](parts) + 2  # two retries, no more
    assert_nothing_left(s3, fbucket, key)


@pytest.mark.parametrize(("op", "size"), [("PutObject", SMALL), ("UploadPart", LARGE),
                                          ("CreateMultipartUpload", LARGE),
                                          ("CompleteMultipartUpload", LARGE)])
def test_connection_resets_are_retried(op: str, size: int, shared_mount: Mount,
                                       faults: S3Proxy, s3: Any, fbucket: str, tally: Tally,
                                       tmp_path: Path) -> None:
    faults.add_fault(op, "reset", times=2)
    key = f"reset-{op}.bin"
    data = os.urandom(size)
    out = write_file(shared_mount.mountpoint / key, data, via="python", scratch=tmp_path)
    assert tally.judge(s3, fbucket, key, data, out) == "stored", out
    assert faults.faults()[0]["fired"] == 2
    assert faults.counts()[op] == EXPECTED_REQUESTS[op](part_count(s3, fbucket, key)) + 2
    assert_nothing_left(s3, fbucket, key)


def test_dropped_connection_is_retried(shared_mount: Mount, faults: S3Proxy, s3: Any,
                                       fbucket: str, tally: Tally, tmp_path: Path) -> None:
    """The proxy reads a part, waits, and closes the connection without answering."""
    faults.add_fault("UploadPart", "drop", seconds=0.5, times=1)
    key = "drop-UploadPart.bin"
    data = os.urandom(LARGE)
    out = write_file(shared_mount.mountpoint / key, data, via="cp", scratch=tmp_path)
    assert tally.judge(s3, fbucket, key, data, out) == "stored", out
    assert faults.faults()[0]["fired"] == 1
    assert faults.counts()["UploadPart"] == part_count(s3, fbucket, key) + 1
    assert_nothing_left(s3, fbucket, key)


@pytest.mark.parametrize(("op", "size"), [("PutObject", SMALL), ("UploadPart", LARGE),
                                          ("CompleteMultipartUpload", LARGE)])
def test_stall_shorter_than_the_read_timeout_is_waited_out(
        op: str, size: int, shared_mount: Mount, faults: S3Proxy, s3: Any, fbucket: str,
        tally: Tally, tmp_path: Path) -> None:
    """A 2 s stall (read timeout: 60 s) delays the request; nothing is retried or lost."""
    faults.add_fault(op, "stall", seconds=2.0, times=1)
    key = f"stall-{op}.bin"
    data = os.urandom(size)
    out = write_file(shared_mount.mountpoint / key, data, via="cp", scratch=tmp_path)
    assert tally.judge(s3, fbucket, key, data, out) == "stored", out
    assert faults.faults()[0]["fired"] == 1
    assert out.seconds >= 2.0  # close() waited for the stalled request
    assert faults.counts()[op] == EXPECTED_REQUESTS[op](part_count(s3, fbucket, key))
    assert_nothing_left(s3, fbucket, key)


def _write_many(mount: Mount, files: list[tuple[str, bytes, str]], scratch: Path,
                parallel: int = 1) -> dict[str, Outcome]:
    with ThreadPoolExecutor(parallel) as pool:
        futures = {key: pool.submit(write_file, mount.mountpoint / key, data, via=via,
                                    scratch=scratch) for key, data, via in files}
        return {key: f.result() for key, f in futures.items()}


def test_part_failure_after_a_childs_close_leaves_no_partial_object(
        shared_mount: Mount, faults: S3Proxy, s3: Any, fbucket: str, tally: Tally) -> None:
    """The writer spawns a process after 2 MiB (its close of the inherited descriptor is a
    FLUSH), then every part fails: close() fails and S3 holds nothing, not the first 2 MiB
    (the flush did not commit: the opener still held the file)."""
    key = "forked-then-failed.bin"
    data = os.urandom(LARGE)
    try:
        with open(shared_mount.mountpoint / key, "wb", buffering=0) as f:
            f.write(data[:2 * MiB])
            subprocess.run(["true"], check=True)
            faults.add_fault("UploadPart", "status", status=500, times=-1)
            for pos in range(2 * MiB, LARGE, MiB):
                f.write(data[pos:pos + MiB])
        out = Outcome(True, None, 0.0)
    except OSError as exc:
        out = Outcome(False, exc.errno, 0.0, str(exc))
    assert tally.judge(s3, fbucket, key, data, out) == "failed loudly", out
    assert out.errno == errno.EIO
    assert_nothing_left(s3, fbucket, key)


def test_30_percent_of_upload_parts_fail(shared_mount: Mount, faults: S3Proxy, s3: Any,
                                         fbucket: str, tally: Tally, tmp_path: Path) -> None:
    faults.add_fault("UploadPart", "status", status=500, fraction=0.3, seed=1234)
    files = [(f"fraction-parts-{i}.bin", os.urandom(LARGE), "cp" if i % 2 else "python")
             for i in range(4)]
    offset = len(shared_mount.log())
    outcomes = _write_many(shared_mount, files, tmp_path, parallel=2)
    verdicts = {key: tally.judge(s3, fbucket, key, data, outcomes[key])
                for key, data, _ in files}
    assert set(verdicts.values()) <= {"stored", "failed loudly"}, verdicts
    assert faults.faults()[0]["fired"] >= 3
    assert "stored" in verdicts.values()
    log = log_since(shared_mount, offset)
    for key, verdict in verdicts.items():
        assert uploads_of(s3, fbucket, key) == []  # completed or aborted, never left behind
        if verdict == "failed loudly":
            assert outcomes[key].errno == errno.EIO
            assert any(key in line for line in error_lines(log)), log


def test_20_percent_of_all_requests_throttled(shared_mount: Mount, faults: S3Proxy, s3: Any,
                                              fbucket: str, tally: Tally,
                                              tmp_path: Path) -> None:
    """Every kind of request (lookups, PUTs, parts, markers...) may get 503 SlowDown."""
    s3.put_object(Bucket=fbucket, Key="fraction-all-old.bin", Body=b"old contents")
    faults.add_fault("*", "status", status=503, fraction=0.2, seed=99)
    files = [(f"fraction-all-{i}.txt", os.urandom(SMALL), "python") for i in range(4)]
    files += [(f"fraction-all-{i}.bin", os.urandom(LARGE), "cp") for i in range(2)]
    files += [("fraction-all-old.bin", os.urandom(LARGE), "python")]
    outcomes = _write_many(shared_mount, files, tmp_path, parallel=3)
    verdicts = {key: tally.judge(s3, fbucket, key, data, outcomes[key],
                                 old=b"old contents" if "old" in key else None)
                for key, data, _ in files}
    assert set(verdicts.values()) <= {"stored", "failed loudly"}, verdicts
    rule = faults.faults()[0]
    # every kind of request passed the rule: the 3 large files alone make 21 (create, marker
    # PUT, 3 parts, complete, marker DELETE), the small ones a PUT each plus lookups
    assert rule["fired"] >= 2 and rule["seen"] >= 25
    assert "stored" in verdicts.values()
    for key, _, _ in files:
        assert uploads_of(s3, fbucket, key) == []


# -- persistent faults: close() fails with EIO, nothing partial, nothing left behind --------


def test_persistent_put_failure_keeps_the_old_object_and_spares_multipart_files(
        new_mount: Callable[..., Mount], faults: S3Proxy, s3: Any, fbucket: str,
        tally: Tally, tmp_path: Path) -> None:
    """Every PutObject fails: a small file (one PUT) fails loudly and the object it would
    replace is intact; a large file still completes, as only its marker (a PUT) fails."""
    m = new_mount()
    old = os.urandom(5000)
    s3.put_object(Bucket=fbucket, Key="persist-put-small.bin", Body=old)
    faults.add_fault("PutObject", "status", status=500, times=-1)
    small, large = os.urandom(SMALL), os.urandom(LARGE)
    outcomes = _write_many(m, [("persist-put-small.bin", small, "cp"),
                               ("persist-put-large.bin", large, "python")], tmp_path, 2)
    out = outcomes["persist-put-small.bin"]
    assert tally.judge(s3, fbucket, "persist-put-small.bin", small, out, old=old) == \
        "failed loudly", out
    assert out.errno == errno.EIO and "Input/output error" in out.detail
    big = outcomes["persist-put-large.bin"]
    assert tally.judge(s3, fbucket, "persist-put-large.bin", large, big) == "stored", big
    assert faults.counts()["PutObject"] == 10  # 5 attempts each: the small file, the marker
    assert "could not write the marker" in m.log()
    assert_nothing_left(s3, fbucket, "persist-put-large.bin")


def test_persistent_part_failure_is_loud_logged_and_aborted(
        new_mount: Callable[..., Mount], faults: S3Proxy, s3: Any, fbucket: str,
        tally: Tally, tmp_path: Path) -> None:
    """Mounted with a prefix so the key differs from the file's path; the log must name the
    key (hence the file), the cause, and the abort."""
    m = new_mount(f"{fbucket}:logs")
    faults.add_fault("UploadPart", "status", status=503, times=-1)
    key = "logs/persist-part.bin"
    data = os.urandom(LARGE)
    out = write_file(m.mountpoint / "persist-part.bin", data, via="cp", scratch=tmp_path)
    assert tally.judge(s3, fbucket, key, data, out) == "failed loudly", out
    assert out.errno == errno.EIO
    assert_nothing_left(s3, fbucket, key)
    assert faults.counts().get("AbortMultipartUpload") == 1
    log = m.log()
    errors = error_lines(log)
    assert any(key in line and "SlowDown" in line for line in errors), log
    assert any(key in line and "retrying (attempt 5 of 5) after HTTP 503 SlowDown" in line
               for line in log.splitlines()), log
    assert any(key in line and "aborted" in line for line in log.splitlines()), log


@pytest.mark.parametrize(("op", "status"), [("CreateMultipartUpload", 500),
                                            ("CompleteMultipartUpload", 500)])
def test_persistent_create_or_complete_failure_keeps_the_old_object(
        op: str, status: int, new_mount: Callable[..., Mount], faults: S3Proxy, s3: Any,
        fbucket: str, tally: Tally, tmp_path: Path) -> None:
    m = new_mount()
    key = f"persist-{op}.bin"
    old = os.urandom(3 * MiB)
    s3.put_object(Bucket=fbucket, Key=key, Body=old)
    faults.add_fault(op, "status", status=status, times=-1)
    data = os.urandom(LARGE)
    out = write_file(m.mountpoint / key, data, via="python", scratch=tmp_path)
    assert tally.judge(s3, fbucket, key, data, out, old=old) == "failed loudly", out
    assert out.errno == errno.EIO
    assert faults.counts()[op] == 5  # botocore's 5 attempts, then EIO
    assert_nothing_left(s3, fbucket, key)
    assert any(key in line and "InternalError" in line for line in error_lines(m.log()))


def test_failing_abort_leaves_a_listed_leftover(new_mount: Callable[..., Mount],
                                                faults: S3Proxy, s3: Any, fbucket: str,
                                                moto_server: MotoServer, tally: Tally,
                                                tmp_path: Path) -> None:
    """Parts and the abort are refused (403, as with an IAM policy lacking
    s3:AbortMultipartUpload): the write fails loudly, the upload stays behind with its
    marker, the log says so, and `s3mpfs uploads` lists it and aborts it once the mount
    that owns it is gone."""
    m = new_mount()
    faults.add_fault("UploadPart", "status", status=403, times=-1)
    faults.add_fault("AbortMultipartUpload", "status", status=403, times=-1)
    key = "persist-abort.bin"
    data = os.urandom(LARGE)
    out = write_file(m.mountpoint / key, data, via="python", scratch=tmp_path)
    assert tally.judge(s3, fbucket, key, data, out) == "failed loudly", out
    assert out.errno == errno.EACCES  # S3 refused: errors.errno_for, not EIO
    (upload_id,) = uploads_of(s3, fbucket, key)
    tally.left_behind += 1
    assert markers_of(s3, fbucket, key) == [marker_key(upload_id)]
    assert any(key in line and upload_id in line and "could not abort" in line
               and "access denied" in line for line in error_lines(m.log())), m.log()

    env = {**os.environ, **CREDENTIALS}
    cmd = [sys.executable, "-m", "s3mpfs", "uploads", fbucket, "--endpoint-url",
           moto_server.url]
    r = subprocess.run([*cmd, "--abort"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith(key + "\t"))
    assert upload_id in line and "(still running)" in line and "skipped" in line
    assert uploads_of(s3, fbucket, key) == [upload_id]  # a running mount's upload is kept
    m.unmount()
    r = subprocess.run([*cmd, "--abort"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith(key + "\t"))
    assert line.endswith("\taborted")
    assert_nothing_left(s3, fbucket, key)


# -- botocore's retry quota -----------------------------------------------------------------


# botocore's standard retry mode keeps one retry quota per client (500 tokens, 14 per retry
# of a 5xx/connection error, refunded only by successes): after ~35 failed retries a client
# stops retrying at all. BotoStore therefore retries itself (store/boto.py); this test keeps
# that fixed.
def test_retry_quota_survives_a_burst_of_persistent_failures(
        new_mount: Callable[..., Mount], faults: S3Proxy, s3: Any, fbucket: str,
        tally: Tally, tmp_path: Path) -> None:
    m = new_mount()
    faults.add_fault("PutObject", "status", status=500, times=-1)
    burst = [(f"quota-burst-{i}.txt", os.urandom(SMALL), "python") for i in range(10)]
    outcomes = _write_many(m, burst, tmp_path, parallel=10)
    for key, data, _ in burst:  # a 10-file outage: each fails loudly
        assert tally.judge(s3, fbucket, key, data, outcomes[key]) == "failed loudly"
    tally.count_faults(faults.faults())
    faults.reset()
    # The outage is over; one transient 500 (then one 503) must be retried as usual.
    faults.add_fault("PutObject", "status", status=500, times=1)
    faults.add_fault("PutObject", "status", status=503, nth=2, times=1)
    key, data = "quota-after.txt", os.urandom(SMALL)
    out = write_file(m.mountpoint / key, data, via="python", scratch=tmp_path)
    verdict = tally.judge(s3, fbucket, key, data, out)
    assert verdict in ("stored", "failed loudly")  # never silent, whatever else happens
    assert verdict == "stored", (out, faults.counts())
