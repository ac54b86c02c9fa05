"""Command line -> MountConfig. No logic beyond parsing and validation.

`-o` takes FUSE mount options and s3mpfs options alike (`-o allow_other,part_size=16M`), which
is how mount(8) and fstab hand options to a FUSE helper; fstab-only words are ignored.
"""

from __future__ import annotations

import argparse
import sys

from s3mpfs import __version__
from s3mpfs.config import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_PART_SIZE,
    DEFAULT_UPLOAD_CONCURRENCY,
    ConfigError,
    MountConfig,
    S3Config,
    UploadConfig,
    parse_bucket,
    parse_size,
)

# Passed through to FUSE / the kernel as they are.
FUSE_FLAGS = {"allow_other", "allow_root", "auto_unmount", "default_permissions", "nodev",
              "nosuid", "dev", "suid", "exec", "noexec", "noatime", "atime", "dirsync"}
FUSE_VALUED = {"fsname", "subtype", "max_read"}
# Words fstab / mount(8) / systemd put in the option string for themselves.
IGNORED = {"_netdev", "noauto", "auto", "nofail", "user", "users", "defaults", "rw", "sync",
           "async", "nouser"}
# -o names that mean an s3mpfs option (dash or underscore spelling both work).
S3MPFS_VALUED = {"endpoint_url", "region", "profile", "part_size", "upload_concurrency",
                 "memory_limit", "log_file", "uid", "gid"}
S3MPFS_FLAGS = {"foreground", "debug", "read_only"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s3mpfs",
        description="Mount an S3 bucket; files written into it stream to S3 as multipart "
                    "uploads while they are written, and are complete objects on close().",
        epilog="Credentials come from the AWS chain (environment, ~/.aws, instance roles). "
               "Example: s3mpfs mybucket:backups /mnt/backups",
    )
    p.add_argument("bucket", metavar="BUCKET[:PREFIX]", help="bucket, optionally a key prefix")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
    p.add_argument("--version", action="version", version=f"s3mpfs {__version__}")
    s3 = p.add_argument_group("S3 connection")
    s3.add_argument("--endpoint-url", help="S3-compatible endpoint (uses path-style addressing)")
    s3.add_argument("--region", help="AWS region (default: from the AWS config, else us-east-1)")
    s3.add_argument("--profile", help="AWS profile from ~/.aws/config and credentials")
    up = p.add_argument_group("uploads")
    up.add_argument("--part-size", default=str(DEFAULT_PART_SIZE), metavar="SIZE",
                    help="multipart part size, at least 5M (S3's minimum); default 8M")
    up.add_argument("--upload-concurrency", type=int, default=DEFAULT_UPLOAD_CONCURRENCY,
                    metavar="N", help="parts queued or in flight per file; default %(default)s")
    up.add_argument("--memory-limit", default=str(DEFAULT_MEMORY_LIMIT), metavar="SIZE",
                    help="bytes of parts in flight across all files; default 256M")
    mnt = p.add_argument_group("mount")
    mnt.add_argument("-f", "--foreground", action="store_true",
                     help="stay in the foreground (default: daemonise once mounted)")
    mnt.add_argument("--read-only", action="store_true", help="refuse every write (EROFS)")
    mnt.add_argument("--uid", type=int, help="owner of objects without metadata")
    mnt.add_argument("--gid", type=int, help="group of objects without metadata")
    mnt.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                     help="mount options: FUSE ones (allow_other, ro, ...) and any s3mpfs "
                          "option by name (endpoint_url=..., part_size=16M)")
    logs = p.add_argument_group("logging")
    logs.add_argument("--debug", action="store_true", help="log every request")
    logs.add_argument("--log-file", metavar="PATH", help="log here (default: stderr in the "
                      "foreground, syslog when daemonised)")
    return p


def _apply_o(args: argparse.Namespace) -> list[str]:
    fuse: list[str] = []
    for group in args.options:
        for item in filter(None, (s.strip() for s in group.split(","))):
            name, eq, value = item.partition("=")
            key = name.replace("-", "_")
            if name in IGNORED or name.startswith(("x-systemd.", "comment=")):
                continue
            if name == "ro":
                args.read_only = True
            elif key in S3MPFS_FLAGS and not eq:
                setattr(args, key, True)
            elif key in S3MPFS_VALUED and eq:
                setattr(args, key, int(value) if key in ("uid", "gid") else value)
            elif name in FUSE_FLAGS and not eq:
                fuse.append(name)
            elif name in FUSE_VALUED and eq:
                fuse.append(item)
            else:
                raise ConfigError(f"unknown mount option -o {item}")
    return fuse


def parse_args(argv: list[str]) -> MountConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        fuse_options = _apply_o(args)
        bucket, prefix = parse_bucket(args.bucket)
        upload = UploadConfig(part_size=parse_size(args.part_size),
                              concurrency=int(args.upload_concurrency),
                              memory_limit=parse_size(args.memory_limit))
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    return MountConfig(
        s3=S3Config(bucket, prefix, args.endpoint_url, args.region, args.profile),
        mountpoint=args.mountpoint, upload=upload, foreground=args.foreground,
        debug=args.debug, log_file=args.log_file, read_only=args.read_only,
        fuse_options=tuple(fuse_options), uid=args.uid, gid=args.gid,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    from s3mpfs.mount import run  # imported late: --help works without pyfuse3's libfuse

    return run(cfg)
