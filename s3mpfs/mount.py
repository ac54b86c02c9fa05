"""Mounting: check the bucket, mount, daemonise once the mount works, serve, shut down.

Order matters (s3ql's mount.py): every check that can fail for a user's mistake (bucket,
credentials, endpoint, mountpoint) runs first and prints one line to the terminal; then
pyfuse3.init() mounts; only then do we fork into the background, so `s3mpfs BUCKET MNT`
returning 0 means the mount is live.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import pyfuse3
import trio

from s3mpfs.config import MountConfig
from s3mpfs.errors import StoreError
from s3mpfs.fs import Filesystem, FsOptions
from s3mpfs.fuse_ops import Operations
from s3mpfs.logs import setup_logging
from s3mpfs.store.boto import BotoStore
from s3mpfs.systemd import notify

log = logging.getLogger(__name__)


class MountError(Exception):
    """A start-up failure with a one-line, user-facing message."""


def _check_mountpoint(path: str) -> None:
    if not os.path.exists(path):
        raise MountError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise MountError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"{path} is already a mount point")


def _fuse_options(cfg: MountConfig) -> set[str]:
    opts = {f"fsname=s3mpfs:{cfg.s3.bucket}", "subtype=s3mpfs", "default_permissions"}
    opts |= set(cfg.fuse_options)
    if cfg.read_only:
        opts.add("ro")
    return opts


def _daemonize() -> None:
    """Classic double fork; the parent exits 0 because the mount is already live."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


async def _serve(fs: Filesystem) -> None:
    async with trio.open_nursery() as nursery:
        fs.start(nursery)

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("%s received: unmounting", signal.Signals(signum).name)
                    notify("STOPPING=1")
                    pyfuse3.terminate()

        nursery.start_soon(on_signals)
        notify("READY=1")
        try:
            await pyfuse3.main()
        finally:
            with trio.CancelScope(shield=True):
                await fs.shutdown()
            nursery.cancel_scope.cancel()


def run(cfg: MountConfig) -> int:
    setup_logging(debug=cfg.debug, log_file=cfg.log_file, daemon=False)
    try:
        _check_mountpoint(cfg.mountpoint)
        store = BotoStore(cfg.s3, threads=max(16, 4 * cfg.upload.concurrency))
        try:
            store.check_bucket()
        except StoreError as exc:
            where = f" at {cfg.s3.endpoint_url}" if cfg.s3.endpoint_url else ""
            raise MountError(f"cannot use bucket {cfg.s3.bucket!r}{where}: {exc}") from exc
        fs = Filesystem(store, FsOptions(
            prefix=cfg.s3.prefix, upload=cfg.upload, read_only=cfg.read_only,
            uid=cfg.uid if cfg.uid is not None else os.getuid(),
            gid=cfg.gid if cfg.gid is not None else os.getgid(),
        ))
        try:
            pyfuse3.init(Operations(fs), cfg.mountpoint, _fuse_options(cfg))
        except RuntimeError as exc:
            raise MountError(f"cannot mount {cfg.mountpoint}: {exc}") from exc
    except MountError as exc:
        print(f"s3mpfs: {exc}", file=sys.stderr)
        return 1
    if not cfg.foreground:
        _daemonize()
        setup_logging(debug=cfg.debug, log_file=cfg.log_file, daemon=True)
    log.info("mounted s3://%s/%s on %s (pid %d)", cfg.s3.bucket, cfg.s3.prefix,
             cfg.mountpoint, os.getpid())
    try:
        trio.run(_serve, fs)
    except BaseException:
        pyfuse3.close(unmount=False)
        raise
    pyfuse3.close(unmount=True)
    log.info("unmounted %s", cfg.mountpoint)
    return 0
