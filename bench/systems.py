"""The systems the suite measures, and the S3 server it measures them against.

Systems: raw boto3 (in the suite's own process: no daemon, see bench/workloads.py) and the FUSE
filesystems, each run in the foreground as the suite's child so the PID it started is the
daemon's:

  s3mpfs         python -m s3mpfs BUCKET MNT --endpoint-url URL -f (bench.common.Mount)
  s3fs           s3fs BUCKET MNT -f -o url=URL,...,tmpdir=STAGE
  rclone-off     rclone mount bench:BUCKET MNT --vfs-cache-mode off
  rclone-writes  the same with --vfs-cache-mode writes (close() returns before the upload)

Servers: a private Ceph RADOS Gateway from ../shared/tools/ceph-rgw (CephServer); moto is
bench.common.MotoServer. Also: the Debian packages the systems need, their versions, and
--split-cores (the server on CPU 0, everything else on the other CPUs).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import REPO, Mount, first_line, log, package_version, unmount, wait_for

FUSE_SYSTEMS = ("s3mpfs", "s3fs", "rclone-off", "rclone-writes")
SYSTEMS = ("boto3", *FUSE_SYSTEMS)  # what --systems accepts
DURABLE_PEERS = ("s3fs", "rclone-off")  # close() returns once the object is stored


# -- servers and packages -----------------------------------------------------------------------


def free_ceph_ports() -> tuple[int, int]:
    """A free RGW port and a free mon port whose msgr-v1 twin (mon + 3489) is free too."""

    def free(port: int = 0) -> int | None:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return None
            return int(s.getsockname()[1])

    rgw = free()
    assert rgw is not None
    for _ in range(100):
        mon = free()
        if mon and mon != rgw and mon + 3489 < 65536 and free(mon + 3489):
            return rgw, mon
    raise RuntimeError("no free ports for Ceph")


def ensure_packages(packages: dict[str, str]) -> None:
    """apt-get install the Debian packages (command -> package) whose command is missing."""
    missing = sorted({pkg for cmd, pkg in packages.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"missing {', '.join(missing)}: install them (apt-get install)")
    log(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)


class CephServer:
    """A private one-node Ceph RGW from the shared tool: own CEPH_DIR, free ports, RGW_DEBUG=1."""

    def __init__(self, tool: Path, base: Path, size_gb: int) -> None:
        self.tool = tool
        self.size_gb = size_gb
        self.dir = Path(tempfile.mkdtemp(prefix="ceph-", dir=base))
        self.rgw_port, self.mon_port = free_ceph_ports()
        self.started = False
        self.env_vars: dict[str, str] = {}

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CEPH_DIR": str(self.dir), "RGW_PORT": str(self.rgw_port),
                "MON_PORT": str(self.mon_port), "RGW_DEBUG": "1",
                "CEPH_SIZE_GB": str(self.size_gb), "CEPH_FRESH": "1"}

    def start(self) -> None:
        self.started = True  # from here on stop() must run, even if start.sh fails halfway
        r = subprocess.run([str(self.tool / "start.sh")], env=self._env(), capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"Ceph start.sh failed ({r.returncode}): "
                               f"{(r.stdout + r.stderr)[-1500:]}")
        for line in (self.dir / "s3.env").read_text().splitlines():
            k, _, v = line.partition("=")
            self.env_vars[k] = v

    @property
    def endpoint(self) -> str:
        return self.env_vars["S3_ENDPOINT"]

    @property
    def pids(self) -> list[int]:
        out = []
        for n in ("mon", "osd", "rgw"):
            with contextlib.suppress(OSError, ValueError):
                out.append(int((self.dir / "pids" / n).read_text()))
        return out

    @property
    def log_path(self) -> Path:
        return self.dir / "log" / "client.rgw.a.log"

    def stop(self) -> None:
        if not self.started:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        subprocess.run([str(self.tool / "stop.sh"), "--wipe"], env=self._env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- mounts -------------------------------------------------------------------------------------


class DaemonMount:
    """A FUSE daemon run in the foreground as our child: s3fs -f, rclone mount."""

    def __init__(self, cmd: list[str], env: dict[str, str], mountpoint: Path,
                 log_file: Path) -> None:
        self.cmd, self.env, self.mountpoint, self.log_file = cmd, env, mountpoint, log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30) -> None:
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env)

        def mounted() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{self.cmd[0]} exited with {self.proc.returncode}: {tail}")
            return os.path.ismount(self.mountpoint)

        wait_for(mounted, timeout, f"{self.cmd[0]} to mount {self.mountpoint}")

    def stop(self, timeout: float = 60) -> None:
        unmount(self.mountpoint, self.proc, timeout)


@dataclass
class Target:
    """What a workload runs against: raw boto3 (no daemon) or a live FUSE mount."""

    system: str
    raw: bool
    mnt: Path | None = None
    handle: Mount | DaemonMount | None = None
    staging: list[Path] = field(default_factory=list)
    exclude: set[tuple[int, int]] = field(default_factory=set)

    @property
    def pid(self) -> int | None:
        return None if self.handle is None else self.handle.pid

    @property
    def durable_at_close(self) -> bool:
        return self.system != "rclone-writes"

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.system.lower()).strip("-")


class Mounts:
    """Starts FUSE systems on mountpoints under `disk` and keeps the live ones: whatever
    happens, the suite stops each (stop_all), and it counts their CPU as its own."""

    def __init__(self, disk: Path, bucket: str, s3mpfs_args: tuple[str, ...]) -> None:
        self.disk, self.bucket, self.s3mpfs_args = disk, bucket, s3mpfs_args
        self.live: list[Mount | DaemonMount] = []  # every mount started and not yet stopped
        self.endpoint = self.access = self.secret = self.region = ""

    def connect(self, endpoint: str, access: str, secret: str, region: str) -> None:
        self.endpoint, self.access, self.secret, self.region = endpoint, access, secret, region

    def mount(self, system: str, tag: str) -> Target:
        mnt = self.disk / f"mnt-{system}-{tag}"
        mnt.mkdir()
        logf = self.disk / f"{system}-{tag}.log"
        stage = self.disk / f"stage-{system}-{tag}"
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access,
               "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": self.region}
        env.pop("AWS_PROFILE", None)
        staging: list[Path] = []
        handle: Mount | DaemonMount
        if system == "s3mpfs":
            handle = Mount(self.bucket, mnt, self.endpoint, env, logf, self.s3mpfs_args)
        elif system == "s3fs":
            stage.mkdir()
            staging = [stage]
            pw = self.disk / "s3fs.passwd"
            if not pw.exists():
                pw.write_text(f"{self.access}:{self.secret}\n")
                pw.chmod(0o600)
            opts = (f"url={self.endpoint},use_path_request_style,passwd_file={pw},"
                    f"endpoint={self.region},tmpdir={stage}")
            handle = DaemonMount(["s3fs", self.bucket, str(mnt), "-f", "-o", opts], env, mnt,
                                 logf)
        elif system in ("rclone-off", "rclone-writes"):
            stage.mkdir()
            staging = [stage]
            conf = self.disk / "rclone.conf"
            if not conf.exists():
                conf.write_text(
                    "[bench]\ntype = s3\nprovider = Ceph\n"
                    f"access_key_id = {self.access}\nsecret_access_key = {self.secret}\n"
                    f"endpoint = {self.endpoint}\nregion = {self.region}\n"
                    "force_path_style = true\n")
                conf.chmod(0o600)
            env.pop("AWS_CA_BUNDLE", None)  # rclone 1.60 fails when it is set
            mode = "off" if system == "rclone-off" else "writes"
            handle = DaemonMount(["rclone", "--config", str(conf), "mount",
                                  f"bench:{self.bucket}", str(mnt), "--vfs-cache-mode", mode,
                                  "--cache-dir", str(stage)], env, mnt, logf)
        else:
            raise ValueError(system)
        self.live.append(handle)
        try:
            handle.start()
        except BaseException:
            self.unmount_handle(handle)
            raise
        exclude: set[tuple[int, int]] = set()
        with contextlib.suppress(OSError):
            st = os.stat(logf)
            exclude.add((st.st_dev, st.st_ino))
        return Target(system, False, mnt, handle, staging, exclude)

    def unmount_handle(self, handle: Mount | DaemonMount) -> None:
        try:
            handle.stop()
        finally:
            if handle in self.live:
                self.live.remove(handle)

    def unmount(self, t: Target) -> None:
        if t.handle is not None:
            self.unmount_handle(t.handle)

    def stop_all(self) -> None:
        for m in list(self.live):
            with contextlib.suppress(Exception):
                self.unmount_handle(m)


# -- versions and CPUs --------------------------------------------------------------------------


def versions(server: str) -> dict[str, str]:
    git = "?"
    with contextlib.suppress(Exception):
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "s3mpfs"],
                               capture_output=True, text=True).stdout.strip()
        git = head + (" + uncommitted changes in s3mpfs/" if dirty else "")
    return {
        "server": server,
        "s3mpfs": f"{package_version('s3mpfs')} (git {git})",
        "boto3": package_version("boto3"), "botocore": package_version("botocore"),
        "pyfuse3": package_version("pyfuse3"), "trio": package_version("trio"),
        "s3fs": first_line(["s3fs", "--version"]),
        "rclone": first_line(["rclone", "version"]),
        "fuse": first_line(["fusermount3", "--version"]),
        "rsync": first_line(["rsync", "--version"]),
    }


def split_cores(server_pids: list[int]) -> str:
    """Pin every thread of the server's processes to CPU 0 and this process (so every client
    and daemon it starts later) to the other CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not server_pids:
        raise SystemExit("--split-cores needs 2+ CPUs and the server's PIDs (--server-pid)")
    server, rest = {cpus[0]}, set(cpus[1:])
    for pid in server_pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(tid), server)
    for tid in os.listdir("/proc/self/task"):  # threads started later inherit it
        os.sched_setaffinity(int(tid), rest)
    text = f"server on {sorted(server)}, clients and daemons on {sorted(rest)}"
    log(f"cpus: {text}")
    return text
