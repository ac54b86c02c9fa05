"""The workloads the suite runs on every system, and the data they use.

  write     dd if=SRC of=MNT/KEY bs=1M; durable when dd exits (close)
  tar       tar cf - DIR | cat > MNT/x.tar (128 files of 4 MiB)
  rsync     rsync -a --stats of 4 KiB files in 10 directories into a new directory, then the
            same rsync again (files re-transferred, from --stats), and once more on a
            freshly mounted daemon ("rsync remount": every attribute read from S3 again)
  read      read(2) of one object in 1 MiB requests after posix_fadvise(DONTNEED)
  ls        ls -l of a directory of many keys on a fresh mount
  parallel  4 dd writers at once, each its own slice of SRC
  rss-10g   (--rss-10g) cat SRC ten times | dd of=MNT/big through s3mpfs, RSS sampled

Raw boto3 runs each in its variants (WORKLOADS): the limit a FUSE system is compared with.
Each w_NAME(target, round, variant) runs one round on one target inside a Recorder window,
then checks what was stored (HeadObject size, or the key count) and deletes it, outside the
timing. Sources live on a tmpfs (no disk reads in the timings).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    MB,
    GiB,
    MiB,
    cpu_seconds,
    drop_cached,
    loadavg,
    log,
    read_through,
    reset_hwm,
    run_cmd,
    status_kib,
)
from bench.measurements import Recorder, Sampler
from bench.systems import FUSE_SYSTEMS, Mounts, Target


@dataclass
class Sizes:
    write: int
    tar: int
    rsync_files: int
    read: int
    ls_keys: int
    parallel_each: int
    rounds: int
    ls_rounds: int
    rss_total: int


WORKLOADS: dict[str, tuple[str, list[str], tuple[str, ...]]] = {
    # key: (title, raw variants, FUSE systems)
    "write": ("1 GiB sequential write (dd bs=1M), durable", ["upload_file", "MPU 4 threads"],
              FUSE_SYSTEMS),
    "tar": ("tar cf - DIR | cat > mnt/x.tar", ["upload_fileobj from the pipe"],
            FUSE_SYSTEMS),
    "rsync": ("rsync -a of 1,000 x 4 KiB files, 10 dirs", ["put_object loop, 1 thread"],
              FUSE_SYSTEMS),
    "read": ("1 GiB sequential read, cold", ["download_file", "get_object"],
             ("s3mpfs", "s3fs", "rclone-off")),
    "ls": ("ls -l of 10,000 keys, fresh mount", ["list_objects_v2"],
           ("s3mpfs", "s3fs", "rclone-off")),
    "parallel": ("4 parallel writers x 256 MiB", ["4 x MPU 4 threads"], FUSE_SYSTEMS),
}

_XFER_RE = re.compile(r"Number of regular files transferred: ([\d,]+)")


class Workloads:
    """The workloads against one bucket: `raw` is the boto3 client measured as "raw boto3",
    `ctl` the suite's own (setup, checks, cleanup; its requests are not counted)."""

    def __init__(self, sz: Sizes, rec: Recorder, mounts: Mounts, raw: Any, ctl: Any,
                 bucket: str, tmpfs: Path, *, ls_timeout: float, rsync_timeout: float) -> None:
        self.sz, self.rec, self.mounts = sz, rec, mounts
        self.raw, self.ctl, self.bucket, self.tmpfs = raw, ctl, bucket, tmpfs
        self.ls_timeout, self.rsync_timeout = ls_timeout, rsync_timeout

    # -- the bucket --

    def delete_prefix(self, prefix: str) -> int:
        n = 0
        for page in self.ctl.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            for i in range(0, len(keys), 1000):
                self.ctl.delete_objects(Bucket=self.bucket,
                                        Delete={"Objects": keys[i:i + 1000], "Quiet": True})
            n += len(keys)
        return n

    def verify_sizes(self, keys: dict[str, int]) -> None:
        for key, size in keys.items():
            got = self.ctl.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
            if got != size:
                raise RuntimeError(f"{key}: stored {got} bytes, expected {size}")

    # -- durability for rclone-writes --

    def wait_stored(self, t: Target, keys: dict[str, int] | None = None,
                    prefix: str | None = None, count: int = 0, timeout: float = 900) -> None:
        """For a mount whose close() does not wait for the upload: poll S3 until the objects
        are there (HeadObject per key, or ListObjectsV2 of a prefix until `count` keys)."""
        if t.durable_at_close:
            return
        deadline = time.monotonic() + timeout
        pending = dict(keys or {})
        while True:
            if prefix is not None:
                n = 0
                for page in self.ctl.get_paginator("list_objects_v2").paginate(
                        Bucket=self.bucket, Prefix=prefix):
                    n += sum(1 for o in page.get("Contents", [])
                             if not o["Key"].endswith("/")
                             and not o["Key"].rsplit("/", 1)[-1].startswith("."))
                if n >= count:
                    return
            else:
                for key, size in list(pending.items()):
                    with contextlib.suppress(Exception):
                        if self.ctl.head_object(Bucket=self.bucket,
                                                Key=key)["ContentLength"] == size:
                            del pending[key]
                if not pending:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"objects not in S3 {timeout:.0f} s after close")
            time.sleep(0.1)

    # -- source data --

    def make_sources(self) -> None:
        t0 = time.monotonic()
        self.src = self.tmpfs / "src.bin"
        size = max(self.sz.write, self.sz.read, 4 * self.sz.parallel_each)
        with open(self.src, "wb") as f:
            left = size
            while left:
                n = min(8 * MiB, left)
                f.write(os.urandom(n))
                left -= n
        self.tar_dir = self.tmpfs / "tartree"
        per_file = 4 * MiB
        nfiles = max(1, self.sz.tar // per_file)
        for i in range(nfiles):
            d = self.tar_dir / f"d{i % 4}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:04d}.bin").write_bytes(os.urandom(per_file))
        proc = subprocess.Popen(["tar", "cf", "-", "-C", str(self.tmpfs), "tartree"],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        self.tar_bytes = 0
        while chunk := proc.stdout.read(MiB):
            self.tar_bytes += len(chunk)
        proc.wait()
        self.rs_dir = self.tmpfs / "rstree"
        self.rs_files: list[str] = []
        per_dir = max(1, self.sz.rsync_files // 10)
        past = time.time() - 86400
        for i in range(10):
            d = self.rs_dir / f"d{i}"
            d.mkdir(parents=True)
            for j in range(per_dir):
                p = d / f"f{j:04d}"
                p.write_bytes(os.urandom(4096))
                os.utime(p, (past, past))
                self.rs_files.append(f"d{i}/f{j:04d}")
        log(f"sources on {self.tmpfs}: {size / MiB:.0f} MiB file, tar tree of {nfiles} x 4 MiB "
            f"({self.tar_bytes} bytes as tar), rsync tree {len(self.rs_files)} x 4 KiB in 10 "
            f"directories ({time.monotonic() - t0:.1f} s)")

    # -- workloads: each returns nothing; windows record the runs --

    def timeout_for(self, nbytes: int) -> float:
        return 120 + nbytes / (3 * MB)

    def w_write(self, t: Target, n: int, variant: str = "") -> None:
        size = self.sz.write
        key = f"write-{t.slug}-{n}"
        if t.raw:
            from boto3.s3.transfer import TransferConfig

            with self.rec.window("write", t, n, nbytes=size):
                if variant == "upload_file":
                    self.raw.upload_file(str(self.src), self.bucket, key, Config=TransferConfig(
                        multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB))
                else:
                    self.manual_mpu(key, 0, size, threads=4)
        else:
            assert t.mnt is not None
            with self.rec.window("write", t, n, nbytes=size) as run:
                t0 = time.perf_counter()
                run_cmd(["dd", f"if={self.src}", f"of={t.mnt / key}", "bs=1M",
                         f"count={size // MiB}", "status=none"], self.timeout_for(size))
                if not t.durable_at_close:
                    run.extra["close_s"] = time.perf_counter() - t0
                self.wait_stored(t, {key: size})
        try:
            self.verify_sizes({key: size})
        finally:
            self.ctl.delete_object(Bucket=self.bucket, Key=key)

    def manual_mpu(self, key: str, offset: int, size: int, threads: int = 4,
                   part: int = 8 * MiB) -> None:
        """A raw multipart upload of SRC[offset:offset+size]: 8 MiB parts, `threads` threads."""
        count = max(1, -(-size // part))
        upload_id = self.raw.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        fd = os.open(self.src, os.O_RDONLY)
        try:
            def one(number: int) -> dict[str, Any]:
                start = (number - 1) * part
                data = os.pread(fd, min(part, size - start), offset + start)
                r = self.raw.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                         PartNumber=number, Body=data)
                return {"PartNumber": number, "ETag": r["ETag"]}

            with ThreadPoolExecutor(max_workers=threads) as pool:
                parts = list(pool.map(one, range(1, count + 1)))
            self.raw.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                               MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                self.raw.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        finally:
            os.close(fd)

    def w_tar(self, t: Target, n: int, variant: str = "") -> None:
        key = f"tar-{t.slug}-{n}.tar"
        size = self.tar_bytes
        if t.raw:
            from boto3.s3.transfer import TransferConfig

            with self.rec.window("tar", t, n, nbytes=size):
                proc = subprocess.Popen(["tar", "cf", "-", "-C", str(self.tmpfs), "tartree"],
                                        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
                try:
                    self.raw.upload_fileobj(proc.stdout, self.bucket, key, Config=TransferConfig(
                        multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB))
                finally:
                    if proc.wait(60) != 0:
                        raise RuntimeError(f"tar exited with {proc.returncode}")
        else:
            assert t.mnt is not None
            with self.rec.window("tar", t, n, nbytes=size) as run:
                t0 = time.perf_counter()
                run_cmd([f"set -o pipefail; tar cf - -C {self.tmpfs} tartree | cat > "
                         f"{t.mnt / key}"], self.timeout_for(size), shell=True)
                if not t.durable_at_close:
                    run.extra["close_s"] = time.perf_counter() - t0
                self.wait_stored(t, {key: size})
        try:
            self.verify_sizes({key: size})
        finally:
            self.ctl.delete_object(Bucket=self.bucket, Key=key)


    def w_rsync(self, t: Target, n: int, variant: str = "") -> None:
        prefix = f"rsync-{t.slug}-{n}/"
        files = len(self.rs_files)
        nbytes = 0  # figures per file, not per byte
        try:
            if t.raw:
                with self.rec.window("rsync", t, n, nbytes=nbytes, items=files):
                    for rel in self.rs_files:
                        self.raw.put_object(Bucket=self.bucket, Key=prefix + rel,
                                            Body=(self.rs_dir / rel).read_bytes())
            else:
                assert t.mnt is not None
                dst = t.mnt / prefix
                cmd = ["rsync", "-a", "--stats", f"{self.rs_dir}/", f"{dst}/"]
                timeout = self.rsync_timeout
                with self.rec.window("rsync", t, n, nbytes=nbytes, items=files) as run:
                    t0 = time.perf_counter()
                    r = run_cmd(cmd, timeout, ok_codes=(0, 23, 24))
                    if r.returncode:
                        run.extra["rsync_exit"] = r.returncode
                        run.extra["rsync_error"] = r.stderr.strip().splitlines()[-1][:200]
                    m = _XFER_RE.search(r.stdout)
                    run.extra["transferred"] = int(m.group(1).replace(",", "")) if m else -1
                    if not t.durable_at_close:
                        run.extra["close_s"] = time.perf_counter() - t0
                    self.wait_stored(t, prefix=prefix, count=files)
                self.rsync_again(t, n, "rsync again", cmd)
                # A fresh daemon of the same system (its caches empty, as after a reboot):
                # what a nightly backup costs, every attribute read from S3 again.
                fresh = self.mounts.mount(t.system, f"rsync-remount-{n}")
                assert fresh.mnt is not None
                try:
                    self.rsync_again(fresh, n, "rsync remount",
                                     [*cmd[:-1], f"{fresh.mnt / prefix}/"])
                finally:
                    self.mounts.unmount(fresh)
            stored = sum(
                1 for page in self.ctl.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix)
                for o in page.get("Contents", []) if not o["Key"].endswith("/"))
            if stored != files:
                raise RuntimeError(f"{prefix}: {stored} objects stored, expected {files}")
        finally:
            self.delete_prefix(prefix)

    def rsync_again(self, t: Target, n: int, label: str, cmd: list[str]) -> None:
        """The same rsync once more: nothing changed, so nothing should be sent."""
        files = len(self.rs_files)
        with self.rec.window(label, t, n, nbytes=0, items=files) as run:
            r = run_cmd(cmd, self.rsync_timeout, ok_codes=(0, 23, 24))
            if r.returncode:
                run.extra["rsync_exit"] = r.returncode
            m = _XFER_RE.search(r.stdout)
            run.extra["transferred"] = int(m.group(1).replace(",", "")) if m else -1

    def setup_read(self) -> None:
        from boto3.s3.transfer import TransferConfig

        self.read_key = "read-src.bin"
        src = self.src
        if self.sz.read != self.src.stat().st_size:
            src = self.tmpfs / "read.bin"
            with open(self.src, "rb") as f, open(src, "wb") as g:
                g.write(f.read(self.sz.read))
        self.ctl.upload_file(str(src), self.bucket, self.read_key, Config=TransferConfig(
            multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB))
        if src != self.src:
            src.unlink()

    def w_read(self, t: Target, n: int, variant: str = "") -> None:
        size = self.sz.read
        if t.raw:
            if variant == "download_file":
                from boto3.s3.transfer import TransferConfig

                dst = self.tmpfs / "download.bin"
                try:
                    with self.rec.window("read", t, n, nbytes=size):
                        self.raw.download_file(self.bucket, self.read_key, str(dst),
                                               Config=TransferConfig(
                                                   multipart_threshold=8 * MiB,
                                                   multipart_chunksize=8 * MiB))
                    if dst.stat().st_size != size:
                        raise RuntimeError(f"downloaded {dst.stat().st_size} bytes")
                finally:
                    dst.unlink(missing_ok=True)
            else:
                with self.rec.window("read", t, n, nbytes=size):
                    total = 0
                    body = self.raw.get_object(Bucket=self.bucket, Key=self.read_key)["Body"]
                    try:
                        while chunk := body.read(MiB):
                            total += len(chunk)
                    finally:
                        body.close()
                    if total != size:
                        raise RuntimeError(f"get_object returned {total} bytes")
            return
        assert t.mnt is not None
        path = t.mnt / self.read_key
        drop_cached(path)  # outside the window
        with self.rec.window("read", t, n, nbytes=size):
            read_through(path, size)

    def setup_ls(self) -> None:
        t0 = time.monotonic()

        def put(i: int) -> None:
            self.ctl.put_object(Bucket=self.bucket, Key=f"ls/f-{i:06d}", Body=b"x" * 100)

        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(put, range(self.sz.ls_keys)))
        log(f"  created {self.sz.ls_keys} keys under ls/ in {time.monotonic() - t0:.1f} s")

    def w_ls(self, t: Target, n: int, variant: str = "") -> None:
        keys = self.sz.ls_keys
        if t.raw:
            with self.rec.window("ls", t, n, items=keys):
                got = 0
                for page in self.raw.get_paginator("list_objects_v2").paginate(
                        Bucket=self.bucket, Prefix="ls/", Delimiter="/"):
                    got += len(page.get("Contents", []))
                if got != keys:
                    raise RuntimeError(f"listed {got} keys, expected {keys}")
            return
        assert t.mnt is not None
        with self.rec.window("ls", t, n, items=keys):
            r = run_cmd([f"ls -l {t.mnt / 'ls'}"], self.ls_timeout, shell=True)
            lines = r.stdout.count("\n")
            if lines != keys + 1:
                raise RuntimeError(f"ls -l printed {lines} lines, expected {keys + 1}")

    def w_parallel(self, t: Target, n: int, variant: str = "") -> None:
        each = self.sz.parallel_each
        keys = {f"par-{t.slug}-{n}-{i}": each for i in range(4)}
        try:
            if t.raw:
                with self.rec.window("parallel", t, n, nbytes=4 * each), \
                        ThreadPoolExecutor(max_workers=4) as pool:
                    list(pool.map(lambda i: self.manual_mpu(f"par-{t.slug}-{n}-{i}", i * each,
                                                            each, threads=4), range(4)))
            else:
                assert t.mnt is not None
                mnt = t.mnt
                with self.rec.window("parallel", t, n, nbytes=4 * each) as run:
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(max_workers=4) as pool:
                        list(pool.map(lambda i: run_cmd(
                            ["dd", f"if={self.src}", f"of={mnt / f'par-{t.slug}-{n}-{i}'}",
                             "bs=1M", f"skip={i * each // MiB}", f"count={each // MiB}",
                             "status=none"], self.timeout_for(4 * each)), range(4)))
                    if not t.durable_at_close:
                        run.extra["close_s"] = time.perf_counter() - t0
                    self.wait_stored(t, keys)
            self.verify_sizes(keys)
        finally:
            for key in keys:
                with contextlib.suppress(Exception):
                    self.ctl.delete_object(Bucket=self.bucket, Key=key)

    def setup(self, wl: str) -> None:
        """Store what a workload reads (read: its object; ls: its keys)."""
        if wl == "read":
            self.setup_read()
        elif wl == "ls":
            self.setup_ls()

    def teardown(self, wl: str) -> None:
        """Delete what setup() stored."""
        if wl == "read":
            with contextlib.suppress(Exception):
                self.ctl.delete_object(Bucket=self.bucket, Key=self.read_key)
        elif wl == "ls":
            with contextlib.suppress(Exception):
                self.delete_prefix("ls/")

    # -- RSS over a long write --

    def rss_long(self, elapsed: str) -> dict[str, Any]:
        total = self.sz.rss_total
        reps = max(1, total // self.src.stat().st_size)
        total = reps * self.src.stat().st_size
        log(f"\n== rss-10g: {total / GiB:.1f} GiB written once through s3mpfs, RSS sampled "
            f"(loadavg {loadavg()}, {elapsed})")
        t = self.mounts.mount("s3mpfs", "rss")
        key = "rss-long.bin"
        assert t.mnt is not None and t.pid is not None
        path = t.mnt / key

        def written() -> int | None:
            text = os.getxattr(path, "user.s3mpfs.progress").decode()
            m = re.search(r"written=(\d+)", text)
            return int(m.group(1)) if m else None

        out: dict[str, Any] = {"bytes": total}
        try:
            reset_hwm(t.pid)
            idle_kib = status_kib(t.pid, "VmRSS")
            cpu0 = cpu_seconds(t.pid)
            cmd = (f"for i in $(seq {reps}); do cat {self.src}; done | "
                   f"dd of={path} bs=1M iflag=fullblock status=none")
            with Sampler(t.pid, [], t.exclude, interval=0.25, series=True,
                         extra=written) as sampler:
                t0 = time.perf_counter()
                run_cmd([f"set -o pipefail; {cmd}"], 120 + total / (2 * MB), shell=True)
                seconds = time.perf_counter() - t0
            self.verify_sizes({key: total})
            series = sampler.series or []
            # bytes written at each sample: from the progress xattr, else interpolated in time
            pts = []
            for ts, rss, w in series:
                pts.append((w if w is not None else min(total, int(total * ts / seconds)),
                            rss / 1024, ts))
            first = [r for w, r, _ in pts if w <= GiB] or [pts[0][1]]
            last_half = [r for w, r, _ in pts if w >= total / 2] or [pts[-1][1]]
            out.update(
                seconds=seconds, mbps=total / seconds / MB,
                cpu_per_gib=(cpu_seconds(t.pid) - cpu0) / (total / GiB),
                rss_idle_mib=idle_kib / 1024, vmhwm_mib=status_kib(t.pid, "VmHWM") / 1024,
                rss_max_first_gib=max(first), rss_max_last_half=max(last_half),
                series=[(round(w / GiB, 4), round(r, 1), round(ts, 2)) for w, r, ts in pts])
            out["growth_mib"] = out["rss_max_last_half"] - out["rss_max_first_gib"]
            log(f"  {total / GiB:.1f} GiB in {seconds:.1f} s ({out['mbps']:.1f} MB/s); VmHWM "
                f"{out['vmhwm_mib']:.1f} MiB; max RSS first GiB {out['rss_max_first_gib']:.1f}, "
                f"last half {out['rss_max_last_half']:.1f} MiB")
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"[:400]
            log(f"  FAILED {out['error']}")
        finally:
            with contextlib.suppress(Exception):
                self.ctl.delete_object(Bucket=self.bucket, Key=key)
            self.mounts.unmount(t)
        return out
