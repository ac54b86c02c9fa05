"""The suite's report: runs aggregated per (workload, system), the goals with PASS/MISS, the
tables, the charts (matplotlib, the bench extra) and results.md / results.json.

Figures: medians and min-max ranges over the rounds; x raw boto3 is MB/s over the best raw
boto3 variant's median (rsync, ls: its seconds over the system's). Goals are reported, never
tuned for.
"""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import GiB, MiB, log
from bench.measurements import BUSY_CORES, Run
from bench.systems import DURABLE_PEERS, FUSE_SYSTEMS
from bench.workloads import Sizes

GOAL_WRITE_VS_RAW = 0.9
GOAL_WRITE_VS_PEER = 2.0
GOAL_RSS_MIB = 100.0
GOAL_RSS_FLAT_MIB = 10.0
GOAL_RSYNC_VS_PEER = 4.0
GOAL_RSYNC_REQ_PER_FILE = 1.1  # directories and listings included
GOAL_RSYNC_VS_RAW = 1.5  # rsync's time over a put_object loop of the same files, at most
GOAL_READ_VS_RAW = 0.8


# -- aggregation over the rounds ----------------------------------------------------------------


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


# -- goals --------------------------------------------------------------------------------------


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
        add(f"rsync <= {GOAL_RSYNC_REQ_PER_FILE:.1f} requests per file",
            per <= GOAL_RSYNC_REQ_PER_FILE, f"{per:.3f} requests per file "
            f"({me['requests_median']:.0f} for {me['items']} files)", "rsync")
    else:
        add(f"rsync <= {GOAL_RSYNC_REQ_PER_FILE:.1f} requests per file", None,
            "no request counts")
    loops = [(r["system"], r["seconds_median"]) for r in rows if r["workload"] == "rsync"
             and r["system"].startswith("boto3") and r["seconds_median"]]
    raw = min(loops, key=lambda x: x[1]) if loops else None
    if me and me["seconds_median"] and raw:
        x = me["seconds_median"] / raw[1]
        add(f"rsync time <= {GOAL_RSYNC_VS_RAW}x a put_object loop of the same files",
            x <= GOAL_RSYNC_VS_RAW,
            f"s3mpfs {me['seconds_median']:.1f} s vs {raw[0]} {raw[1]:.1f} s = {x:.2f}x", "rsync")
    else:
        add(f"rsync time <= {GOAL_RSYNC_VS_RAW}x a put_object loop of the same files", None,
            "no data")
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


# -- tables -------------------------------------------------------------------------------------


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
        if "transferred" in ex and wl in ("rsync again", "rsync remount"):
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
            ("rsync remount", "seconds_median", "rsync again after a remount, s"),
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


# -- charts -------------------------------------------------------------------------------------


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


# -- results.md and results.json ----------------------------------------------------------------


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
        "rsync remount": "rsync again on a fresh mount (no changes)",
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
    # A run of many minutes must not end in an ImportError: the figures are in the tables.
    charts = importlib.util.find_spec("matplotlib") is not None
    if charts:
        plot(rows, titles, out / "results.png", header)
        if rss_long and rss_long.get("series"):
            plot_rss(rss_long, out / "rss-10g.png")
    else:
        notes = [*notes, "charts not drawn: matplotlib is missing (pip install -e '.[bench]')"]
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
    log(f"wrote {out / 'results.md'}, {out / 'results.json'}"
        + (f", {out / 'results.png'}" if charts else " (no charts: matplotlib is missing)")
        + (f", {out / 'rss-10g.png'}" if charts and rss_long and rss_long.get("series") else ""))
