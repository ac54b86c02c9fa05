"""What the suite measures in each run, and how.

A run happens inside Recorder.window(), which records a Run: wall time, MB/s, the daemon's peak
RSS (VmHWM, reset before the run through /proc/PID/clear_refs), its CPU seconds (for raw boto3
the suite's own), local disk used for staging (Sampler, every 0.2 s), S3 requests (the server's
access log between two marks, minus the suite's own control requests: RequestCounter), the
server's CPU, and the CPU other processes used meanwhile (a run where they used more than
BUSY_CORES is flagged as disturbed). Profiler samples a daemon with py-spy;
summarize_profile() says where the samples fall.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    MB,
    REPO,
    MiB,
    children_cpu,
    count_logged_requests,
    cpu_seconds,
    loadavg,
    log,
    machine_busy_seconds,
    reset_hwm,
    self_cpu,
    status_kib,
    stop_pid,
    wait_until_quiet,
)
from bench.systems import Mounts, Target

BUSY_CORES = 0.5  # other processes above this many cores on average: a disturbed run


# -- S3 request counting ------------------------------------------------------------------------

try:  # the counting proxy's classifier (stdlib only)
    from tests.helpers.s3proxy import classify as _classify_op
except Exception:  # pragma: no cover - tests/ not importable: a coarse fallback
    def _classify_op(method: str, target: str, has_copy_source: bool = False) -> str:
        return f"{method} {'object' if target.strip('/').count('/') else 'bucket'}"


def classify(method: str, target: str) -> str:
    op = _classify_op(method, target)
    # An access log line does not show x-amz-copy-source: a PUT of a key is either.
    return "PutObject/CopyObject" if op == "PutObject" else op


class RequestCounter:
    """S3 requests a server logged between mark() and since_mark(), minus our own control
    requests (counted with a botocore event hook on the control client)."""

    FLUSH_S = 0.25  # Ceph writes its log from a thread: give it time to catch up

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = 0
        self.own: Counter[str] = Counter()
        self._own0: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count_own(self, event_name: str, **kwargs: Any) -> None:
        with self._lock:
            self.own[event_name.rsplit(".", 1)[-1]] += 1

    def mark(self) -> None:
        if self.path is None:
            return
        time.sleep(self.FLUSH_S)
        with contextlib.suppress(OSError):
            self.offset = self.path.stat().st_size
        with self._lock:
            self._own0 = Counter(self.own)

    def since_mark(self) -> dict[str, int] | None:
        if self.path is None:
            return None
        time.sleep(self.FLUSH_S)
        counts = count_logged_requests(self.path, self.offset, classify)
        with self._lock:
            own = self.own - self._own0
        for op, n in own.items():
            name = "PutObject/CopyObject" if op in ("PutObject", "CopyObject") else op
            counts[name] -= n
        return {k: v for k, v in counts.most_common() if v > 0}


# -- sampling -----------------------------------------------------------------------------------


def staging_bytes(pid: int, dirs: list[Path], exclude: set[tuple[int, int]]) -> int:
    """Disk blocks of the regular files `pid` holds open (deleted ones too: s3fs stages in
    unlinked temp files) plus those of the files under `dirs`, each inode once."""
    seen: set[tuple[int, int]] = set(exclude)
    total = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    for d in dirs:
        for root, _dirs, files in os.walk(d):
            for name in files:
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


class Sampler:
    """Every `interval` s: the daemon's VmRSS and staging bytes (max kept; a series if asked)."""

    def __init__(self, pid: int, dirs: list[Path], exclude: set[tuple[int, int]],
                 interval: float = 0.2, series: bool = False,
                 extra: Callable[[], Any] | None = None) -> None:
        self.pid, self.dirs, self.exclude = pid, dirs, exclude
        self.interval = interval
        self.rss_max_kib = 0
        self.staging_max = 0
        self.series: list[tuple[float, int, Any]] | None = [] if series else None
        self.extra = extra
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="suite-sampler", daemon=True)
        self._t0 = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError, ValueError):
                rss = status_kib(self.pid, "VmRSS")
                self.rss_max_kib = max(self.rss_max_kib, rss)
                self.staging_max = max(self.staging_max,
                                       staging_bytes(self.pid, self.dirs, self.exclude))
                if self.series is not None:
                    x = None
                    if self.extra is not None:
                        with contextlib.suppress(Exception):
                            x = self.extra()
                    self.series.append((time.perf_counter() - self._t0, rss, x))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- a run's figures ----------------------------------------------------------------------------


