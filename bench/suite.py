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
            then the same rsync again (files re-transferred, from --stats)
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
import re
import secrets
import shutil
import signal
import statistics
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
    MiB,
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
from bench.measurements import BUSY_CORES, Profiler, Recorder, RequestCounter, Run
from bench.systems import (
    DURABLE_PEERS,
    FUSE_SYSTEMS,
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

GOAL_WRITE_VS_RAW = 0.9
GOAL_WRITE_VS_PEER = 2.0
GOAL_RSS_MIB = 100.0
GOAL_RSS_FLAT_MIB = 10.0
GOAL_RSYNC_VS_PEER = 4.0
GOAL_RSYNC_REQ_PER_FILE = 3.0
GOAL_READ_VS_RAW = 0.8

# -- the suite ----------------------------------------------------------------------------------


class Suite:
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

    # -- clients and cleanup --

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


# -- aggregation and output ---------------------------------------------------------------------


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _rng(xs: list[float], spec: str) -> str:
    if not xs:
        return "—"
    if len(xs) == 1:
        return format(xs[0], spec)
    med, lo, hi = (format(x, spec) for x in (statistics.median(xs), min(xs), max(xs)))
    return f"{med} ({lo}–{hi})"


def aggregate(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (workload, system) in the order they ran."""
    order: list[tuple[str, str]] = []
    for r in runs:
        if (r.workload, r.system) not in order:
            order.append((r.workload, r.system))
    rows = []
    for wl, system in order:
        rs = [r for r in runs if r.workload == wl and r.system == system]
        ok = [r for r in rs if r.ok]
        secs = [r.seconds for r in ok if r.seconds is not None]
        mbps = [r.mbps for r in ok if r.mbps]
        reqs = [sum(r.requests.values()) for r in ok if r.requests is not None]
        req_ops = [r.requests for r in ok if r.requests is not None]
        gib = [r.nbytes / GiB for r in ok]
        row: dict[str, Any] = {
            "workload": wl, "system": system, "runs": len([r for r in rs if r.round]),
            "ok": len(ok), "seconds": secs, "mbps": mbps,
            "seconds_median": _med(secs), "mbps_median": _med(mbps),
            "rss_peak_mib": max((r.rss_peak_kib for r in ok if r.rss_peak_kib), default=None),
            "rss_start_mib": min((r.rss_start_kib / 1024 for r in ok if r.rss_start_kib),
                                 default=None),
            "cpu_median": _med([r.cpu for r in ok if r.cpu is not None]),
            "cpu_per_gib_median": _med([r.cpu / g for r, g in zip(ok, gib, strict=True)
                                        if r.cpu is not None and g > 0]),
            "staging_peak_mib": max((r.staging_peak / MiB for r in ok
                                     if r.staging_peak is not None), default=None),
            "staging_min_mib": min((r.staging_peak / MiB for r in ok
                                    if r.staging_peak is not None), default=None),
            "requests_median": _med([float(x) for x in reqs]),
            "requests_ops": req_ops[len(req_ops) // 2] if req_ops else None,
            "items": ok[0].items if ok else (rs[0].items if rs else 0),
            "errors": sorted({r.error for r in rs if r.error}),
            "disturbed": sum(1 for r in ok if r.disturbed),
            "extra": {},
        }
        if row["rss_peak_mib"] is not None:
            row["rss_peak_mib"] /= 1024
        for k in ("transferred", "close_s", "rsync_exit", "rsync_error"):
            vals = [r.extra[k] for r in ok if k in r.extra]
            if vals:
                row["extra"][k] = (_med(vals) if isinstance(vals[0], (int, float))
                                   and k != "rsync_exit" else vals[0])
        rows.append(row)
    # ratio to the best raw boto3 variant of the same workload
    for wl in {r["workload"] for r in rows}:
        raw = [r for r in rows if r["workload"] == wl and r["system"].startswith("boto3")]
        best_tp = max((r["mbps_median"] for r in raw if r["mbps_median"]), default=None)
        best_s = min((r["seconds_median"] for r in raw if r["seconds_median"]), default=None)
        for row in rows:
            if row["workload"] != wl:
                continue
            if best_tp and row["mbps_median"]:
                row["ratio_raw"] = row["mbps_median"] / best_tp
            elif best_s and row["seconds_median"] and wl in ("rsync", "ls"):
                row["ratio_raw"] = best_s / row["seconds_median"]
            else:
                row["ratio_raw"] = None
    return rows


def row_of(rows: list[dict[str, Any]], wl: str, system: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["workload"] == wl and r["system"] == system), None)


def evaluate_goals(rows: list[dict[str, Any]],
                   rss_long: dict[str, Any] | None) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []

    def add(name: str, ok: bool | None, detail: str, workload: str | None = None) -> None:
        goals.append({"goal": name, "status": "n/a" if ok is None else "PASS" if ok else "MISS",
                      "detail": detail, "workload": workload})

    def best_raw(wl: str) -> tuple[str, float] | None:
        cands = [(r["system"], r["mbps_median"]) for r in rows
                 if r["workload"] == wl and r["system"].startswith("boto3") and r["mbps_median"]]
        return max(cands, key=lambda x: x[1]) if cands else None

    def best_peer(wl: str, key: str, lower: bool) -> tuple[str, float] | None:
        cands = [(s, r[key]) for s in DURABLE_PEERS
                 if (r := row_of(rows, wl, s)) is not None and r[key]]
        if not cands:
            return None
        return (min if lower else max)(cands, key=lambda x: x[1])

    me = row_of(rows, "write", "s3mpfs")
    raw = best_raw("write")
    if me and me["mbps_median"] and raw:
        x = me["mbps_median"] / raw[1]
        add(f"write >= {GOAL_WRITE_VS_RAW}x raw boto3", x >= GOAL_WRITE_VS_RAW,
            f"s3mpfs {me['mbps_median']:.0f} MB/s vs {raw[0]} {raw[1]:.0f} MB/s = {x:.3f}x",
            "write")
    else:
        add(f"write >= {GOAL_WRITE_VS_RAW}x raw boto3", None, "no data")
    peer = best_peer("write", "mbps_median", lower=False)
    if me and me["mbps_median"] and peer:
        x = me["mbps_median"] / peer[1]
        add(f"write >= {GOAL_WRITE_VS_PEER}x best durable FUSE peer", x >= GOAL_WRITE_VS_PEER,
            f"s3mpfs {me['mbps_median']:.0f} MB/s vs {peer[0]} {peer[1]:.0f} MB/s = {x:.3f}x",
            "write")
    else:
        add(f"write >= {GOAL_WRITE_VS_PEER}x best durable FUSE peer", None, "no data")
    if me and me["rss_peak_mib"]:
        add(f"daemon RSS <= {GOAL_RSS_MIB:.0f} MiB during a 1 GiB write",
            me["rss_peak_mib"] <= GOAL_RSS_MIB, f"VmHWM {me['rss_peak_mib']:.1f} MiB", "write")
    else:
        add(f"daemon RSS <= {GOAL_RSS_MIB:.0f} MiB during a 1 GiB write", None, "no data")
    if rss_long and "growth_mib" in rss_long:
        flat = rss_long["growth_mib"] <= GOAL_RSS_FLAT_MIB
        add(f"RSS flat over {rss_long['bytes'] / GiB:.0f} GiB (max over the last half <= max "
            f"during the first GiB + {GOAL_RSS_FLAT_MIB:.0f} MiB)", flat,
            f"max first GiB {rss_long['rss_max_first_gib']:.1f} MiB, max last half "
            f"{rss_long['rss_max_last_half']:.1f} MiB, VmHWM {rss_long['vmhwm_mib']:.1f} MiB")
    else:
        add("RSS flat over 10 GiB", None,
            (rss_long or {}).get("error", "not run (use --rss-10g)"))
    me = row_of(rows, "rsync", "s3mpfs")
    peer = best_peer("rsync", "seconds_median", lower=True)
    if me and me["seconds_median"] and peer:
        x = peer[1] / me["seconds_median"]
        add(f"rsync small files >= {GOAL_RSYNC_VS_PEER}x faster than best durable peer",
            x >= GOAL_RSYNC_VS_PEER,
            f"s3mpfs {me['seconds_median']:.1f} s vs {peer[0]} {peer[1]:.1f} s = {x:.1f}x",
            "rsync")
    else:
        add(f"rsync small files >= {GOAL_RSYNC_VS_PEER}x faster than best durable peer", None,
            "no data")
    if me and me["requests_median"] is not None and me["items"]:
        per = me["requests_median"] / me["items"]
        add(f"rsync <= {GOAL_RSYNC_REQ_PER_FILE:.0f} requests per file",
            per <= GOAL_RSYNC_REQ_PER_FILE, f"{per:.2f} requests per file "
            f"({me['requests_median']:.0f} for {me['items']} files)", "rsync")
    else:
        add(f"rsync <= {GOAL_RSYNC_REQ_PER_FILE:.0f} requests per file", None,
            "no request counts")
    me = row_of(rows, "read", "s3mpfs")
    raw = best_raw("read")
    if me and me["mbps_median"] and raw:
        x = me["mbps_median"] / raw[1]
        add(f"read >= {GOAL_READ_VS_RAW}x raw boto3", x >= GOAL_READ_VS_RAW,
            f"s3mpfs {me['mbps_median']:.0f} MB/s vs {raw[0]} {raw[1]:.0f} MB/s = {x:.3f}x",
            "read")
    else:
        add(f"read >= {GOAL_READ_VS_RAW}x raw boto3", None, "no data")
    return goals


def _f(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown_table(rows: list[dict[str, Any]], titles: dict[str, str]) -> str:
    out = ["| workload | system | runs ok | wall s, median (range) | MB/s, median (range) | "
           "× raw boto3 | daemon peak RSS MiB | CPU s/GiB (CPU s) | staging MiB | "
           "S3 requests per run | notes |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wl = r["workload"]
        notes = []
        ex = r["extra"]
        if "close_s" in ex:
            notes.append(f"close() returned after {ex['close_s']:.1f} s; time is until stored")
        if "transferred" in ex and wl == "rsync again":
            notes.append(f"{ex['transferred']:.0f} files re-transferred")
        if "rsync_exit" in ex:
            notes.append(f"rsync exit {ex['rsync_exit']}: {ex.get('rsync_error', '')}")
        if r["errors"]:
            notes.append("FAILED: " + "; ".join(e.replace("|", "/").replace("\n", " ")[:160]
                                                 for e in r["errors"]))
        if r["system"] == "rclone-writes" and r["staging_peak_mib"]:
            notes.append("staging counts files its cache keeps from earlier rounds "
                         "(--vfs-cache-max-age 1h)")
        if r["disturbed"]:
            notes.append(f"{r['disturbed']} run(s) with other load > {BUSY_CORES} cores")
        per_item = ""
        if r["requests_median"] is not None and wl.startswith("rsync") and r["items"]:
            per_item = f" ({r['requests_median'] / r['items']:.2f}/file)"
        if r["ok"] == 0:
            cpu = "—"
        elif r["mbps_median"]:
            cpu = _f(r["cpu_per_gib_median"], ".2f")
        else:
            cpu = f"({_f(r['cpu_median'], '.2f')})"
        out.append("| " + " | ".join([
            titles.get(wl, wl).replace("|", "\\|"), r["system"],
            f"{r['ok']}/{max(r['runs'], r['ok'])}",
            _rng(r["seconds"], ".2f"), _rng(r["mbps"], ".0f"),
            _f(r.get("ratio_raw"), ".2f"),
            _f(r["rss_peak_mib"], ".0f") if not r["system"].startswith("boto3") else "—",
            cpu,
            _f(r["staging_peak_mib"], ".0f") if not r["system"].startswith("boto3") else "—",
            (_f(r["requests_median"], ".0f") + per_item) if r["requests_median"] is not None
            else "—",
            "; ".join(notes)]) + " |")
    return "\n".join(out)


SHORT_VARIANT = {"upload_file": "upload_file", "MPU 4 threads": "MPU", "get_object": "get_object",
                 "download_file": "download_file", "4 x MPU 4 threads": "4 MPUs"}


def _size(n: float) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


def summary_table(rows: list[dict[str, Any]], sz: Sizes) -> str:
    """Systems x workloads, medians: the table for README.md."""
    cols = [("write", "mbps_median", f"write {_size(sz.write)}, MB/s"),
            ("tar", "mbps_median", "tar\\|cat, MB/s"),
            ("rsync", "seconds_median", f"rsync {sz.rsync_files:,} files, s"),
            ("rsync again", "seconds_median", "rsync again, s"),
            ("read", "mbps_median", f"read {_size(sz.read)}, MB/s"),
            ("ls", "seconds_median", f"ls -l {sz.ls_keys:,}, s"),
            ("parallel", "mbps_median", "4 writers, MB/s")]
    head = "| system | " + " | ".join(c[2] for c in cols) + " | RSS in write, MiB | " \
        "CPU s/GiB in write | staging disk in write, MiB |"
    out = [head, "|---" * (len(cols) + 4) + "|"]
    for system in ("raw boto3", *FUSE_SYSTEMS):
        cells = []
        for wl, key, _ in cols:
            if system == "raw boto3":
                cand = [r for r in rows if r["workload"] == wl and r["system"].startswith("boto3")
                        and r[key]]
                best = (max if key == "mbps_median" else min)(cand, key=lambda r: r[key],
                                                              default=None)
                if best is None:
                    cells.append("—")
                    continue
                variant = best["system"].removeprefix("boto3 ")
                note = f" ({SHORT_VARIANT[variant]})" if len(cand) > 1 else ""
                cells.append(f"{best[key]:.0f}{note}" if key == "mbps_median"
                             else f"{best[key]:.1f}")
                continue
            r = row_of(rows, wl, system)
            if r is None:
                cells.append("—")
            elif not r["ok"]:
                cells.append("failed")
            else:
                v = r[key]
                txt = f"{v:.0f}" if key == "mbps_median" else f"{v:.1f}"
                if wl.startswith("rsync") and r["requests_median"] is not None and r["items"]:
                    txt += f" ({r['requests_median'] / r['items']:.1f} req/file)"
                cells.append(txt)
        w = row_of(rows, "write", system) if system != "raw boto3" else None
        rss = _f(w["rss_peak_mib"], ".0f") if w else "—"
        if system == "raw boto3":
            cpu = "; ".join(f"{SHORT_VARIANT[r['system'].removeprefix('boto3 ')]} "
                            f"{r['cpu_per_gib_median']:.2f}" for r in rows
                            if r["workload"] == "write" and r["system"].startswith("boto3")
                            and r["cpu_per_gib_median"] is not None)
        else:
            cpu = _f(w["cpu_per_gib_median"], ".2f") if w else "—"
        stage = _f(w["staging_min_mib"], ".0f") if w else "—"
        out.append(f"| {system} | " + " | ".join(cells) + f" | {rss} | {cpu or '—'} | {stage} |")
    return "\n".join(out)


def requests_table(rows: list[dict[str, Any]]) -> str:
    out = ["| workload | system | S3 requests of the median run, by operation |", "|---|---|---|"]
    for r in rows:
        ops = r["requests_ops"]
        if not ops:
            continue
        out.append(f"| {r['workload']} | {r['system']} | "
                   + ", ".join(f"{k} {v}" for k, v in ops.items()) + " |")
    return "\n".join(out)


COLORS = {"s3mpfs": "#1f77b4", "s3fs": "#ff7f0e", "rclone-off": "#2ca02c",
          "rclone-writes": "#98df8a"}


def plot(rows: list[dict[str, Any]], titles: dict[str, str], path: Path, header: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [wl for wl in ("write", "tar", "rsync", "read", "ls", "parallel")
              if any(r["workload"] == wl for r in rows)]
    if not panels:
        return
    cols = 3
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(16, 5.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, wl in zip(axes.flat, panels, strict=False):
        rs = [r for r in rows if r["workload"] == wl]
        by_time = wl in ("rsync", "ls")
        names, vals, lo, hi, colors = [], [], [], [], []
        for r in rs:
            xs = r["seconds"] if by_time else r["mbps"]
            names.append(r["system"].replace("boto3 ", "boto3\n").replace(" 4 threads",
                                                                          "\n4 threads"))
            colors.append(COLORS.get(r["system"], "#7f7f7f"))
            if xs:
                m = statistics.median(xs)
                vals.append(m)
                lo.append(m - min(xs))
                hi.append(max(xs) - m)
            else:
                vals.append(0)
                lo.append(0)
                hi.append(0)
        x = list(range(len(rs)))
        ax.bar(x, vals, color=colors, yerr=[lo, hi], capsize=4, edgecolor="black",
               linewidth=0.5)
        top = max([v + h for v, h in zip(vals, hi, strict=True)] + [1e-9])
        for i, (r, v) in enumerate(zip(rs, vals, strict=True)):
            if not r["seconds"]:
                ax.text(i, top * 0.02, "failed", ha="center", va="bottom", rotation=90,
                        color="red", fontsize=10)
            else:
                label = f"{v:.1f} s" if by_time else f"{v:.0f}"
                ax.text(i, v + hi[i] + top * 0.01, label, ha="center", va="bottom", fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=8.5, rotation=30, ha="right")
        ax.set_ylabel("seconds (lower is better)" if by_time else "MB/s (higher is better)")
        ax.set_title(titles.get(wl, wl), fontsize=11)
        ax.set_ylim(0, top * 1.18)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(header, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def rss_per_gib(series: list[Any]) -> list[tuple[int, float]]:
    """(GiB index, max VmRSS MiB) from the (GiB written, MiB, seconds) samples."""
    out: dict[int, float] = {}
    for g, mib, _ts in series:
        out[int(g)] = max(out.get(int(g), 0.0), mib)
    return sorted(out.items())


def plot_rss(rss: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = rss.get("series") or []
    if not series:
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot([s[0] for s in series], [s[1] for s in series], color=COLORS["s3mpfs"])
    ax.axhline(GOAL_RSS_MIB, color="red", linestyle="--", linewidth=1, label="goal: 100 MiB")
    tier = 1000 * 8 * MiB / GiB  # s3mpfs's default: parts grow 8 -> 16 MiB after part 1,000
    if series[-1][0] > tier:
        ax.axvline(tier, color="gray", linestyle=":", linewidth=1,
                   label="part 1,001: parts grow from 8 to 16 MiB")
    ax.set_xlabel("GiB written")
    ax.set_ylabel("s3mpfs daemon VmRSS, MiB")
    ax.set_ylim(0, max(GOAL_RSS_MIB * 1.2, max(s[1] for s in series) * 1.1))
    ax.set_title(f"s3mpfs RSS while writing {rss['bytes'] / GiB:.0f} GiB "
                 f"({rss.get('mbps', 0):.0f} MB/s)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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


def write_outputs(out: Path, info: dict[str, Any], sz: Sizes, rows: list[dict[str, Any]],
                  goals: list[dict[str, Any]], rss_long: dict[str, Any] | None,
                  profiles: dict[str, Any], *, runs: list[Run], notes: list[str],
                  tar_bytes: int, rsync_files: int) -> None:
    """results.md, results.json and the charts in `out`; the table and goals on stdout."""
    titles = {
        "write": f"write {sz.write / MiB:.0f} MiB",
        "tar": f"tar | cat {tar_bytes / MiB:.0f} MiB",
        "rsync": f"rsync -a {rsync_files} x 4 KiB",
        "rsync again": "rsync again (no changes)",
        "read": f"read {sz.read / MiB:.0f} MiB",
        "ls": f"ls -l {sz.ls_keys} keys",
        "parallel": f"4 writers x {sz.parallel_each / MiB:.0f} MiB",
    }
    out.mkdir(parents=True, exist_ok=True)
    v = info["versions"]
    s3fs_v = re.search(r"V(\d[\d.]*)", v["s3fs"])
    ceph_v = re.search(r"ceph version (\S+)", v["server"])
    server = f"Ceph RGW {ceph_v.group(1)}" if ceph_v else v["server"].split(",")[0]
    header = (f"{info['machine']}\n{server}; s3fs {s3fs_v.group(1) if s3fs_v else '?'}; "
              f"{v['rclone']}; boto3 {v['boto3']}; {sz.rounds} round(s), median and min-max; "
              f"loadavg {info['loadavg_start']} -> {info['loadavg_end']} (shared 2-core "
              "machine)")
    plot(rows, titles, out / "results.png", header)
    if rss_long and rss_long.get("series"):
        plot_rss(rss_long, out / "rss-10g.png")
    table = markdown_table(rows, titles)
    goal_lines = [f"| {g['goal']} | **{g['status']}** | {g['detail']} |" for g in goals]
    md = [
        "# Benchmark results: s3mpfs vs raw boto3, s3fs-fuse and rclone mount",
        "",
        f"Command: `{info['command']}` (started {info['started']}, took {info['minutes']} min)",
        "",
        f"Machine: {info['machine']}. Load average (1/5/15 min) at start {info['loadavg_start']}"
        f", at end {info['loadavg_end']}: other sessions' test runs share this 2-core machine,"
        f" so absolute numbers drift; rounds are interleaved so drift hits every system alike.",
        "",
        *([f"CPUs: {info['cpus']} (--split-cores)", ""] if info.get("cpus") else []),
        "Versions: " + "; ".join(f"{k} {val}" for k, val in v.items()),
        "",
        f"Sizes: write {sz.write / MiB:.0f} MiB, tar {tar_bytes} bytes, rsync "
        f"{rsync_files} x 4 KiB in 10 dirs, read {sz.read / MiB:.0f} MiB, ls "
        f"{sz.ls_keys} keys, parallel 4 x {sz.parallel_each / MiB:.0f} MiB; {sz.rounds} "
        f"round(s) ({sz.ls_rounds} for ls), interleaved.",
        "",
        "![results](results.png)",
        "",
        "## Summary (medians)",
        "",
        summary_table(rows, sz),
        "",
        "rclone-writes: close() returns before the upload; its times run until the objects "
        "are in S3. rsync: seconds and S3 requests per file. raw boto3: the best variant. "
        "Staging: the smallest per-run peak (rclone's cache keeps earlier rounds' files).",
        "",
        "## Goals",
        "",
        "| goal | status | measured |",
        "|---|---|---|",
        *goal_lines,
        "",
        "Durable peers are s3fs and rclone-off (their close() returns once the object is "
        "stored); rclone-writes is timed until its objects are in S3 and shown apart.",
        "",
        "## All figures",
        "",
        table,
        "",
        "- MB = 10^6 bytes. Ranges are min–max over the rounds. × raw boto3: MB/s over the "
        "best raw boto3 variant's (for rsync and ls: its seconds over this system's).",
        "- daemon peak RSS: VmHWM of the FUSE daemon, reset before each run "
        "(/proc/PID/clear_refs); max over runs.",
        "- CPU s/GiB: the daemon's utime+stime per GiB moved (raw boto3: this Python process's"
        "); in parentheses, CPU seconds per run where no data volume applies.",
        "- staging MiB: peak local disk the daemon used (regular files it held open, deleted "
        "ones included, plus its staging directory).",
        "- S3 requests per run: lines in the server's access log during the run, minus the "
        "suite's own control requests (HeadObject/ListObjectsV2 polls).",
        "",
        "## S3 requests by operation",
        "",
        requests_table(rows),
        "",
    ]
    if rss_long:
        md += ["## RSS over a long write", ""]
        if "error" in rss_long:
            md.append(f"FAILED: {rss_long['error']}")
        else:
            md += [f"{rss_long['bytes'] / GiB:.0f} GiB written once with `cat SRC ... | dd "
                   f"bs=1M`: {rss_long['seconds']:.0f} s ({rss_long['mbps']:.0f} MB/s), daemon "
                   f"CPU {rss_long['cpu_per_gib']:.2f} s/GiB; RSS idle "
                   f"{rss_long['rss_idle_mib']:.0f} MiB, max during the first GiB "
                   f"{rss_long['rss_max_first_gib']:.1f} MiB, max over the last half "
                   f"{rss_long['rss_max_last_half']:.1f} MiB, VmHWM "
                   f"{rss_long['vmhwm_mib']:.1f} MiB.", "",
                   "Max VmRSS per GiB written (MiB): " + ", ".join(
                       f"{g}: {m:.0f}" for g, m in rss_per_gib(rss_long["series"])),
                   "", "![rss](rss-10g.png)"]
        md.append("")
    if profiles:
        md += ["## Profiles of s3mpfs (py-spy)", ""]
        for wl, pr in profiles.items():
            md.append(f"### {wl}")
            md.append("")
            for k in ("flamegraph", "raw"):
                if k in pr:
                    md.append(f"- {k}: `{pr[k]}`")
            for r in pr.get("runs", []):
                md.append(f"- profiled run: {r['workload']} {_f(r['seconds'], '.2f')} s, "
                          f"{_f(r['mbps'], '.0f')} MB/s, daemon CPU {_f(r['cpu'], '.2f')} s "
                          "(py-spy --nonblocking, 100 Hz)")
            s = pr.get("summary") or {}
            if s.get("samples"):
                md.append(f"- {s['samples']} samples; by thread: "
                          + ", ".join(f"{c} {p}%" for c, p in s["threads"]))
                md.append("- by category (leaf-most matching frame): "
                          + ", ".join(f"{c} {p}%" for c, p in s["categories"]))
                md.append("- top functions (own samples): "
                          + ", ".join(f"`{f}` {p}%" for f, p in s["top_functions"][:10]))
            if "error" in pr:
                md.append(f"- error: {pr['error']}")
            md.append("")
    if notes:
        md += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    (out / "results.md").write_text("\n".join(md))
    info["tar_bytes"], info["rsync_files"] = tar_bytes, rsync_files
    data = {"info": info, "rows": rows, "goals": goals,
            "runs": [{**asdict(r), "mbps": r.mbps} for r in runs],
            "rss_long": rss_long, "profiles": profiles, "notes": notes}
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    log("\n" + table)
    log("\nGoals:")
    for g in goals:
        log(f"  {g['status']:<4}  {g['goal']}: {g['detail']}")
    log(f"\nloadavg at start {info['loadavg_start']}, at end {info['loadavg_end']}; "
        f"{info['minutes']} min")
    log(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'}"
        + (f", {out / 'rss-10g.png'}" if rss_long and rss_long.get("series") else ""))


if __name__ == "__main__":
    sys.exit(main())
