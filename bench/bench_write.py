"""Write throughput: `cp` into an s3mpfs mount vs. a raw boto3 multipart upload.

    .venv/bin/python -m bench.bench_write [--size 512M] [--rounds 3] [--endpoint URL]

Without --endpoint a moto server is started on a free loopback port (and stopped by PID at the
end). Rounds are interleaved A B A B ...:
  A  `cp SRC MNT/obj-N`, timed from cp's start until it exits; cp exiting 0 means the object is
     durable (s3mpfs completes the multipart upload in close()). Size checked with HeadObject.
  B  the same file as a raw boto3 multipart upload: part-size parts, N threads, read in
     part-size chunks; timed from CreateMultipartUpload until CompleteMultipartUpload returns.
Both use the same botocore settings (path style, botocore's own checksums only when required,
standard retries) and send the same checksums (--checksum, s3mpfs's default crc64nvme: each
part carries its CRC64NVME, Complete the object's). Each object is deleted after its round
(moto keeps objects in memory).

Measured for the s3mpfs daemon (the python process running s3mpfs): CPU seconds (utime+stime,
/proc/PID/stat) over each cp, VmRSS sampled every 50 ms during the cp runs, VmHWM at the end.
MB = 1e6 bytes. Targets are printed, never asserted: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    MB,
    TEST_CREDENTIALS,
    GiB,
    MiB,
    MotoServer,
    Mount,
    RssSampler,
    children_cpu,
    cpu_seconds,
    loadavg,
    machine_busy_seconds,
    machine_facts,
    make_client,
    package_version,
    parse_size,
    self_cpu,
    status_kib,
    thread_cpu_seconds,
    tmpfs_dir,
    wait_until_quiet,
)

TARGET_RATIO = 0.9
TARGET_RSS_MIB = 100.0
# A run during which other processes (other sessions' tests on this shared machine) used more
# than this many cores on average is flagged; its ratio is reported separately.
BUSY_CORES = 0.3


@dataclass
class Run:
    system: str  # "s3mpfs" | "boto3"
    round: int
    seconds: float
    size: int
    client_cpu: float  # daemon CPU (s3mpfs) or this process's CPU (boto3)
    server_cpu: float | None = None  # moto's CPU over the run, when we started moto
    cp_cpu: float | None = None  # cp's own CPU (user+sys; sys includes the FUSE kernel side)
    complete_s: float | None = None  # boto3: Complete call; s3mpfs: commit time from its log
    rss_max_kib: int | None = None
    other_cpu: float | None = None  # CPU of every other process on the machine over the run
    main_cpu: float | None = None  # s3mpfs: the daemon's main thread (FUSE loop + trio)

    @property
    def disturbed(self) -> bool:
        """Other processes used more than BUSY_CORES cores on average during the run."""
        return self.other_cpu is not None and self.other_cpu / self.seconds > BUSY_CORES

    @property
    def mbps(self) -> float:
        return self.size / self.seconds / MB

    @property
    def mibps(self) -> float:
        return self.size / self.seconds / MiB

    @property
    def mbps_before_complete(self) -> float | None:
        """Throughput until close()/Complete started (s3mpfs: the commit also drains the
        parts still in flight, so this favours boto3 slightly)."""
        if self.complete_s is None or self.complete_s >= self.seconds:
            return None
        return self.size / (self.seconds - self.complete_s) / MB

    @property
    def cpu_per_gib(self) -> float:
        return self.client_cpu / (self.size / GiB)


def _make_source(path: Path, size: int, chunk: int = 8 * MiB) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


_COMMIT_RE = re.compile(r"stored (?P<key>\S+): (?P<size>\d+) bytes.*\(commit (?P<c>[\d.]+) s\)")


def _commit_time_from_log(log_file: Path, key: str) -> float | None:
    """s3mpfs logs 'stored KEY: N bytes, ..., (commit X s)' at INFO; best effort only."""
    with contextlib.suppress(OSError):
        for line in reversed(log_file.read_text(errors="replace").splitlines()):
            m = _COMMIT_RE.search(line)
            if m and m.group("key").endswith(key):
                return float(m.group("c"))
    return None


def _server_cpu(ctx: types.SimpleNamespace) -> float | None:
    """CPU seconds of the server's processes (moto, or the --server-pid ones), if known."""
    if not ctx.server_pids:
        return None
    return sum(cpu_seconds(pid) for pid in ctx.server_pids)


