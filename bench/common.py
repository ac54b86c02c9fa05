"""Helpers shared by the benchmarks: servers, mounts, /proc sampling, the boto3 client.

Nothing here imports s3mpfs: the benchmark drives s3mpfs only through its CLI, the way a user
does, so it keeps working while the package changes underneath it. Every process started here
is stopped by its PID (never by name).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent  # the s3mpfs checkout

MiB = 1024 * 1024
GiB = 1024 * MiB
MB = 1_000_000

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'512M', '1G', '8MiB', '1048576' -> bytes (binary units, as s3mpfs's --part-size)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": MiB, "g": GiB, "t": 1024 * GiB}[
        m.group(2).lower()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def stop_pid(proc: subprocess.Popen[Any] | None, timeout: float = 10) -> None:
    """SIGTERM, wait, then SIGKILL: only this PID."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout)


def log(msg: str) -> None:
    print(msg, flush=True)


def first_line(cmd: list[str]) -> str:
    """The first line a command prints (a version, say), or '?'."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0].strip() if text else "?"


def run_cmd(argv: list[str], timeout: float, *, shell: bool = False,
            ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; kill it after `timeout`; raise on other exit codes."""
    proc = subprocess.Popen(argv if not shell else ["bash", "-c", argv[0]],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)
        raise TimeoutError(f"{argv[0][:60]} still running after {timeout:.0f} s") from None
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{argv[0][:60]} exited with {proc.returncode}: "
                           f"{(err or out).strip()[-300:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class MotoServer:
    """moto's S3 server on a free loopback port, as a subprocess of this interpreter."""

    def __init__(self, log_path: Path, tmpdir: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # moto keeps every object and part > 5 MiB in a SpooledTemporaryFile, i.e. on disk in
        # $TMPDIR: on tmpfs its UploadPart/Complete times stop depending on disk writeback.
        self.tmpdir = tmpdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **TEST_CREDENTIALS}
        if self.tmpdir:
            env["TMPDIR"] = self.tmpdir
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}; "
                                   f"see {self.log_path}")
            return _answers(self.url)

        wait_for(up, 60, "moto server")

    def stop(self) -> None:
        stop_pid(self.proc)


def make_client(endpoint: str, access_key: str, secret_key: str, region: str,
                max_connections: int) -> Any:
    """A boto3 S3 client with the botocore settings s3mpfs uses (store/boto.py make_client):
    path-style, standard retries, checksums only when required, same timeouts."""
    import boto3
    import botocore.config

    conf = botocore.config.Config(
        region_name=region,
        max_pool_connections=max_connections,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session(aws_access_key_id=access_key,
                                    aws_secret_access_key=secret_key, region_name=region)
    return session.client("s3", endpoint_url=endpoint, config=conf)


# -- /proc ------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def self_cpu() -> float:
    """CPU seconds of this process (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM of `pid` (Linux: 5 > /proc/PID/clear_refs; needs ownership or root)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5\n")
        return True
    except OSError:
        return False


def machine_busy_seconds(*, processes_only: bool = False) -> float:
    """CPU seconds all cores spent not idle, from /proc/stat: user+nice+system+irq+softirq+steal,
    or with processes_only just user+nice+system (what processes' utime+stime add up to;
    softirq time, e.g. loopback TCP, is counted apart from any process)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2]
    if not processes_only:
        busy += v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / _TICK


def wait_until_quiet(max_cores: float = 0.25, window: float = 0.5,
                     timeout: float = 60) -> tuple[bool, float]:
    """Wait until the whole machine used less than `max_cores` CPUs over `window` seconds
    (other sessions' test runs share this machine). Returns (quiet, cores last seen)."""
    deadline = time.monotonic() + timeout
    while True:
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(window)
        cores = (machine_busy_seconds() - b0) / (time.monotonic() - t0)
        if cores < max_cores:
            return True, cores
        if time.monotonic() > deadline:
            return False, cores


