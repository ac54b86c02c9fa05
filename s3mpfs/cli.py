"""Command line -> MountConfig (config.py). No logic beyond parsing and validation.

`-o` takes FUSE mount options and s3mpfs options alike (`-o allow_other,part_size=16M`), which
is how mount(8) and fstab hand options to a FUSE helper. mount.fuse3 (what `mount -t
fuse.s3mpfs` and fstab run) calls `s3mpfs SOURCE MOUNTPOINT -o OPTS`, where OPTS are the
fstab options minus the words it handles itself (user, nouser, users, auto, noauto, _netdev,
nofail, setuid=, drop_privileges), with "rw" first (from mount(8)) and "dev,suid" appended
unless nodev/nosuid was given. So every generic mount flag libfuse knows is accepted here.
"""

from __future__ import annotations

import argparse
import os
import sys

from s3mpfs import __version__
from s3mpfs.config import (
    CANNED_ACLS,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_PART_SIZE,
    DEFAULT_READ_MEMORY,
    DEFAULT_UPLOAD_CONCURRENCY,
    HARD_LINKS,
    INITIAL_WINDOW,
    MAX_PARTS,
    MAX_WINDOW,
    STORAGE_CLASSES,
    ConfigError,
    FsConfig,
    MiB,
    MountConfig,
    ReadConfig,
    S3Config,
    UploadConfig,
    parse_bucket,
    parse_mode,
    parse_object_options,
    parse_seconds,
    parse_size,
)

# Passed through to FUSE / the kernel as they are (libfuse's lib/mount.c knows them all).
FUSE_FLAGS = {"allow_other", "allow_root", "auto_unmount", "default_permissions", "nodev",
              "nosuid", "dev", "suid", "exec", "noexec", "noatime", "atime", "dirsync",
              "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
              "nostrictatime", "lazytime", "nolazytime"}
FUSE_VALUED = {"fsname", "subtype", "max_read", "context", "fscontext", "defcontext",
               "rootcontext"}
# Words fstab / mount(8) / systemd put in the option string for themselves; "nonempty" is
# libfuse2's (libfuse3 always mounts over a non-empty directory).
IGNORED = {"_netdev", "noauto", "auto", "nofail", "user", "users", "defaults", "rw", "sync",
           "async", "nouser", "nonempty"}
IGNORED_PREFIXES = ("x-", "comment=", "user=")
# Understood by mount.fuse3 only; reaching s3mpfs means it was run directly.
MOUNT_FUSE3_ONLY = ("setuid=", "drop_privileges")
# -o names that mean an s3mpfs option (dash or underscore spelling both work).
S3MPFS_VALUED = {"endpoint_url", "region", "profile", "part_size", "upload_concurrency",
                 "rewrite_window",
                 "memory_limit", "max_parts", "checksum", "log_file", "uid", "gid", "file_mode",
                 "dir_mode", "umask", "storage_class", "sse", "sse_kms_key_id",
                 "sse_c_key_file", "content_type", "tag", "acl", "metadata_ttl", "read_ahead",
                 "first_read", "read_memory", "hard_links"}
S3MPFS_FLAGS = {"foreground", "debug", "read_only", "systemd", "no_clobber", "durable_close"}
# -o spellings of a flag besides its own name
FLAG_ALIASES = {"noclobber": "no_clobber"}

USAGE = """s3mpfs BUCKET[:PREFIX] MOUNTPOINT [options]
       s3mpfs status MOUNTPOINT [--json]
       s3mpfs uploads BUCKET[:PREFIX] [--abort] [--older-than AGE] [--all] [--endpoint-url URL]
       s3mpfs --version | --help"""

