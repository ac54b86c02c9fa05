#!/usr/bin/env python3
"""s3mpfs end to end, on a local S3 (moto): `tar cf - -C DIR data | cat > MNT/backup.tar`.

Starts moto's S3 server on a free 127.0.0.1 port, mounts s3mpfs in the foreground on a temp
dir, generates ~200 MiB of data, runs the pipeline in bash and, while it runs, asks S3 (boto3)
how many parts the open multipart upload has: they arrive while tar is still writing. Then
checks the stored object against a second local run of tar (GNU tar's output is the same for
an unchanged tree) and cleans everything up, also on failure.

    bash scripts/demo.sh            # = setup.sh, then .venv/bin/python scripts/demo.py
    .venv/bin/python scripts/demo.py --mib 64
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

BUCKET = "demo-bucket"
KEY = "backup.tar"
MiB = 1 << 20
PART_SIZE = 8 * MiB  # s3mpfs's default --part-size


class DemoError(Exception):
    pass


def wait_for(cond: Callable[[], bool], timeout: float, what: str,
             alive: subprocess.Popen[bytes] | None = None) -> None:
    """Poll cond() until it holds; fail after `timeout` s or as soon as `alive` has exited."""
    deadline = time.monotonic() + timeout
    while not cond():
        if alive is not None and alive.poll() is not None:
            raise DemoError(f"{what}: process {alive.pid} exited with {alive.returncode}")
        if time.monotonic() > deadline:
            raise DemoError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def make_data(data: Path, total_mib: int) -> tuple[int, int]:
    """A few random files of assorted sizes (~total_mib MiB), plus small ones in a subdir."""
    rng = random.Random(1)
    data.mkdir(parents=True)
    count = size = 0
    shares = [0.35, 0.25, 0.17, 0.12, 0.06, 0.03]  # ~98 %; the small files add the rest
    for i, share in enumerate(shares):
        n = int(total_mib * MiB * share) + rng.randrange(1, 64 * 1024)  # never part-aligned
        with open(data / f"blob{i}.bin", "wb") as f:
            left = n
            while left:
                chunk = os.urandom(min(left, 4 * MiB))
                f.write(chunk)
                left -= len(chunk)
        count, size = count + 1, size + n
    small = data / "small"
    small.mkdir()
    for i in range(40):
        n = rng.choice([0, 1, 100, 511, 512, 4096]) if i < 8 else rng.randrange(1, 64 * 1024)
        (small / f"note{i:02d}.txt").write_bytes(os.urandom(n))
        count, size = count + 1, size + n
    return count, size


def sha256_of(chunks: Iterable[bytes]) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    for c in chunks:
        h.update(c)
        n += len(c)
    return h.hexdigest(), n


def local_tar_chunks(parent: Path) -> Iterable[bytes]:
    with subprocess.Popen(["tar", "cf", "-", "-C", str(parent), "data"],
                          stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        while chunk := p.stdout.read(MiB):
            yield chunk
    if p.returncode != 0:
        raise DemoError(f"local tar exited with {p.returncode}")


def child_alive(ppid: int, name: str) -> bool:
    """Is a live (not zombie) child process of `ppid` called `name` running? (Linux /proc)"""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                head, _, rest = f.read().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        if head.partition("(")[2] == name and fields[1] == str(ppid) and fields[0] != "Z":
            return True
    return False


def open_upload_parts(s3: Any) -> tuple[int, int] | None:
    """(parts, bytes) of the open multipart upload of KEY, or None if there is none."""
    try:
        ups = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=KEY)
        for up in ups.get("Uploads", []):
            if up["Key"] == KEY:
                parts = s3.list_parts(
                    Bucket=BUCKET, Key=KEY, UploadId=up["UploadId"]).get("Parts", [])
                return len(parts), sum(p["Size"] for p in parts)
    except ClientError:  # e.g. NoSuchUpload: completed between the two calls
        pass
    return None


def demo(args: argparse.Namespace, tmp: Path, procs: dict[str, subprocess.Popen[bytes]],
         mnt: Path) -> int:
    t_start = time.monotonic()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(var, None)

    # 1. S3: moto's server on a free port, and the bucket.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp / "moto.log", "wb") as out:
        procs["moto"] = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for(lambda: accepts(port), 30, "moto server start", procs["moto"])
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket=BUCKET)
    print(f"moto S3 server at {url} (pid {procs['moto'].pid}); bucket {BUCKET} created")

    # 2. Mount s3mpfs in the foreground (a child process), wait until the mount is live.
    log = tmp / "s3mpfs.log"
    with open(tmp / "s3mpfs.stderr", "wb") as err:
        procs["s3mpfs"] = subprocess.Popen(
            [sys.executable, "-m", "s3mpfs", BUCKET, str(mnt), "--endpoint-url", url,
             "-f", "--log-file", str(log)],
            stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for(lambda: os.path.ismount(mnt), 30, "s3mpfs mount", procs["s3mpfs"])
    print(f"s3mpfs mounted s3://{BUCKET} on {mnt} (pid {procs['s3mpfs'].pid})")

    # 3. Data.
    parent = tmp / "src"
    count, size = make_data(parent / "data", args.mib)
    print(f"generated {count} files, {size / MiB:.1f} MiB in {parent / 'data'}")

    # 4. The pipeline, watched from S3's side while it runs.
    pipeline = (f"tar cf - -C {shlex.quote(str(parent))} data"
                f" | cat > {shlex.quote(str(mnt / KEY))}")
    print(f"$ {pipeline}")
    t0 = time.monotonic()
    # pipefail: a failing tar fails the pipeline (plain `sh -c` would report only cat's status)
    procs["tar"] = tar = subprocess.Popen(["bash", "-o", "pipefail", "-c", pipeline],
                                          start_new_session=True)
    # bash runs tar and cat as its children; a part counts as "uploaded while tar was still
    # writing" only if the tar process itself was still alive *after* S3 answered.
    seen = last = 0
    while tar.poll() is None:
        state = open_upload_parts(s3)
        tar_alive = child_alive(tar.pid, "tar")
        if state is not None and state[0] != last and tar.poll() is None:
            last = state[0]
            what = ("tar still writing" if tar_alive
                    else "tar done, cat's close() commits")
            if tar_alive:
                seen = max(seen, state[0])
            print(f"  {what}: multipart upload open, {state[0]} part"
                  f"{'s' if state[0] != 1 else ''} uploaded ({state[1] // MiB} MiB)")
        time.sleep(0.2)
    secs = time.monotonic() - t0
    if tar.returncode != 0:
        raise DemoError(f"the pipeline exited with {tar.returncode}")
    print(f"pipeline exited 0 after {secs:.1f} s ({size / MiB / secs:.0f} MiB/s of data)")

    # 5. The object: present, multipart, and byte-identical to what tar produces.
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    etag = head["ETag"].strip('"')
    nparts = int(etag.rsplit("-", 1)[1]) if "-" in etag else 0
    kind = f"{nparts} parts" if nparts else "single PUT"
    print(f"s3://{BUCKET}/{KEY}: {head['ContentLength']:,} bytes, ETag {etag} ({kind})")
    body = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"]
    remote, remote_n = sha256_of(body.iter_chunks(MiB))
    local, local_n = sha256_of(local_tar_chunks(parent))
    print(f"sha256 of the object in S3: {remote}")
    print(f"sha256 of tar run again:    {local}")
    ok_data = remote == local and remote_n == local_n == head["ContentLength"]
    ok_parts = seen >= 2
    print("$ ls -l " + str(mnt))
    ls = subprocess.run(["ls", "-l", str(mnt)], capture_output=True, text=True, check=True)
    for line in ls.stdout.splitlines():
        print("  " + line)
    print(("OK" if ok_data else "MISMATCH") + f": S3 holds exactly tar's {local_n:,} bytes; "
          f"{seen} parts were already in S3 while tar was still writing"
          + ("" if ok_parts else " (expected at least 2)"))
    print(f"demo body took {time.monotonic() - t_start:.1f} s")
    return 0 if ok_data and ok_parts else 1


def unmount(mnt: Path, fs: subprocess.Popen[bytes] | None) -> bool:
    ok = True
    if os.path.ismount(mnt):
        deadline = time.monotonic() + 15
        while True:
            r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, text=True)
            if r.returncode == 0 or not os.path.ismount(mnt):
                break
            if time.monotonic() > deadline:  # still busy: detach it lazily
                print(f"fusermount3 -u failed: {r.stderr.strip()}; using -z", file=sys.stderr)
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
                ok = False
                break
            time.sleep(0.1)
    if fs is not None:
        try:
            rc = fs.wait(30)
            if rc != 0:
                print(f"s3mpfs exited with {rc}", file=sys.stderr)
                ok = False
        except subprocess.TimeoutExpired:
            print("s3mpfs did not exit after the unmount: stopping it", file=sys.stderr)
            stop(fs)
            ok = False
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=200, help="MiB of data to tar (default 200)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = ap.parse_args()
    if args.mib < 24:
        ap.error("--mib must be at least 24 (3 parts of 8 MiB)")

    tmp = Path(tempfile.mkdtemp(prefix="s3mpfs-demo-"))
    mnt = tmp / "mnt"
    mnt.mkdir()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    rc = 1
    print(f"s3mpfs demo: tar | cat into an s3mpfs mount on a local S3 (temp dir {tmp})")
    try:
        try:
            rc = demo(args, tmp, procs, mnt)
        except DemoError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            print("interrupted: cleaning up", file=sys.stderr)
            rc = 130
        finally:
            tar = procs.get("tar")
            if tar is not None and tar.poll() is None:  # only on failure: stop the pipeline
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(tar.pid, signal.SIGTERM)  # its own session, started above
                tar.wait()
            try:
                if not unmount(mnt, procs.get("s3mpfs")):
                    rc = rc or 1
            finally:
                stop(procs.get("moto"))
        print("unmounted, s3mpfs exited, moto stopped")
        log = tmp / "s3mpfs.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        stored = [ln for ln in lines if " INFO " in ln and f"stored {KEY}" in ln]
        for ln in stored or lines[-10:]:
            print(f"s3mpfs log: {ln}")
        if rc != 0:
            for name in ("s3mpfs.stderr", "moto.log"):
                p = tmp / name
                if p.exists() and p.stat().st_size:
                    print(f"--- {name} (last lines)", file=sys.stderr)
                    for ln in p.read_text(errors="replace").splitlines()[-15:]:
                        print(ln, file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        elif os.path.ismount(mnt):  # never rmtree through a live mount
            print(f"{mnt} is still mounted: leaving {tmp} in place", file=sys.stderr)
            rc = rc or 1
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
