"""Mounting: check the bucket, mount, daemonise once the mount works, serve, shut down.

Order matters (s3ql's mount.py): every check that can fail for a user's mistake (mountpoint,
log file, bucket, credentials, endpoint) runs first and prints one line to the terminal; then
pyfuse3.init() mounts; only then do we fork into the background, so `s3mpfs BUCKET MNT`
returning 0 means the mount is live.

Under systemd (Type=notify) the process stays in the foreground and tells the service manager
READY=1 once the mount is live and STOPPING=1 as soon as it goes away, whatever the cause
(fusermount3 -u / umount, SIGTERM, SIGINT, a crash of the serving loop).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import stat
import sys
from collections.abc import Iterator

import pyfuse3
import trio

from s3mpfs import __version__, orphans, status
from s3mpfs.config import MountConfig, describe_objects
from s3mpfs.errors import StoreError
from s3mpfs.fs import Filesystem
from s3mpfs.fuse_ops import Operations
from s3mpfs.logs import setup_logging
from s3mpfs.store.boto import BotoStore
from s3mpfs.systemd import notify, under_systemd

log = logging.getLogger(__name__)

# mount.fuse3 -o drop_privileges mounts itself and hands over the FUSE device as /dev/fd/N.
FD_MOUNTPOINT = re.compile(r"^/dev/fd/\d+$")

EXIT_OK = 0
EXIT_FAILED = 1  # a start-up check failed, or the filesystem crashed
# 2: bad command line (argparse)


# A FUSE mount starts with the kernel's default 128 KiB readahead, so a sequential reader's
# data arrives as 128 KiB read requests, each a round trip through pyfuse3 (measured: ~48 % of
# the daemon's time when reading at 300 MB/s). At 1 MiB, reads arrive in 1 MiB requests: Ceph
# RGW reads went from 0.62 to 0.72 of one boto3 get_object on a loaded machine. It must be set
# after the FUSE INIT handshake: the kernel then lowers readahead to the max_readahead libfuse
# answers, which is at most the (default) value the kernel offered when it sent INIT, so a value
# written before that is undone (measured: 128 KiB requests again).
READ_AHEAD_KB = 1024


def _mount_entry(mountpoint: str) -> list[str] | None:
    """The newest /proc/self/mountinfo line for `mountpoint`, split into fields (0: mount ID,
    2: major:minor). Read from /proc: a stat() of the mountpoint would be a FUSE request
    nobody answers yet."""
    escaped = mountpoint.replace("\\", "\\134").replace(" ", "\\040")
    entry = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == escaped:
                    entry = fields  # the last match is the newest mount
    except OSError:
        return None
    return entry


def _set_read_ahead(device: str, kb: int) -> None:
    """Set the new mount's readahead through its bdi in sysfs (root only; best effort)."""
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(str(kb))
    except OSError as exc:
        log.debug("could not set readahead of %s to %d KiB: %s", device, kb, exc)


class MountError(Exception):
    """A start-up failure with a one-line, user-facing message."""