@dataclass
class Run:
    workload: str
    system: str
    round: int
    ok: bool = False
    seconds: float | None = None
    nbytes: int = 0
    items: int = 0  # files (rsync) or keys (ls)
    cpu: float | None = None
    rss_peak_kib: int | None = None
    rss_start_kib: int | None = None  # VmRSS when the run started
    staging_peak: int | None = None
    requests: dict[str, int] | None = None
    other_cores: float | None = None
    server_cpu: float | None = None
    loadavg: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mbps(self) -> float | None:
        if not self.ok or not self.seconds or not self.nbytes:
            return None
        return self.nbytes / self.seconds / MB

    @property
    def disturbed(self) -> bool:
        return self.other_cores is not None and self.other_cores > BUSY_CORES


# -- the measurement window ---------------------------------------------------------------------


class Recorder:
    """Measures runs and keeps them (`runs`). CPU counted as "ours" (not other load): this
    process's, its children's, every live mount's and the server's (`server_pids`)."""

    def __init__(self, settle: float, mounts: Mounts) -> None:
        self.settle = settle  # wait up to this long for a quiet machine before each run
        self.mounts = mounts
        self.runs: list[Run] = []
        self.reqs = RequestCounter(None)
        self.server_pids: list[int] = []

    def server_cpu(self) -> float | None:
        if not self.server_pids:
            return None
        total = 0.0
        for pid in self.server_pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def our_cpu(self) -> float:
        total = self_cpu() + children_cpu() + (self.server_cpu() or 0.0)
        for m in self.mounts.live:
            with contextlib.suppress(OSError, AssertionError):
                total += cpu_seconds(m.pid)
        return total

    @contextlib.contextmanager
    def window(self, workload: str, t: Target, n: int, nbytes: int = 0,
               items: int = 0) -> Iterator[Run]:
        run = Run(workload, t.system, n, nbytes=nbytes, items=items, loadavg=loadavg())
        if self.settle > 0:
            wait_until_quiet(max_cores=BUSY_CORES, window=0.3, timeout=self.settle)
        pid = t.pid
        sampler = None
        if pid is not None:
            with contextlib.suppress(OSError, KeyError):
                run.rss_start_kib = status_kib(pid, "VmRSS")
            reset_hwm(pid)
            sampler = Sampler(pid, t.staging, t.exclude).__enter__()
        self.reqs.mark()
        cpu0 = cpu_seconds(pid) if pid else self_cpu()
        ours0, busy0 = self.our_cpu(), machine_busy_seconds(processes_only=True)
        srv0 = self.server_cpu()
        t0 = time.perf_counter()
        try:
            yield run
            run.ok = True
        except BaseException as e:
            run.error = f"{type(e).__name__}: {e}"[:400]
            raise
        finally:
            t1 = time.perf_counter()
            if run.seconds is None:
                run.seconds = t1 - t0
            with contextlib.suppress(OSError):
                run.cpu = (cpu_seconds(pid) if pid else self_cpu()) - cpu0
            if sampler is not None and pid is not None:
                sampler.__exit__(None, None, None)
                with contextlib.suppress(OSError, KeyError):
                    run.rss_peak_kib = max(status_kib(pid, "VmHWM"), sampler.rss_max_kib)
                run.staging_peak = sampler.staging_max
            busy = machine_busy_seconds(processes_only=True) - busy0
            run.other_cores = max(0.0, busy - (self.our_cpu() - ours0)) / max(t1 - t0, 1e-6)
            srv1 = self.server_cpu()
            if srv0 is not None and srv1 is not None:
                run.server_cpu = srv1 - srv0
            run.requests = self.reqs.since_mark()
            self.runs.append(run)
            self.print_run(run)

    def print_run(self, r: Run) -> None:
        parts = [f"  {r.workload:<12} r{r.round} {r.system:<24}"]
        if r.ok:
            parts.append(f"{r.seconds:8.2f} s")
            if r.mbps:
                parts.append(f"{r.mbps:7.1f} MB/s")
            if r.rss_peak_kib:
                parts.append(f"rss {r.rss_peak_kib / 1024:6.1f} MiB")
            if r.cpu is not None:
                parts.append(f"cpu {r.cpu:6.2f} s")
            if r.staging_peak:
                parts.append(f"stage {r.staging_peak / MiB:6.1f} MiB")
            if r.requests is not None:
                parts.append(f"req {sum(r.requests.values())}")
            for k, v in r.extra.items():
                parts.append(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}")
            if r.disturbed:
                parts.append(f"(others used {r.other_cores:.1f} cores)")
        else:
            parts.append(f"FAILED {r.error}")
        log(" ".join(parts))


