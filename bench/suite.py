"""Benchmark suite: s3mpfs against raw boto3, s3fs-fuse and rclone mount, on one S3 server.

    .venv/bin/python -m bench.suite              # full run (~25-35 min on 2 cores)
    .venv/bin/python -m bench.suite --quick      # smoke run: small sizes, 1 round (~3 min)
    .venv/bin/python -m bench.suite --rss-10g    # also write 10 GiB once and sample RSS

The server is a private Ceph RADOS Gateway (../shared/tools/ceph-rgw) started here with its own
CEPH_DIR and free ports (other sessions may run a Ceph on 7480), with RGW_DEBUG=1 so its access
log has one line per S3 request; it is stopped and wiped (stop.sh --wipe) at the end, whatever
happens. `--server moto` starts moto instead; `--endpoint URL` uses a running server (request
counts then need `--server-log FILE`, an access log with one `"METHOD /path HTTP/1.1"` line per
request).

Systems (every FUSE daemon runs in the foreground as our child, so its PID is the daemon's):
  raw boto3      the limit: s3transfer upload_file / download_file with 8 MiB parts, a manual
                 multipart upload with 4 threads, get_object, put_object, list_objects_v2
  s3mpfs         python -m s3mpfs BUCKET MNT --endpoint-url URL -f (defaults: 8 MiB parts, 4 in
                 flight per file)
  s3fs           s3fs BUCKET MNT -f -o url=URL,use_path_request_style,passwd_file=F,
                 endpoint=us-east-1,tmpdir=STAGE (stages files in STAGE, on disk)
  rclone-off     rclone mount remote:BUCKET MNT --vfs-cache-mode off (provider Ceph/Other,
                 force_path_style; AWS_CA_BUNDLE unset: rclone 1.60 fails with it)
  rclone-writes  the same with --vfs-cache-mode writes --cache-dir STAGE: close() returns before
                 the upload, so its time runs until the object is in S3 (polled with HeadObject
                 or ListObjectsV2); reported apart from the peers that are durable at close

Workloads (interleaved per round: every system runs round 1, then every system round 2, ...):
  write     dd if=SRC of=MNT/KEY bs=1M of 1 GiB; durable when dd exits (close)
  tar       tar cf - DIR | cat > MNT/x.tar of a 512 MiB tree (128 files of 4 MiB)
  rsync     rsync -a --stats of 1,000 x 4 KiB files in 10 directories into a new directory,
            then the same rsync again (files re-transferred, from --stats), and once more
            on a freshly mounted daemon ("rsync remount": attributes read from S3 again)
  read      read(2) of a 1 GiB object in 1 MiB requests; the file's cached pages are dropped
            first (posix_fadvise DONTNEED)
  ls        ls -l of a directory of 10,000 keys on a fresh mount (mounted per run)
  parallel  4 dd writers of 256 MiB each at once

Per run: wall time, MB/s (1 MB = 1e6 bytes), the daemon's peak RSS (VmHWM, reset before the run
through /proc/PID/clear_refs), its CPU seconds (utime+stime from /proc/PID/stat; for raw boto3
this process's), local disk used for staging (blocks of regular files the daemon holds open,
deleted ones included, plus the files under its staging directory; sampled every 0.2 s), S3
requests (the server's access log between two marks, minus the suite's own control requests),
and the CPU other processes used meanwhile (this machine is shared: a run where they used more
than 0.5 cores is flagged). Figures are medians and ranges over the rounds.

Output: docs/benchmarks/results.{md,json,png} (and rss-10g.png, profile-*.{svg,txt} when made),
goals with PASS/MISS on stdout and in results.md. Goals are reported, never tuned for.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    TEST_CREDENTIALS,
    GiB,
    MotoServer,
    first_line,
    loadavg,
    log,
    machine_facts,
    make_client,
    package_version,
    parse_size,
    tmpfs_dir,
)
from bench.measurements import Profiler, Recorder, RequestCounter, Run
from bench.report import aggregate, evaluate_goals, write_outputs
from bench.systems import (
    SYSTEMS,
    CephServer,
    Mounts,
    Target,
    ensure_packages,
    split_cores,
    versions,
)
from bench.workloads import WORKLOADS, Sizes, Workloads

DEFAULT_CEPH_TOOL = REPO.parent / "shared" / "tools" / "ceph-rgw"
DEFAULT_OUT = REPO / "docs" / "benchmarks"


# -- the suite ----------------------------------------------------------------------------------


class Suite:
    """One run of the suite: its bucket, scratch directories, mounts (systems.Mounts), the
    measured runs (measurements.Recorder) and the workloads (workloads.Workloads), which it
    runs in interleaved rounds over the systems."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sz: Sizes = args.sizes
        self.notes: list[str] = []
        self.t_start = time.monotonic()
        need = 3 * GiB + 3 * self.sz.write
        self.tmpfs = Path(tempfile.mkdtemp(prefix="s3mpfs-suite-",
                                           dir=args.tmpdir or tmpfs_dir(need)))
        self.disk = Path(tempfile.mkdtemp(prefix="s3mpfs-suite-", dir=args.stage_dir))
        self.bucket = args.bucket or f"suite-{secrets.token_hex(4)}"
        self.skip: set[tuple[str, str]] = set()  # (workload, system) given up on (timeouts)
        self.mounts = Mounts(self.disk, self.bucket, tuple(args.mount_arg))
        self.rec = Recorder(args.settle, self.mounts)

    # -- clients --

    def setup_clients(self, endpoint: str, access: str, secret: str, region: str) -> None:
        self.mounts.connect(endpoint, access, secret, region)
        self.raw = make_client(endpoint, access, secret, region, 40)
        self.ctl = make_client(endpoint, access, secret, region, 40)  # the suite's own calls
        self.ctl.meta.events.register("before-send.s3", self.rec.reqs.count_own)
        self.work = Workloads(self.sz, self.rec, self.mounts, self.raw, self.ctl, self.bucket,
                              self.tmpfs, ls_timeout=self.args.ls_timeout,
                              rsync_timeout=self.args.rsync_timeout)

    # -- the driver --

    def run_workload(self, wl: str) -> None:
        title, variants, fuse = WORKLOADS[wl]
        fuse = tuple(s for s in fuse if s in self.args.systems)
        if "boto3" not in self.args.systems:
            variants = []
        raws = [Target(f"boto3 {v}", True) for v in variants]
        fn: Callable[..., None] = getattr(self.work, f"w_{wl}")
        log(f"\n== {wl}: {title}  (loadavg {loadavg()}, {self.elapsed()})")
        self.work.setup(wl)
        fresh_per_run = wl == "ls"
        targets: dict[str, Target | None] = {}
        try:
            if not fresh_per_run:
                for s in fuse:
                    targets[s] = self.try_mount(wl, s, wl)
            rounds = self.sz.ls_rounds if wl == "ls" else self.sz.rounds
            for n in range(1, rounds + 1):
                for rt, v in zip(raws, variants, strict=True):
                    with contextlib.suppress(Exception):
                        fn(rt, n, v)
                for s in fuse:
                    if (wl, s) in self.skip:
                        continue
                    t = self.try_mount(wl, s, f"{wl}{n}") if fresh_per_run else targets[s]
                    if t is None:
                        continue
                    try:
                        fn(t, n)
                    except Exception as e:
                        if not any(r.workload.startswith(wl) and r.system == s and r.round == n
                                   for r in self.rec.runs):
                            self.rec.runs.append(Run(wl, s, n, error=f"{type(e).__name__}: {e}"))
                            self.rec.print_run(self.rec.runs[-1])
                        if isinstance(e, TimeoutError):
                            self.skip.add((wl, s))
                            self.notes.append(f"{wl} on {s}: timed out in round {n}; "
                                              "later rounds skipped")
                        if not fresh_per_run:  # a fresh daemon for the next round
                            self.mounts.unmount(t)
                            targets[s] = self.try_mount(wl, s, f"{wl}-r{n}")
                    finally:
                        if fresh_per_run:
                            self.mounts.unmount(t)
        finally:
            for t in targets.values():
                if t is not None:
                    self.mounts.unmount(t)
            self.work.teardown(wl)

    def try_mount(self, wl: str, system: str, tag: str) -> Target | None:
        try:
            return self.mounts.mount(system, tag)
        except Exception as e:
            run = Run(wl, system, 0, error=f"mount failed: {type(e).__name__}: {e}"[:400])
            self.rec.runs.append(run)
            self.rec.print_run(run)
            return None

    def elapsed(self) -> str:
        return f"{(time.monotonic() - self.t_start) / 60:.1f} min elapsed"

    # -- profiling --

    def profile(self, wl: str, out_dir: Path) -> dict[str, Any]:
        """One more s3mpfs run of `wl` under py-spy (measurements.Profiler). Not part of the
        results."""
        spy = Profiler(wl, out_dir, self.disk)
        if not spy.installed:
            return {"error": "py-spy not installed (pip install py-spy)"}
        res: dict[str, Any] = {"runs": []}
        t: Target | None = None
        try:
            self.work.setup(wl)
            t = self.try_mount(wl, "s3mpfs", f"prof-{wl}")
            if t is None:
                self.rec.runs.pop()
                return {"error": "mount failed"}
            assert t.pid is not None
            spy.start(t.pid)
            n_before = len(self.rec.runs)
            try:
                getattr(self.work, f"w_{wl}")(t, 90)
            except Exception as e:
                res["run_error"] = f"{type(e).__name__}: {e}"[:300]
            res["runs"] = [{"workload": r.workload, "seconds": r.seconds, "mbps": r.mbps,
                            "cpu": r.cpu, "ok": r.ok} for r in self.rec.runs[n_before:]]
            del self.rec.runs[n_before:]
        finally:
            spy.stop()
            if t is not None:
                self.mounts.unmount(t)
            self.work.teardown(wl)
        res.update(spy.outputs())
        return res


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 64 MiB files, 100 rsync files, 500 keys, 1 round")
    p.add_argument("--rounds", type=int, default=None, help="rounds per workload (default 3)")
    p.add_argument("--ls-rounds", type=int, default=None,
                   help="rounds of the ls workload (default: --rounds)")
    p.add_argument("--workloads", default="write,tar,rsync,read,ls,parallel",
                   help="comma-separated subset of write,tar,rsync,read,ls,parallel")
    p.add_argument("--systems", default="boto3,s3mpfs,s3fs,rclone-off,rclone-writes",
                   help="comma-separated subset of boto3,s3mpfs,s3fs,rclone-off,rclone-writes")
    p.add_argument("--write-size", default=None, help="default 1G (quick: 64M)")
    p.add_argument("--tar-size", default=None, help="default 512M (quick: 64M)")
    p.add_argument("--read-size", default=None, help="default 1G (quick: 64M)")
    p.add_argument("--parallel-size", default=None, help="per writer; default 256M (quick: 16M)")
    p.add_argument("--rsync-files", type=int, default=None, help="default 1000 (quick: 100)")
    p.add_argument("--ls-keys", type=int, default=None, help="default 10000 (quick: 500)")
    p.add_argument("--rss-10g", action="store_true",
                   help="also write 10 GiB once through s3mpfs and sample its RSS")
    p.add_argument("--rss-size", default=None,
                   help="size for --rss-10g (default 10G; quick: 640M)")
    p.add_argument("--profile", default="auto",
                   help="py-spy profiles of s3mpfs: 'auto' (workloads whose goal it missed), "
                   "'none', or a comma-separated list of workloads")
    p.add_argument("--server", choices=("ceph", "moto"), default="ceph")
    p.add_argument("--ceph-tool", type=Path, default=DEFAULT_CEPH_TOOL)
    p.add_argument("--ceph-size-gb", type=int, default=None,
                   help="Ceph's bluestore file (sparse; default 40, 16 with --quick)")
    p.add_argument("--endpoint", help="use this S3 server (no server is started)")
    p.add_argument("--access-key", default=None)
    p.add_argument("--secret-key", default=None)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--server-log", type=Path, default=None,
                   help="with --endpoint: the server's access log, to count requests")
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="with --endpoint: server PIDs whose CPU to count as ours")
    p.add_argument("--split-cores", action="store_true",
                   help="run the S3 server on CPU 0 and everything else (the suite, every "
                   "client and FUSE daemon) on the other CPUs, as with a remote S3: then a "
                   "client's own CPU use does not slow the server down (with --endpoint, "
                   "needs --server-pid)")
    p.add_argument("--bucket", default=None)
    p.add_argument("--mount-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for s3mpfs (repeatable)")
    p.add_argument("--tmpdir", default=None,
                   help="where source files go (default /dev/shm, a tmpfs, when it has room)")
    p.add_argument("--stage-dir", default=None,
                   help="where mountpoints, logs, s3fs's tmpdir and rclone's cache go "
                   "(default $TMPDIR or /tmp: a disk here)")
    p.add_argument("--settle", type=float, default=0.0,
                   help="before each run wait up to this long for the machine to be quiet "
                   "(< 0.5 cores busy); default 0: on a machine shared with other sessions' "
                   "test runs it rarely is, so other load is recorded per run instead")
    p.add_argument("--ls-timeout", type=float, default=300)
    p.add_argument("--rsync-timeout", type=float, default=600)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--from-json", type=Path, default=None, metavar="RESULTS_JSON",
                   help="run nothing: rebuild results.md/.png from a results.json")
    args = p.parse_args(argv)
    q = args.quick
    rounds = args.rounds or (1 if q else 3)
    args.sizes = Sizes(
        write=parse_size(args.write_size or ("64M" if q else "1G")),
        tar=parse_size(args.tar_size or ("64M" if q else "512M")),
        rsync_files=args.rsync_files or (100 if q else 1000),
        read=parse_size(args.read_size or ("64M" if q else "1G")),
        ls_keys=args.ls_keys if args.ls_keys is not None else (500 if q else 10_000),
        parallel_each=parse_size(args.parallel_size or ("16M" if q else "256M")),
        rounds=rounds, ls_rounds=args.ls_rounds or rounds,
        rss_total=parse_size(args.rss_size or ("640M" if q else "10G")))
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.systems = [s for s in args.systems.split(",") if s]
    bad = [w for w in args.workloads if w not in WORKLOADS]
    bad += [s for s in args.systems if s not in SYSTEMS]
    if bad:
        p.error(f"unknown workloads/systems: {bad}")
    if args.ceph_size_gb is None:
        args.ceph_size_gb = 16 if q else 40
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def rerender(args: argparse.Namespace) -> int:
    """Rebuild the tables, goals and charts from a results.json (no benchmark runs)."""
    data = json.loads(args.from_json.read_text())
    info = data["info"]
    runs = []
    for d in data["runs"]:
        d = {k: v for k, v in d.items() if k in Run.__dataclass_fields__}
        runs.append(Run(**d))
    sz = Sizes(**info["sizes"])
    rows = aggregate(runs)
    rss_long = data.get("rss_long")
    goals = evaluate_goals(rows, rss_long)
    write_outputs(args.out, info, sz, rows, goals, rss_long, data.get("profiles") or {},
                  runs=runs, notes=data.get("notes", []),
                  tar_bytes=info.get("tar_bytes", sz.tar),
                  rsync_files=info.get("rsync_files", sz.rsync_files))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rerender(args)
    signal.signal(signal.SIGTERM, _on_sigterm)
    need = {"rsync": "rsync", "fusermount3": "fuse3"}
    if "s3fs" in args.systems:
        need["s3fs"] = "s3fs"
    if any(s.startswith("rclone") for s in args.systems):
        need["rclone"] = "rclone"
    if not args.endpoint and args.server == "ceph":
        need.update({"radosgw": "radosgw", "ceph-mon": "ceph-mon", "ceph-osd": "ceph-osd",
                     "uuidgen": "uuid-runtime", "curl": "curl", "bc": "bc"})
    ensure_packages(need)

    suite = Suite(args)
    ceph: CephServer | None = None
    moto: MotoServer | None = None
    made_bucket = False
    load_start = loadavg()
    rss_long: dict[str, Any] | None = None
    profiles: dict[str, Any] = {}
    try:
        if args.endpoint:
            access = args.access_key or os.environ.get("AWS_ACCESS_KEY_ID")
            secret = args.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
            if not (access and secret):
                print("--endpoint needs --access-key/--secret-key or AWS_* in the environment",
                      file=sys.stderr)
                return 2
            endpoint = args.endpoint
            server = f"external {endpoint}"
            suite.rec.reqs = RequestCounter(args.server_log)
            suite.rec.server_pids = list(args.server_pid)
        elif args.server == "moto":
            moto = MotoServer(suite.disk / "moto.log", tmpfs_dir(6 * GiB))
            moto.start()
            endpoint, access = moto.url, TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"]
            secret = TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
            server = f"moto {package_version('moto')} (started here)"
            suite.rec.reqs = RequestCounter(moto.log_path)
            suite.rec.server_pids = [moto.proc.pid] if moto.proc else []
        else:
            ceph = CephServer(args.ceph_tool, suite.disk, args.ceph_size_gb)
            log(f"starting Ceph RGW on 127.0.0.1:{ceph.rgw_port} (mon {ceph.mon_port}) in "
                f"{ceph.dir}")
            t0 = time.monotonic()
            ceph.start()
            endpoint = ceph.endpoint
            access = ceph.env_vars["AWS_ACCESS_KEY_ID"]
            secret = ceph.env_vars["AWS_SECRET_ACCESS_KEY"]
            server = (f"Ceph RGW {first_line(['radosgw', '--version'])}, one node, bluestore "
                      f"on a file (started here in {time.monotonic() - t0:.0f} s; RGW_DEBUG=1)")
            suite.rec.reqs = RequestCounter(ceph.log_path)
            suite.rec.server_pids = ceph.pids
        split = split_cores(suite.rec.server_pids) if args.split_cores else None
        suite.setup_clients(endpoint, access, secret, args.region)
        suite.ctl.create_bucket(Bucket=suite.bucket)
        made_bucket = True

        cmdline = " ".join(argv if argv is not None else sys.argv[1:])
        info: dict[str, Any] = {"command": f"python -m bench.suite {cmdline}".strip(),
                "machine": machine_facts(), "versions": versions(server),
                "sizes": asdict(args.sizes), "loadavg_start": load_start, "cpus": split,
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        log(f"machine: {info['machine']}  loadavg {load_start}")
        for k, v in info["versions"].items():
            log(f"  {k}: {v}")
        suite.work.make_sources()

        for wl in args.workloads:
            suite.run_workload(wl)
        if args.rss_10g:
            rss_long = suite.work.rss_long(suite.elapsed())

        rows = aggregate(suite.rec.runs)
        goals = evaluate_goals(rows, rss_long)
        want: list[str] = []
        if args.profile == "auto":
            want = sorted({g["workload"] for g in goals
                           if g["status"] == "MISS" and g["workload"]})
        elif args.profile != "none":
            want = [w for w in args.profile.split(",") if w]
        args.out.mkdir(parents=True, exist_ok=True)
        for wl in want:
            log(f"\n== profiling s3mpfs on {wl} with py-spy ({suite.elapsed()})")
            profiles[wl] = suite.profile(wl, args.out)
            summ = profiles[wl].get("summary") or {}
            for k in ("threads", "categories", "top_functions"):
                for name, pct in (summ.get(k) or [])[:10]:
                    log(f"  {k:<14} {pct:5.1f}%  {name}")
            if not summ:
                log(f"  {profiles[wl]}")
        info["loadavg_end"] = loadavg()
        info["minutes"] = round((time.monotonic() - suite.t_start) / 60, 1)
        write_outputs(args.out, info, suite.sz, rows, goals, rss_long, profiles,
                      runs=suite.rec.runs, notes=suite.notes, tar_bytes=suite.work.tar_bytes,
                      rsync_files=len(suite.work.rs_files))
        return 0
    finally:
        suite.mounts.stop_all()
        if made_bucket:
            with contextlib.suppress(Exception):
                suite.work.delete_prefix("")
                for page in suite.ctl.get_paginator("list_multipart_uploads").paginate(
                        Bucket=suite.bucket):
                    for u in page.get("Uploads", []):
                        suite.ctl.abort_multipart_upload(Bucket=suite.bucket, Key=u["Key"],
                                                         UploadId=u["UploadId"])
                suite.ctl.delete_bucket(Bucket=suite.bucket)
        if moto is not None:
            moto.stop()
        if ceph is not None:
            log("stopping Ceph (stop.sh --wipe)")
            ceph.stop()
        shutil.rmtree(suite.tmpfs, ignore_errors=True)
        if not any(os.path.ismount(p) for p in suite.disk.glob("mnt-*")):
            shutil.rmtree(suite.disk, ignore_errors=True)
        else:
            print(f"warning: a mount under {suite.disk} is still there; left it in place",
                  file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