def tmpfs_dir(need: int) -> str | None:
    """/dev/shm if it is a writable tmpfs with `need` bytes free, else None."""
    path = "/dev/shm"
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    if not os.access(path, os.W_OK) or st.f_bavail * st.f_frsize < need:
        return None
    return path


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime per thread (tid -> seconds), from /proc/PID/task/*/stat."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def status_kib(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class RssSampler:
    """Samples VmRSS of one PID every `interval` seconds in a thread; keeps the maximum."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.max_kib = max(self.max_kib, status_kib(self.pid, "VmRSS"))
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the s3mpfs mount ------------------------------------------------------------------------

@dataclass
class Mount:
    """`python -m s3mpfs BUCKET MNT -f` as a subprocess; `proc.pid` is the daemon itself."""

    bucket: str
    mountpoint: Path
    endpoint: str
    env: dict[str, str]
    log_file: Path
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30) -> None:
        for tool in ("fusermount3",):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} not found: FUSE 3 is not installed")
        if not os.path.exists("/dev/fuse"):
            raise RuntimeError("/dev/fuse is missing")
        cmd = [sys.executable, "-m", "s3mpfs", self.bucket, str(self.mountpoint),
               "--endpoint-url", self.endpoint, "-f", "--log-file", str(self.log_file),
               *self.extra_args]
        stderr_path = self.log_file.with_suffix(".stderr")
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env)

        def mounted() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = stderr_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"s3mpfs exited with {self.proc.returncode}: {tail}")
            return os.path.ismount(self.mountpoint)

        wait_for(mounted, timeout, f"s3mpfs to mount {self.mountpoint}")

    def stop(self, timeout: float = 60) -> None:
        unmount(self.mountpoint, self.proc, timeout)


def unmount(mountpoint: Path, proc: subprocess.Popen[Any] | None, timeout: float = 60) -> None:
    """fusermount3 -u, then wait for the daemon (`proc`) to exit; SIGTERM/SIGKILL only if it
    hangs, and a lazy unmount only if the mount is still there after that."""
    if os.path.ismount(mountpoint):
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_pid(proc)
    if os.path.ismount(mountpoint):
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def drop_cached(path: Path) -> None:
    """Drop the kernel's cached pages of `path`, so the next read goes to the filesystem."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_through(path: Path, expected: int, request: int = 1 << 20) -> None:
    """read(2) the whole file in `request`-byte calls (the reads' workload); it must hold
    `expected` bytes."""
    view = memoryview(bytearray(request))
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while got := os.readv(fd, [view]):
            total += got
    finally:
        os.close(fd)
    if total != expected:
        raise RuntimeError(f"read {total} bytes of {path}, expected {expected}")


def read_ahead_kb(mountpoint: Path | str, kb: int | None = None) -> int | None:
    """The kernel's readahead for the filesystem mounted at `mountpoint` (its FUSE reads are
    at most this big); set it first with `kb` (root only). None if /proc or /sys do not say.
    Found through /proc/self/mountinfo (the newest mount there), not a stat() of the
    mountpoint: that works inside the FUSE daemon too, where a stat would wait on itself."""
    escaped = os.path.abspath(mountpoint).replace("\\", "\\134").replace(" ", "\\040")
    device = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == escaped:
                    device = fields[2]
        if device is None:
            return None
        path = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
        if kb is not None:
            path.write_text(f"{kb}\n")
        return int(path.read_text())
    except OSError:
        return None


# One request per line in an S3 server's access log (Ceph RGW with RGW_DEBUG=1, moto).
ACCESS_LOG_RE = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/1\.[01]"')


def count_logged_requests(path: Path, offset: int,
                          classify: Callable[[str, str], str]) -> Counter[str]:
    """Requests in the access log at `path` after byte `offset`, by classify(method, target)."""
    counts: Counter[str] = Counter()
    with contextlib.suppress(OSError), open(path, "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            m = ACCESS_LOG_RE.search(line)
            if m:
                counts[classify(m.group(1), m.group(2))] += 1
    return counts


def machine_facts() -> str:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    return (f"nproc={os.cpu_count()} python={platform.python_version()} "
            f"kernel={platform.release()} mem={mem_gib:.0f}GiB cpu={cpu or '?'}")


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"