def _check_mountpoint(path: str) -> bool:
    """Raise MountError if s3mpfs cannot mount on path; return whether it is non-empty."""
    if FD_MOUNTPOINT.match(path):
        return False
    dead = MountError(f"{path} is a dead FUSE mount (its process is gone); clean it up with: "
                      f"fusermount3 -u -z {path}")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise dead from None
        raise MountError(f"cannot use mountpoint {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        # stat() may be answered from the kernel's attribute cache; statfs always asks.
        try:
            os.statvfs(path)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                raise dead from None
        entry = status.find_mount(path)
        what = f" ({entry.fstype} {entry.source})" if entry else ""
        raise MountError(f"{path} is already a mount point{what}")
    # libfuse3 mounts over a non-empty directory (fuse2 needed -o nonempty); so do we, but
    # run() says so once mounted: whatever is in there is hidden meanwhile.
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        return next(entries, None) is not None
    return False


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from `logger` meanwhile."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def _fuse_options(cfg: MountConfig) -> set[str]:
    opts = {f"fsname=s3mpfs:{cfg.s3.bucket}", "subtype=s3mpfs", "default_permissions"}
    opts |= set(cfg.fuse_options)
    if cfg.fs.read_only:
        opts.add("ro")
    return opts


def _daemonize() -> None:
    """Classic double fork; the parent exits 0 because the mount is already live."""
    if os.fork() > 0:
        os._exit(EXIT_OK)
    os.setsid()
    if os.fork() > 0:
        os._exit(EXIT_OK)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


async def _serve(fs: Filesystem, ops: Operations, device: str | None, where: str) -> None:
    async with trio.open_nursery() as nursery:
        fs.start(nursery)

        async def read_ahead_after_init() -> None:
            await ops.initialized.wait()  # see READ_AHEAD_KB
            if device is not None:
                _set_read_ahead(device, READ_AHEAD_KB)

        nursery.start_soon(read_ahead_after_init)

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("%s received: unmounting", signal.Signals(signum).name)
                    fs.stopping = True
                    pyfuse3.terminate()

        nursery.start_soon(on_signals)
        # pyfuse3.init() has mounted: the kernel queues requests until main() reads them.
        notify(f"READY=1\nSTATUS=Mounted {where}")
        try:
            await pyfuse3.main()
        finally:
            # Every way out of main(): unmounted (fusermount3 -u, umount), terminate() from a
            # signal, or an error.
            notify("STOPPING=1\nSTATUS=Unmounting: aborting uploads of files still open")
            with trio.CancelScope(shield=True):
                await fs.shutdown()
            nursery.cancel_scope.cancel()


def _describe(cfg: MountConfig, mountpoint: str) -> str:
    return f"s3://{cfg.s3.bucket}/{cfg.s3.prefix} on {mountpoint}"


def run(cfg: MountConfig) -> int:
    journal = cfg.systemd or under_systemd()
    foreground = cfg.foreground or cfg.systemd or bool(os.environ.get("NOTIFY_SOCKET"))
    # Absolute paths: the daemon changes to / after forking, and libfuse unmounts by path.
    mountpoint = cfg.mountpoint
    if not FD_MOUNTPOINT.match(mountpoint):
        mountpoint = os.path.abspath(mountpoint)
    log_file = os.path.abspath(cfg.log_file) if cfg.log_file else None
    try:
        try:
            setup_logging(debug=cfg.debug, log_file=log_file, daemon=False, journal=journal,
                          echo_warnings=bool(log_file) and not foreground)
        except OSError as exc:
            raise MountError(f"cannot open log file {log_file}: {exc.strerror}") from None
        non_empty = _check_mountpoint(mountpoint)
        if FD_MOUNTPOINT.match(mountpoint) and "default_permissions" not in cfg.fuse_options:
            # mount.fuse3 mounted with the options it was given; ours never reach the kernel.
            raise MountError("with -o drop_privileges, add default_permissions to the mount "
                             "options: s3mpfs relies on the kernel to check permissions")
        store = BotoStore(cfg.s3, threads=max(16, 4 * cfg.fs.upload.concurrency),
                          options=cfg.objects)
        try:
            with _quiet("s3mpfs.s3"):  # retries: the one error line below says it all
                store.check_bucket()
        except StoreError as exc:
            where = f" at {cfg.s3.endpoint_url}" if cfg.s3.endpoint_url else ""
            hint = ""
            if cfg.s3.bucket == "status":
                hint = (f" (to list a mount's uploads: s3mpfs --status MOUNTPOINT; "
                        f"{cfg.mountpoint} is not an s3mpfs mount)")
            raise MountError(f"cannot use bucket {cfg.s3.bucket!r}{where}: {exc}{hint}") from exc
        trio.run(orphans.warn_at_mount, store, cfg.s3)  # one WARNING if a crash left uploads
        fs = Filesystem(store, cfg.fs)
        try:
            ops = Operations(fs)
            pyfuse3.init(ops, mountpoint, _fuse_options(cfg))
            entry = _mount_entry(mountpoint)
            device = None
            if entry is not None:
                device = entry[2]
                fs.mount_id = int(entry[0])  # lets flush see who holds a file (openers.py)
            if non_empty:
                log.warning("mountpoint %s is not empty: its contents are hidden while s3mpfs "
                            "is mounted there", mountpoint)
        except RuntimeError as exc:
            raise MountError(f"cannot mount {mountpoint}: {exc}") from exc
    except MountError as exc:
        print(f"s3mpfs: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not foreground:
        if not log_file and not os.path.exists("/dev/log"):
            log.warning("no syslog socket (/dev/log) and no --log-file: the daemon's log is "
                        "lost once it detaches")
        _daemonize()
        setup_logging(debug=cfg.debug, log_file=log_file, daemon=True)
    where = _describe(cfg, mountpoint)
    log.info("s3mpfs %s mounted %s (pid %d)", __version__, where, os.getpid())
    log.info("new objects: %s", describe_objects(cfg.objects))
    try:
        trio.run(_serve, fs, ops, device, where)
    except BaseException:
        # Leave the mount dead rather than gone: programs writing into it get errors
        # (ENOTCONN) instead of silently writing to the directory underneath.
        log.exception("s3mpfs failed; %s is left unusable until fusermount3 -u -z", mountpoint)
        pyfuse3.close(unmount=False)
        return EXIT_FAILED
    pyfuse3.close(unmount=True)
    log.info("unmounted %s", mountpoint)
    return EXIT_OK