def _delta(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before


def run_cp(args: argparse.Namespace, ctx: types.SimpleNamespace, n: int) -> Run:
    key = f"obj-{n}"
    dst = ctx.mnt / key
    pid = ctx.mount.pid
    server_cpu0 = _server_cpu(ctx)
    cpu0 = cpu_seconds(pid)
    main0 = thread_cpu_seconds(pid).get(pid, 0.0)
    children0 = children_cpu()
    busy0 = machine_busy_seconds(processes_only=True)
    with RssSampler(pid, 0.05) as sampler:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["cp", str(ctx.src), str(dst)], stdin=subprocess.DEVNULL)
        try:
            rc = proc.wait(timeout=args.cp_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"cp into the mount took over {args.cp_timeout} s") from None
        seconds = time.perf_counter() - t0
    busy = machine_busy_seconds(processes_only=True) - busy0
    cpu = cpu_seconds(pid) - cpu0
    main_cpu = thread_cpu_seconds(pid).get(pid, 0.0) - main0
    cp_cpu = children_cpu() - children0
    server_cpu = _delta(_server_cpu(ctx), server_cpu0)
    if rc != 0:
        raise RuntimeError(f"cp exited with {rc}; see {ctx.mount.log_file}")
    head = ctx.client.head_object(Bucket=ctx.bucket, Key=key)
    if head["ContentLength"] != args.size:
        raise RuntimeError(f"{key}: HeadObject says {head['ContentLength']} bytes, "
                           f"expected {args.size}")
    run = Run("s3mpfs", n, seconds, args.size, cpu, server_cpu, cp_cpu,
              _commit_time_from_log(ctx.mount.log_file, key), sampler.max_kib,
              busy - cpu - cp_cpu - (server_cpu or 0), main_cpu)
    ctx.client.delete_object(Bucket=ctx.bucket, Key=key)
    return run


def _b64(number: int, size: int) -> str:
    return base64.b64encode(number.to_bytes(size, "big")).decode()