EPILOG = """\
commands:
  s3mpfs BUCKET MOUNTPOINT   mount; returns once the mount is live (exit 0), or prints why
                             it cannot (exit 1; 2 for a bad command line)
  s3mpfs status MOUNTPOINT   list the uploads in progress on a mount (--json for the raw
                             data); "status" means this only when MOUNTPOINT is an s3mpfs
                             mount point; `s3mpfs --status MOUNTPOINT` always does
  s3mpfs uploads BUCKET      list (--abort: abort) multipart uploads a crashed s3mpfs left
                             behind (--help for more); `s3mpfs --uploads BUCKET` always does
  getfattr -n user.s3mpfs.progress FILE
                             progress of one file being written

Credentials come from the AWS chain (AWS_* environment variables, ~/.aws/credentials and
config, --profile, instance roles); never on the command line. Unmount with
`fusermount3 -u MOUNTPOINT` (or SIGTERM): files still open are aborted, never stored partly.

examples:
  s3mpfs mybucket:backups /mnt/backups
  s3mpfs mybucket /mnt/x --endpoint-url http://127.0.0.1:9000 -o allow_other
  mount -t fuse.s3mpfs mybucket /mnt/x -o _netdev,allow_other,part_size=16M
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s3mpfs",
        usage=USAGE,
        description="Mount an S3 bucket; files written into it stream to S3 as multipart\n"
                    "uploads while they are written, and are complete objects on close().",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bucket", metavar="BUCKET[:PREFIX]",
                   help="bucket, optionally followed by a key prefix to mount only that")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing directory")
    p.add_argument("--version", action="version", version=f"s3mpfs {__version__}")
    s3 = p.add_argument_group("S3 connection")
    s3.add_argument("--endpoint-url", metavar="URL",
                    help="S3-compatible endpoint (uses path-style addressing)")
    s3.add_argument("--region", help="AWS region (default: from the AWS config, else us-east-1)")
    s3.add_argument("--profile", help="AWS profile from ~/.aws/config and credentials")
    up = p.add_argument_group("uploads")
    up.add_argument("--part-size", default=str(DEFAULT_PART_SIZE), metavar="SIZE",
                    help="multipart part size, at least 5M (S3's minimum); default 8M")
    up.add_argument("--upload-concurrency", type=int, default=DEFAULT_UPLOAD_CONCURRENCY,
                    metavar="N", help="parts queued or in flight per file; default %(default)s")
    up.add_argument("--rewrite-window", type=int, default=0, metavar="N",
                    help="uploaded parts of a new file a write may still rewrite (zip's "
                         "header fix-ups); default: --upload-concurrency (no extra memory)")
    up.add_argument("--memory-limit", default=str(DEFAULT_MEMORY_LIMIT), metavar="SIZE",
                    help="bytes of parts in flight across all files; default 256M")
    up.add_argument("--max-parts", type=int, default=MAX_PARTS, metavar="N",
                    help="most parts per upload (S3: 10000; lower for stores that allow "
                         "fewer); part sizes grow in ten tiers to fit; default %(default)s")
    up.add_argument("--checksum", choices=("crc64nvme", "crc32c", "md5", "off"),
                    default="crc64nvme",
                    help="checksum every part carries for S3 to verify; crc64nvme also gives "
                         "the object a full-object CRC64NVME; md5 or off for stores that "
                         "reject CRC headers; default %(default)s")
    rd = p.add_argument_group(
        "reads",
        "Each open file prefetches ahead of a sequential reader with ranged GETs: a first\n"
        "GET of --first-read bytes, then a window doubling up to --read-ahead; a seek starts\n"
        "small again. Also as -o read_ahead=,first_read=,read_memory=.")
    rd.add_argument("--read-ahead", metavar="SIZE", default=f"{MAX_WINDOW // MiB}M",
                    help="most bytes prefetched ahead of a sequential reader, per open file; "
                         "default %(default)s")
    rd.add_argument("--first-read", metavar="SIZE",
                    help="the first GET of an open file (at most 8M; more starts the window "
                         "larger), and where the window starts again after a seek; default "
                         f"{INITIAL_WINDOW // 1024}K, or --read-ahead if smaller")
    rd.add_argument("--read-memory", metavar="SIZE", default=f"{DEFAULT_READ_MEMORY // MiB}M",
                    help="prefetched bytes across all open files: prefetch takes only what is "
                         "free, reads never wait for it; 0: every read fetches just its own "
                         "range; default %(default)s")
    mnt = p.add_argument_group("mount")
    mnt.add_argument("-f", "--foreground", action="store_true",
                     help="stay in the foreground (default: daemonise once mounted)")
    mnt.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                     help="mount options: FUSE and generic ones (allow_other, ro, rw, "
                          "auto_unmount, nodev, noexec, ...), any s3mpfs option by name "
                          "(endpoint_url=..., part_size=16M, uid=, gid=, umask=, file_mode=, "
                          "dir_mode=, debug, log_file=...); fstab words (_netdev, noauto, "
                          "nofail, x-systemd.*, ...) are ignored")
    mnt.add_argument("--durable-close", action="store_true",
                     help="every close() stores the file, also rsync's temporary files "
                          "(which are otherwise stored once, under their final name, by the "
                          "rename that follows; also -o durable_close)")
    mnt.add_argument("--metadata-ttl", metavar="SECONDS", default="5",
                     help="how long attributes and directory listings learnt from S3 are "
                          "trusted (the kernel caches them as long); 0 asks S3 every time "
                          "(also -o metadata_ttl=); default %(default)s")
    mnt.add_argument("--hard-links", metavar="refuse|copy", default="refuse",
                     help="link(): refuse (EOPNOTSUPP, as s3fs-fuse) or copy (a server-side "
                          "copy: the new name is an independent file, later changes to one do "
                          "not show in the other); also -o hard_links=; default %(default)s")
    perm = p.add_argument_group(
        "permissions",
        "Without -o allow_other only the mounting user (and nobody else, not even root)\n"
        "can use the mount. The kernel checks modes and owners (default_permissions is\n"
        "always on). Objects keep the mode/uid/gid stored in their x-amz-meta-* headers;\n"
        "these options apply to objects without them.")
    perm.add_argument("--read-only", action="store_true",
                      help="refuse every change with EROFS (also -o ro)")
    perm.add_argument("--uid", type=int, help="owner of objects without metadata "
                      "(default: the mounting user; also -o uid=N)")
    perm.add_argument("--gid", type=int, help="group of objects without metadata "
                      "(default: the mounting user's group; also -o gid=N)")
    perm.add_argument("--file-mode", metavar="MODE",
                      help="permissions of files without metadata, octal; default 0644 "
                           "(also -o file_mode=MODE)")
    perm.add_argument("--dir-mode", metavar="MODE",
                      help="permissions of directories without metadata, octal; default 0755 "
                           "(also -o dir_mode=MODE)")
    perm.add_argument("--umask", metavar="MASK",
                      help="sets both defaults: files 0666 & ~MASK, directories 0777 & ~MASK "
                           "(also -o umask=MASK); --file-mode/--dir-mode win")
    obj = p.add_argument_group(
        "objects",
        "What every object the mount writes carries (README: Backup-grade objects). Also\n"
        "as -o storage_class=,sse=,sse_kms_key_id=,sse_c_key_file=,content_type=,tag=,acl=,\n"
        "noclobber.")
    obj.add_argument("--storage-class", metavar="CLASS",
                     help="S3 storage class of every object written, renamed or changed: "
                          f"{', '.join(STORAGE_CLASSES)}; default: S3's (STANDARD) for new "
                          "objects, and a renamed or changed object keeps its class")
    obj.add_argument("--sse", metavar="ALG",
                     help="server-side encryption: AES256 (SSE-S3), aws:kms (SSE-KMS), "
                          "aws:kms:dsse; default: the bucket's default encryption")
    obj.add_argument("--sse-kms-key-id", metavar="ID",
                     help="the KMS key (id, ARN or alias) for --sse aws:kms; default: the "
                          "AWS managed key aws/s3")
    obj.add_argument("--sse-c-key-file", metavar="PATH",
                     help="SSE-C: encrypt with this customer key (a file of exactly 32 raw "
                          "bytes), sent with every request that writes or reads an object; "
                          "never logged")
    obj.add_argument("--no-clobber", action="store_true",
                     help="never replace an object: new files are written with If-None-Match: "
                          "* and a close() that would replace one fails with EEXIST; opening "
                          "an existing file with O_TRUNC and renaming onto one fail with EEXIST")
    obj.add_argument("--content-type", metavar="auto|none|TYPE", default="auto",
                     help="Content-Type of new objects: auto guesses it from the file name "
                          "(default; unknown: application/octet-stream), none sends none, "
                          "TYPE sets it for all")
    obj.add_argument("--tag", metavar="KEY=VALUE", action="append", default=[],
                     help="an object tag on every new object (repeatable, at most 10)")
    obj.add_argument("--acl", metavar="ACL",
                     help="canned ACL of new objects, for buckets that still use ACLs: "
                          f"{', '.join(CANNED_ACLS)}")
    logs = p.add_argument_group("logging")
    logs.add_argument("--debug", action="store_true",
                      help="also log every S3 request (operation, key, status, duration)")
    logs.add_argument("--log-file", metavar="PATH", help="log here (default: stderr in the "
                      "foreground, syslog when daemonised)")
    logs.add_argument("--systemd", action="store_true",
                      help="run as a systemd service: stay in the foreground, log to stderr "
                           "with journald priority prefixes; automatic when NOTIFY_SOCKET is "
                           "set or stderr is the journal (JOURNAL_STREAM)")
    return p


def _apply_o(args: argparse.Namespace) -> list[str]:
    fuse: list[str] = []
    for group in args.options:
        for item in filter(None, (s.strip() for s in group.split(","))):
            name, eq, value = item.partition("=")
            key = name.replace("-", "_")
            key = FLAG_ALIASES.get(key, key) if not eq else key
            if name in IGNORED or item.startswith(IGNORED_PREFIXES):
                continue
            if item.startswith(MOUNT_FUSE3_ONLY):
                raise ConfigError(f"-o {item} is handled by mount.fuse3 (mount -t fuse.s3mpfs "
                                  "or fstab), not by s3mpfs itself")
            if name == "ro" and not eq:
                args.read_only = True
            elif key in S3MPFS_FLAGS and not eq:
                setattr(args, key, True)
            elif key == "tag" and eq:
                args.tag.append(value)  # repeatable, like --tag
            elif key in S3MPFS_VALUED and eq:
                setattr(args, key, int(value) if key in ("uid", "gid") else value)
            elif name in FUSE_FLAGS and not eq:
                fuse.append(name)
            elif name in FUSE_VALUED and eq:
                fuse.append(item)
            else:
                raise ConfigError(f"unknown mount option -o {item}")
    return fuse


def _modes(args: argparse.Namespace) -> tuple[int, int]:
    file_mode = parse_mode(args.file_mode) if args.file_mode else None
    dir_mode = parse_mode(args.dir_mode) if args.dir_mode else None
    if args.umask:
        mask = parse_mode(args.umask)
        file_mode = 0o666 & ~mask if file_mode is None else file_mode
        dir_mode = 0o777 & ~mask if dir_mode is None else dir_mode
    return (FsConfig.file_mode if file_mode is None else file_mode,
            FsConfig.dir_mode if dir_mode is None else dir_mode)


def parse_args(argv: list[str]) -> MountConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        fuse_options = _apply_o(args)
        bucket, prefix = parse_bucket(args.bucket)
        upload = UploadConfig(part_size=parse_size(args.part_size),
                              concurrency=int(args.upload_concurrency),
                              memory_limit=parse_size(args.memory_limit),
                              max_parts=int(args.max_parts),
                              checksum=str(args.checksum),
                              rewrite_window=int(args.rewrite_window))
        read = ReadConfig.tuned(
            read_ahead=parse_size(args.read_ahead),
            first_read=parse_size(args.first_read) if args.first_read else None,
            memory_limit=parse_size(args.read_memory))
        file_mode, dir_mode = _modes(args)
        metadata_ttl = parse_seconds(args.metadata_ttl, "--metadata-ttl")
        objects = parse_object_options(
            storage_class=args.storage_class, sse=args.sse, sse_kms_key_id=args.sse_kms_key_id,
            sse_c_key_file=args.sse_c_key_file, no_clobber=args.no_clobber,
            content_type=args.content_type, tags=args.tag, acl=args.acl)
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    fs = FsConfig(
        prefix=prefix, upload=upload, read=read,
        uid=os.getuid() if args.uid is None else args.uid,
        gid=os.getgid() if args.gid is None else args.gid,
        read_only=args.read_only, metadata_ttl=metadata_ttl, file_mode=file_mode,
        dir_mode=dir_mode, no_clobber=objects.no_clobber, durable_close=args.durable_close,
        hard_links=_hard_links(parser, args.hard_links))
    return MountConfig(
        s3=S3Config(bucket, prefix, args.endpoint_url, args.region, args.profile),
        mountpoint=args.mountpoint, fs=fs, objects=objects,
        foreground=args.foreground or args.systemd, debug=args.debug, log_file=args.log_file,
        fuse_options=tuple(fuse_options), systemd=args.systemd,
    )


def _hard_links(parser: argparse.ArgumentParser, value: str) -> str:
    if value not in HARD_LINKS:
        parser.error(f"--hard-links: {value!r} is not one of {', '.join(HARD_LINKS)}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from s3mpfs import orphans, status

    if status.wants_status(args):
        return status.main(args[1:])
    if orphans.wants_uploads(args):  # `s3mpfs uploads BUCKET`: see orphans.py for the rule
        return orphans.main(args[1:])
    cfg = parse_args(args)
    from s3mpfs.mount import run  # imported late: --help works without pyfuse3's libfuse

    return run(cfg)