# -- profiles -----------------------------------------------------------------------------------


class Profiler:
    """Two py-spy samplers on one daemon at once (record --nonblocking: they read its memory
    without stopping it): a flame graph (SVG) and raw stacks per thread for
    summarize_profile(), as profile-WORKLOAD.svg and .txt in `out_dir`."""

    def __init__(self, wl: str, out_dir: Path, log_dir: Path) -> None:
        self.pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.wl, self.log_dir = wl, log_dir
        self.dests = {"flamegraph": out_dir / f"profile-{wl}.svg",
                      "raw": out_dir / f"profile-{wl}.txt"}
        self.spies: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def installed(self) -> bool:
        return os.path.exists(self.pyspy)

    def _log(self, fmt: str) -> Path:
        return self.log_dir / f"py-spy-{self.wl}-{fmt}.log"

    def start(self, pid: int) -> None:
        for fmt, dest in self.dests.items():
            dest.unlink(missing_ok=True)
            with open(self._log(fmt), "wb") as err:
                self.spies[fmt] = subprocess.Popen(
                    [self.pyspy, "record", "--pid", str(pid), "--rate", "100",
                     "--nonblocking", "--format", fmt, "-o", str(dest),
                     *(["--threads"] if fmt == "raw" else [])],
                    stdout=err, stderr=subprocess.STDOUT)
        time.sleep(1.5)

    def stop(self) -> None:
        for spy in self.spies.values():
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
        for spy in self.spies.values():
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                stop_pid(spy)

    def outputs(self) -> dict[str, Any]:
        """The files written (relative to the repository), py-spy's error where one is
        missing, and the summary of the raw stacks."""
        res: dict[str, Any] = {}
        for fmt, dest in self.dests.items():
            if dest.exists():
                res[fmt] = str(dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest)
            else:
                with contextlib.suppress(OSError):
                    res[f"{fmt}_error"] = self._log(fmt).read_text(errors="replace")[-300:]
        if self.dests["raw"].exists():
            res["summary"] = summarize_profile(self.dests["raw"])
        return res


_WAITING = [  # (category, substring of the leaf frame): samples of a thread blocked, not busy
    ("waiting: main loop idle in epoll_wait", "get_events (trio/_core/_io_epoll.py"),
    ("waiting: for S3's response (socket recv)", "SocketIO.readinto (socket.py"),
]
_CATEGORIES = [  # (category, substrings of a frame's file); the leaf-most match wins
    ("SigV4 signing / hashing", ("botocore/auth.py", "hashlib", "hmac.py", "awscrt/auth")),
    ("checksums (CRC)", ("checksum", "awscrt/checksums", "crc")),
    ("HTTP send/recv (socket, http.client, urllib3)",
     ("socket.py", "ssl.py", "http/client.py", "urllib3", "selectors.py")),
    ("botocore/boto3 request building, parsing, retries", ("botocore", "boto3", "s3transfer")),
    ("pyfuse3 request loop", ("pyfuse3",)),
    ("trio scheduling / thread hand-off", ("trio",)),
    ("s3mpfs code", ("s3mpfs/",)),
    ("threads / queues (stdlib)", ("threading.py", "queue.py", "concurrent/")),
    ("logging", ("logging/",)),
]


def _frame_file(frame: str) -> str:
    m = re.search(r"\(([^()]*)\)\s*$", frame)
    return m.group(1) if m else frame


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> share per category (leaf-most matching frame) and the
    top functions by own samples."""
    cats: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    main_thread = Counter[str]()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaves[re.sub(r":\d+\)$", ")", frames[-1])] += count
        worker = any("threading.py" in f and "_bootstrap" in f for f in frames)
        main_thread["worker threads (boto3 calls)" if worker else "main thread (FUSE + trio)"] \
            += count
        cat = next((c for c, pat in _WAITING if pat in frames[-1]), "other")
        for f in reversed(frames) if cat == "other" else []:
            file = _frame_file(f)
            hit = next((c for c, pats in _CATEGORIES if any(p in file for p in pats)), None)
            if hit:
                cat = hit
                break
        cats[cat] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "categories": [(c, round(100 * v / total, 1)) for c, v in cats.most_common()],
        "threads": [(c, round(100 * v / total, 1)) for c, v in main_thread.most_common()],
        "top_functions": [(f, round(100 * v / total, 1)) for f, v in leaves.most_common(top)],
    }