def _part_checksum(mode: str, data: bytes) -> tuple[dict[str, str], int]:
    """The UploadPart checksum parameters s3mpfs sends for --checksum MODE (see its
    checksums.py and store/boto.py), and the raw CRC for combining."""
    if mode == "crc64nvme":
        from awscrt import checksums

        crc = checksums.crc64nvme(data)
        return {"ChecksumCRC64NVME": _b64(crc, 8), "ChecksumAlgorithm": "CRC64NVME"}, crc
    if mode == "crc32c":
        from awscrt import checksums

        crc = checksums.crc32c(data)
        return {"ChecksumCRC32C": _b64(crc, 4), "ChecksumAlgorithm": "CRC32C"}, crc
    if mode == "md5":
        return {"ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode()}, 0
    return {}, 0


def run_boto3(args: argparse.Namespace, ctx: types.SimpleNamespace, n: int) -> Run:
    """A raw multipart upload carrying the same checksums as s3mpfs's --checksum mode:
    crc64nvme = per-part CRC64NVME, FULL_OBJECT upload whose Complete carries the object's
    CRC64NVME combined from the parts'; crc32c = per-part CRC32C (composite); md5 =
    Content-MD5 per part; off = nothing beyond SigV4's payload hash."""
    key = f"raw-{n}"
    part_size, size, mode = args.part_size, args.size, args.checksum
    count = max(1, -(-size // part_size))
    client, bucket = ctx.client, ctx.bucket
    server_cpu0 = _server_cpu(ctx)
    cpu0 = self_cpu()
    busy0 = machine_busy_seconds(processes_only=True)
    create: dict[str, str] = {}
    if mode in ("crc64nvme", "crc32c"):
        create["ChecksumAlgorithm"] = mode.upper()
    if mode == "crc64nvme":
        create["ChecksumType"] = "FULL_OBJECT"
    fd = os.open(ctx.src, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key,
                                                   **create)["UploadId"]
        try:
            def part(number: int) -> tuple[dict[str, Any], int, int]:
                data = os.pread(fd, part_size, (number - 1) * part_size)
                extra, crc = _part_checksum(mode, data)
                r = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                       PartNumber=number, Body=data, **extra)
                entry = {"PartNumber": number, "ETag": r["ETag"]}
                entry.update({k: v for k, v in extra.items() if k.startswith("Checksum")
                              and k != "ChecksumAlgorithm"})
                return entry, crc, len(data)

            with ThreadPoolExecutor(max_workers=args.threads) as pool:
                done = list(pool.map(part, range(1, count + 1)))
            complete: dict[str, Any] = {}
            if mode == "crc64nvme":
                from awscrt import checksums

                crc = done[0][1]
                for _, part_crc, length in done[1:]:
                    crc = checksums.combine_crc64nvme(crc, part_crc, length)
                complete = {"ChecksumCRC64NVME": _b64(crc, 8), "ChecksumType": "FULL_OBJECT"}
            t1 = time.perf_counter()
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": [entry for entry, _, _ in done]}, **complete)
        except BaseException:
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        t2 = time.perf_counter()
    finally:
        os.close(fd)
    busy = machine_busy_seconds(processes_only=True) - busy0
    cpu = self_cpu() - cpu0
    server_cpu = _delta(_server_cpu(ctx), server_cpu0)
    head = client.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size:
        raise RuntimeError(f"{key}: HeadObject says {head['ContentLength']} bytes")
    client.delete_object(Bucket=bucket, Key=key)
    return Run("boto3", n, t2 - t0, size, cpu, server_cpu, None, t2 - t1, None,
               busy - cpu - (server_cpu or 0))


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def report(args: argparse.Namespace, ctx: types.SimpleNamespace, runs: list[Run]) -> None:
    print()
    print(f"{'round':>5} {'system':<7} {'seconds':>8} {'MB/s':>7} {'MiB/s':>7} {'cpu_s':>6} "
          f"{'main':>5} {'cpu/GiB':>7} {'server_cpu':>10} {'cp_cpu':>6} {'complete_s':>10} "
          f"{'rss_MiB':>7} {'other_cpu':>9}")
    for r in runs:
        print(f"{r.round:>5} {r.system:<7} {r.seconds:>8.2f} {r.mbps:>7.1f} {r.mibps:>7.1f} "
              f"{r.client_cpu:>6.2f} {_fmt(r.main_cpu):>5} {r.cpu_per_gib:>7.2f} "
              f"{_fmt(r.server_cpu):>10} "
              f"{_fmt(r.cp_cpu):>6} {_fmt(r.complete_s):>10} "
              f"{_fmt(r.rss_max_kib / 1024 if r.rss_max_kib else None, '.1f'):>7} "
              f"{_fmt(r.other_cpu):>9}{' *' if r.disturbed else ''}")
    for line in (
        "cpu_s: CPU of the s3mpfs daemon (main: its main thread = FUSE loop, trio, copies into",
        "  part buffers; the rest is boto3 in worker threads), or of this process for boto3",
        "server_cpu: moto's CPU when started here, else the --server-pid processes'",
        "cp_cpu: cp's user+sys (the kernel's FUSE copy is in its sys time)",
        "complete_s: boto3's Complete call; s3mpfs: commit time from its log (drains the parts",
        "  in flight, sends the tail, completes)",
        "rss_MiB: daemon VmRSS, max of 50 ms samples during the cp",
        "other_cpu: user+sys CPU seconds of every other process: interference on this "
        f"{os.cpu_count()}-core",
        f"  machine; * = more than {BUSY_CORES} cores on average (a disturbed run)",
    ):
        print("  " + line)

    by = {s: [r for r in runs if r.system == s] for s in ("s3mpfs", "boto3")}
    med = {s: statistics.median(r.mbps for r in rs) for s, rs in by.items()}
    print()
    print(f"{'system':<7} {'MB/s median':>11} {'range':>13} {'MiB/s median':>12} "
          f"{'cpu s/GiB':>9} {'complete_s':>10} {'MB/s before complete':>20}")
    for s, rs in by.items():
        lo, hi = min(r.mbps for r in rs), max(r.mbps for r in rs)
        comp = [r.complete_s for r in rs if r.complete_s is not None]
        pre = [x for x in (r.mbps_before_complete for r in rs) if x is not None]
        print(f"{s:<7} {med[s]:>11.1f} {f'{lo:.1f}-{hi:.1f}':>13} "
              f"{statistics.median(r.mibps for r in rs):>12.1f} "
              f"{statistics.median(r.cpu_per_gib for r in rs):>9.2f} "
              f"{_fmt(statistics.median(comp) if comp else None):>10} "
              f"{_fmt(statistics.median(pre) if pre else None, '.1f'):>20}")
    ratio = med["s3mpfs"] / med["boto3"]
    per_round = [a.mbps / b.mbps for a, b in zip(by["s3mpfs"], by["boto3"], strict=True)]
    print(f"ratio s3mpfs/boto3: {ratio:.3f} (median/median); per round: "
          + " ".join(f"{x:.3f}" for x in per_round))
    quiet = {s: [r for r in rs if not r.disturbed] for s, rs in by.items()}
    if all(quiet.values()) and any(r.disturbed for r in runs):
        qm = {s: statistics.median(r.mbps for r in rs) for s, rs in quiet.items()}
        print(f"undisturbed runs only ({len(quiet['s3mpfs'])} s3mpfs, {len(quiet['boto3'])} "
              f"boto3): s3mpfs {qm['s3mpfs']:.1f} MB/s, boto3 {qm['boto3']:.1f} MB/s, ratio "
              f"{qm['s3mpfs'] / qm['boto3']:.3f}")
    elif any(r.disturbed for r in runs):
        print("undisturbed runs only: not enough (every run of one side was disturbed)")
    sampled = max((r.rss_max_kib or 0) for r in by["s3mpfs"]) / 1024
    peak = ctx.hwm_kib / 1024 if ctx.hwm_kib else sampled
    print(f"daemon RSS: VmHWM {peak:.1f} MiB (whole life), max sampled VmRSS during cp "
          f"{sampled:.1f} MiB, VmRSS after mount {ctx.rss_idle_kib / 1024:.1f} MiB")
    cpu_gib = statistics.median(r.cpu_per_gib for r in by["s3mpfs"])
    ok_ratio = "met" if ratio >= TARGET_RATIO else "MISSED"
    ok_rss = "met" if peak <= TARGET_RSS_MIB else "MISSED"
    print(f"targets: ratio >= {TARGET_RATIO} ({ok_ratio}), peak RSS <= {TARGET_RSS_MIB:.0f} MiB "
          f"({ok_rss})")
    print(f"RESULT write_ratio={ratio:.3f} s3mpfs_MBps={med['s3mpfs']:.1f} "
          f"boto3_MBps={med['boto3']:.1f} peak_rss_MiB={peak:.1f} cpu_s_per_GiB={cpu_gib:.2f} "
          f"disturbed_runs={sum(r.disturbed for r in runs)}/{len(runs)}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_write", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="512M", help="source file size (binary units; 512M)")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    p.add_argument("--endpoint", help="use this S3 server instead of starting moto")
    p.add_argument("--access-key", default=None, help="default: $AWS_ACCESS_KEY_ID, or "
                   "'testing' for the moto started here")
    p.add_argument("--secret-key", default=None, help="default: $AWS_SECRET_ACCESS_KEY")
    p.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    p.add_argument("--bucket", default=None, help="default: a new s3mpfs-bench-XXXX bucket")
    p.add_argument("--part-size", default="8M", help="both sides (default 8M)")
    p.add_argument("--upload-concurrency", type=int, default=4,
                   help="s3mpfs --upload-concurrency (default 4)")
    p.add_argument("--threads", type=int, default=4, help="raw boto3 threads (default 4)")
    p.add_argument("--checksum", choices=("crc64nvme", "crc32c", "md5", "off"),
                   default="crc64nvme", help="s3mpfs --checksum, mirrored by the raw boto3 "
                   "upload (default crc64nvme, s3mpfs's default)")
    p.add_argument("--mount-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for s3mpfs (repeatable), e.g. --mount-arg=--debug")
    p.add_argument("--tmpdir", default=None, help="where the source file and mountpoint go "
                   "(default: /dev/shm when it has room, so no disk writeback interferes)")
    p.add_argument("--moto-tmpdir", default=None, help="TMPDIR for the moto started here, "
                   "which stores parts and objects in temp files (default: /dev/shm if room)")
    p.add_argument("--settle", type=float, default=20, metavar="SECONDS",
                   help="before each timed run wait up to this long for the machine to be idle "
                   "(< 0.25 cores busy); 0 = don't wait (default 20)")
    p.add_argument("--disable-crt", action="store_true",
                   help="set BOTO_DISABLE_CRT=true for both sides: botocore then signs with its "
                   "pure-Python SigV4 instead of awscrt's, which it uses whenever awscrt is "
                   "importable (it is: s3mpfs depends on it for checksums)")
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="with --endpoint: a server PID whose CPU to report (repeatable; e.g. "
                   "radosgw and ceph-osd)")
    p.add_argument("--cp-timeout", type=float, default=None)
    args = p.parse_args(argv)
    args.size = parse_size(args.size)
    args.part_size = parse_size(args.part_size)
    if args.rounds < 1 or args.size < 1:
        p.error("--rounds and --size must be positive")
    if args.cp_timeout is None:
        args.cp_timeout = 120 + args.size / (2 * MB)  # 2 MB/s would be broken anyway
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.disable_crt:
        # Read by botocore.compat at import time; boto3 is imported later (make_client), and
        # the daemon inherits the environment.
        os.environ["BOTO_DISABLE_CRT"] = "true"
    signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="s3mpfs-bench-",
                                dir=args.tmpdir or tmpfs_dir(2 * args.size + GiB)))
    moto: MotoServer | None = None
    mount: Mount | None = None
    ctx = types.SimpleNamespace(server_pids=args.server_pid, hwm_kib=None, rss_idle_kib=0)
    client = None
    bucket = args.bucket or f"s3mpfs-bench-{secrets.token_hex(4)}"
    made_bucket = False
    try:
        if args.endpoint:
            endpoint = args.endpoint
            access = args.access_key or os.environ.get("AWS_ACCESS_KEY_ID")
            secret = args.secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
            if not (access and secret):
                print("--endpoint needs --access-key/--secret-key or AWS_* in the environment",
                      file=sys.stderr)
                return 2
            server = f"external {endpoint}"
        else:
            moto_tmp = args.moto_tmpdir or tmpfs_dir(4 * args.size + GiB)
            moto = MotoServer(tmp / "moto.log", moto_tmp)
            moto.start()
            endpoint = moto.url
            access = args.access_key or TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"]
            secret = args.secret_key or TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
            ctx.server_pids = [moto.proc.pid] if moto.proc else []
            server = (f"moto {package_version('moto')} (started here, {endpoint}, "
                      f"TMPDIR={moto_tmp or 'default'})")
        client = make_client(endpoint, access, secret, args.region,
                             max(10, args.threads + 2))
        client.create_bucket(Bucket=bucket)
        made_bucket = True
        if args.endpoint:
            hdrs = client.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
            server += f", Server header: {hdrs.get('server', '(none)')}"

        print(f"machine: {machine_facts()} loadavg={loadavg()}")
        print(f"server: {server}")
        from botocore.compat import HAS_CRT

        print(f"versions: boto3 {package_version('boto3')}, pyfuse3 {package_version('pyfuse3')}"
              f", trio {package_version('trio')}, s3mpfs {package_version('s3mpfs')}; botocore "
              f"signs with {'awscrt ' + package_version('awscrt') if HAS_CRT else 'pure Python'}"
              " (both sides)")
        print(f"workload: {args.size} bytes ({args.size / MiB:.0f} MiB) random, part size "
              f"{args.part_size / MiB:g} MiB, {args.rounds} rounds A/B, checksum {args.checksum} "
              f"on both sides; s3mpfs --upload-concurrency {args.upload_concurrency}"
              f"{' ' + ' '.join(args.mount_arg) if args.mount_arg else ''}; "
              f"boto3 {args.threads} threads")

        src = tmp / "source.bin"
        _make_source(src, args.size)
        mnt = tmp / "mnt"
        mnt.mkdir()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
               "AWS_DEFAULT_REGION": args.region}
        env.pop("AWS_PROFILE", None)
        mount = Mount(bucket, mnt, endpoint, env, tmp / "s3mpfs.log",
                      ("--part-size", str(args.part_size),
                       "--upload-concurrency", str(args.upload_concurrency),
                       "--checksum", args.checksum, *args.mount_arg))
        mount.start()
        ctx.__dict__.update(src=src, mnt=mnt, mount=mount, client=client, bucket=bucket)
        ctx.rss_idle_kib = status_kib(mount.pid, "VmRSS")
        print(f"s3mpfs daemon pid {mount.pid}, server pids {ctx.server_pids}, mount {mnt}, "
              f"temp dir {tmp}")

        runs: list[Run] = []
        for n in range(1, args.rounds + 1):
            for fn in (run_cp, run_boto3):
                if args.settle > 0:
                    quiet, cores = wait_until_quiet(timeout=args.settle)
                    if not quiet:
                        print(f"  note: machine still busy ({cores:.2f} cores) after "
                              f"{args.settle:.0f} s; measuring anyway", flush=True)
                r = fn(args, ctx, n)
                runs.append(r)
                print(f"  round {n} {r.system:<7} {r.seconds:7.2f} s {r.mbps:7.1f} MB/s",
                      flush=True)
        ctx.hwm_kib = status_kib(mount.pid, "VmHWM")
        report(args, ctx, runs)
        print(f"loadavg at the end: {loadavg()}")
        return 0
    except BaseException:
        for log in (tmp / "s3mpfs.log", tmp / "s3mpfs.stderr"):
            with contextlib.suppress(OSError):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- last lines of {log.name}:", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        if mount is not None:
            mount.stop()
        if client is not None and made_bucket and args.endpoint:
            # Our own objects are deleted per round; remove anything left and the bucket.
            with contextlib.suppress(Exception):
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                    for o in page.get("Contents", []):
                        client.delete_object(Bucket=bucket, Key=o["Key"])
                for page in client.get_paginator("list_multipart_uploads").paginate(
                        Bucket=bucket):
                    for u in page.get("Uploads", []):
                        client.abort_multipart_upload(Bucket=bucket, Key=u["Key"],
                                                      UploadId=u["UploadId"])
                client.delete_bucket(Bucket=bucket)
        if moto is not None:
            moto.stop()
        if mount is None or not os.path.ismount(tmp / "mnt"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"warning: {tmp / 'mnt'} is still mounted; left {tmp} in place",
                  file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
