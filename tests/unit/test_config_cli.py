"""Configuration parsing (s3mpfs.config) and the command line (s3mpfs.cli)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from s3mpfs.cli import parse_args
from s3mpfs.config import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_PART_SIZE,
    DEFAULT_UPLOAD_CONCURRENCY,
    INITIAL_WINDOW,
    REQUEST_SIZE,
    ConfigError,
    FsConfig,
    GiB,
    MiB,
    MountConfig,
    ObjectOptions,
    ReadConfig,
    S3Config,
    UploadConfig,
    parse_bucket,
    parse_size,
)
from s3mpfs.fs import Filesystem
from s3mpfs.handles import ReadHandle
from s3mpfs.inodes import ROOT_INODE
from s3mpfs.store.memory import MemoryStore

# -- parse_size ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0),
    ("5242880", 5 * MiB),
    ("512", 512),
    ("16k", 16 * 1024),
    ("16K", 16 * 1024),
    ("8M", 8 * MiB),
    ("8m", 8 * MiB),
    ("8MiB", 8 * MiB),
    ("8MB", 8 * MiB),  # binary units whatever the spelling
    ("1g", GiB),
    ("1GiB", GiB),
    ("2T", 2 * 1024 * GiB),
    (" 16 M ", 16 * MiB),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "abc", "8X", "-1", "1.5M", "8 M B", "8Mi B", "0x10"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="not a size"):
        parse_size(text)


# -- parse_bucket --------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "expected"), [
    ("bucket", ("bucket", "")),
    ("my-bucket.example", ("my-bucket.example", "")),
    ("abc", ("abc", "")),
    ("bucket:", ("bucket", "")),
    ("bucket:/", ("bucket", "")),
    ("bucket:prefix", ("bucket", "prefix/")),
    ("bucket:some/prefix", ("bucket", "some/prefix/")),
    ("bucket:/some/prefix/", ("bucket", "some/prefix/")),
    ("bucket:some/prefix//", ("bucket", "some/prefix/")),
])
def test_parse_bucket(spec: str, expected: tuple[str, str]) -> None:
    assert parse_bucket(spec) == expected


@pytest.mark.parametrize("spec", [
    "", "ab", "Bucket", "UPPER", "-bucket", "bucket-", ".bucket", "bucket.", "buck et",
    "bucket/prefix", "b" * 256, ":prefix",
])
def test_parse_bucket_rejects(spec: str) -> None:
    with pytest.raises(ConfigError, match="invalid bucket name"):
        parse_bucket(spec)


# -- UploadConfig --------------------------------------------------------------------------


def test_upload_config_defaults() -> None:
    cfg = UploadConfig()
    assert (cfg.part_size, cfg.concurrency, cfg.memory_limit) == (
        DEFAULT_PART_SIZE, DEFAULT_UPLOAD_CONCURRENCY, DEFAULT_MEMORY_LIMIT)
    assert cfg.max_parts_in_memory == DEFAULT_MEMORY_LIMIT // DEFAULT_PART_SIZE


def test_upload_config_refuses_parts_below_5_mib() -> None:
    UploadConfig(part_size=5 * MiB)  # the minimum itself is fine
    with pytest.raises(ConfigError, match="5 MiB") as exc:
        UploadConfig(part_size=5 * MiB - 1)
    assert str(5 * MiB - 1) in str(exc.value)


@pytest.mark.parametrize("kw", [
    {"part_size": 5 * GiB + 1},
    {"concurrency": 0},
    {"part_size": 16 * MiB, "memory_limit": 8 * MiB},
])
def test_upload_config_rejects(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        UploadConfig(**kw)


def test_max_parts_in_memory_is_at_least_one() -> None:
    assert UploadConfig(part_size=8 * MiB, memory_limit=15 * MiB).max_parts_in_memory == 1
    assert UploadConfig(part_size=8 * MiB, memory_limit=64 * MiB).max_parts_in_memory == 8


# -- cli.parse_args ------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = parse_args(["bucket", "/mnt/x"])
    assert (cfg.s3.bucket, cfg.s3.prefix) == ("bucket", "")
    assert (cfg.s3.endpoint_url, cfg.s3.region, cfg.s3.profile) == (None, None, None)
    assert cfg.mountpoint == "/mnt/x"
    assert cfg.fs == FsConfig(uid=os.getuid(), gid=os.getgid())
    assert (cfg.fs.upload, cfg.fs.read) == (UploadConfig(), ReadConfig())
    assert (cfg.foreground, cfg.debug, cfg.fs.read_only) == (False, False, False)
    assert cfg.log_file is None
    assert cfg.fuse_options == ()


def test_long_options() -> None:
    cfg = parse_args(["bkt:data/in", "/m", "--endpoint-url", "http://127.0.0.1:9000",
                      "--region", "eu-west-1", "--profile", "p", "--part-size", "16MiB",
                      "--upload-concurrency", "8", "--memory-limit", "1G", "-f",
                      "--read-only", "--uid", "1000", "--gid", "100", "--debug",
                      "--log-file", "/tmp/log"])
    assert (cfg.s3.bucket, cfg.s3.prefix) == ("bkt", "data/in/")
    assert (cfg.s3.endpoint_url, cfg.s3.region, cfg.s3.profile) == (
        "http://127.0.0.1:9000", "eu-west-1", "p")
    assert cfg.fs.upload == UploadConfig(part_size=16 * MiB, concurrency=8, memory_limit=GiB)
    assert (cfg.foreground, cfg.fs.read_only, cfg.debug) == (True, True, True)
    assert (cfg.fs.uid, cfg.fs.gid, cfg.log_file) == (1000, 100, "/tmp/log")


def test_dash_o_mixes_fuse_s3mpfs_and_fstab_options() -> None:
    cfg = parse_args(["bucket", "/mnt", "-o",
                      "allow_other,part_size=16M,endpoint_url=http://x,_netdev,noauto,"
                      "x-systemd.automount"])
    assert cfg.fuse_options == ("allow_other",)
    assert cfg.fs.upload.part_size == 16 * MiB
    assert cfg.s3.endpoint_url == "http://x"
    assert cfg.fs.read_only is False


def test_dash_o_repeated_and_spelled_with_dashes() -> None:
    cfg = parse_args(["bucket", "/mnt", "-o", "upload-concurrency=3,uid=7", "-o",
                      "gid=8,debug,fsname=s3mpfs,nofail,x-systemd.mount-timeout=30",
                      "-o", "memory_limit=64M,region=r,profile=p,log_file=/l"])
    assert cfg.fs.upload.concurrency == 3
    assert cfg.fs.upload.memory_limit == 64 * MiB
    assert (cfg.fs.uid, cfg.fs.gid, cfg.debug) == (7, 8, True)
    assert (cfg.s3.region, cfg.s3.profile, cfg.log_file) == ("r", "p", "/l")
    assert cfg.fuse_options == ("fsname=s3mpfs",)


def test_dash_o_ro_is_read_only() -> None:
    assert parse_args(["bucket", "/mnt", "-o", "ro"]).fs.read_only is True
    assert parse_args(["bucket", "/mnt", "-o", "rw"]).fs.read_only is False


def test_dash_o_comment_is_ignored() -> None:
    """fstab's comment=... words are for userspace tools; cli.IGNORED means to skip them."""
    cfg = parse_args(["bucket", "/mnt", "-o", "comment=systemd.automount,allow_other"])
    assert cfg.fuse_options == ("allow_other",)


@pytest.mark.parametrize(("option", "shown"), [
    ("bogus", "unknown mount option -o bogus"),
    ("allow_other,frobnicate=1", "unknown mount option -o frobnicate=1"),
    ("part_size", "unknown mount option -o part_size"),  # a valued option needs its value
    ("allow_other=1", "unknown mount option -o allow_other=1"),
])
def test_unknown_dash_o_exits_2(capsys: pytest.CaptureFixture[str], option: str,
                                shown: str) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["bucket", "/mnt", "-o", option])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert shown in err
    assert err.startswith("usage: s3mpfs")


@pytest.mark.parametrize(("argv", "shown"), [
    (["--part-size", "4M"], "5 MiB"),
    (["-o", "part_size=4M"], "5 MiB"),
    (["--part-size", "lots"], "not a size"),
    (["--upload-concurrency", "0"], "at least 1"),
    (["--memory-limit", "4M"], "--memory-limit"),
    (["-o", "uid=root"], "invalid literal"),
    (["--metadata-ttl", "-1"], "between 0 and 86400"),
    (["-o", "metadata_ttl=soon"], "not a number of seconds"),
])
def test_bad_values_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                           shown: str) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["bucket", "/mnt", *argv])
    assert exc.value.code == 2
    assert shown in capsys.readouterr().err


def test_metadata_ttl_default_flag_and_option() -> None:
    assert parse_args(["bucket", "/mnt"]).fs.metadata_ttl == 5.0
    assert parse_args(["bucket", "/mnt", "--metadata-ttl", "0"]).fs.metadata_ttl == 0.0
    assert parse_args(["bucket", "/mnt", "-o", "metadata_ttl=30"]).fs.metadata_ttl == 30.0


def test_durable_close_flag_and_option() -> None:
    assert parse_args(["bucket", "/m"]).fs.durable_close is False
    assert parse_args(["bucket", "/m", "--durable-close"]).fs.durable_close is True
    assert parse_args(["bucket", "/m", "-o", "rw,durable_close"]).fs.durable_close is True


def test_bad_bucket_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["Not_A_Bucket", "/mnt"])
    assert exc.value.code == 2
    assert "invalid bucket name" in capsys.readouterr().err


def test_missing_mountpoint_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["bucket"])
    assert exc.value.code == 2
    assert "MOUNTPOINT" in capsys.readouterr().err


# -- reads: --read-ahead, --first-read, --read-memory --------------------------------------


def test_read_options_default_to_the_prefetchers_defaults() -> None:
    assert ReadConfig.tuned() == ReadConfig()
    assert parse_args(["bucket", "/mnt"]).fs.read == ReadConfig()


def test_read_options_long_and_as_o() -> None:
    long = parse_args(["bucket", "/mnt", "--read-ahead", "16M", "--first-read", "256K",
                       "--read-memory", "1G"]).fs.read
    o = parse_args(["bucket", "/mnt", "-o", "read_ahead=16M,first-read=256K",
                    "-o", "read_memory=1G"]).fs.read
    assert long == o
    assert (o.max_window, o.initial_window, o.memory_limit) == (16 * MiB, 256 * 1024, GiB)
    # what one handle may hold follows the window: it, plus the chunk at the reader and the
    # one kept behind it
    assert o.max_buffer == 16 * MiB + 2 * REQUEST_SIZE
    assert (o.request_size, o.keep_behind, o.seek_tolerance) == (
        REQUEST_SIZE, ReadConfig.keep_behind, ReadConfig.seek_tolerance)


def test_a_read_ahead_below_the_first_read_starts_the_window_there() -> None:
    read = parse_args(["bucket", "/mnt", "--read-ahead", "512K"]).fs.read
    assert (read.initial_window, read.max_window) == (512 * 1024, 512 * 1024)
    assert read.max_buffer == 3 * REQUEST_SIZE  # a read's pieces still fit
    assert parse_args(["bucket", "/mnt", "--read-ahead", "2M"]).fs.read.initial_window == \
        INITIAL_WINDOW


def test_read_memory_zero_is_allowed() -> None:
    assert parse_args(["bucket", "/mnt", "--read-memory", "0"]).fs.read.memory_limit == 0


@pytest.mark.parametrize(("argv", "shown"), [
    (["--read-ahead", "0"], "--read-ahead must be at least 1 byte"),
    (["--first-read", "0"], "--first-read must be at least 1 byte"),
    (["--first-read", "2M", "--read-ahead", "1M"],
     f"--read-ahead {MiB} is below --first-read {2 * MiB}"),
    (["-o", "first_read=128M"], f"--read-ahead {64 * MiB} is below --first-read {128 * MiB}"),
    (["--read-ahead", "lots"], "not a size"),
    (["-o", "read_memory=-1"], "not a size"),
    (["-o", "read_ahead"], "unknown mount option -o read_ahead"),
])
def test_bad_read_options_exit_2_with_one_line(capsys: pytest.CaptureFixture[str],
                                               argv: list[str], shown: str) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["bucket", "/mnt", *argv])
    assert exc.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and shown in errors[0], errors


def test_mount_config_refuses_parts_that_disagree() -> None:
    """prefix and no_clobber are read by the store side (S3Config, ObjectOptions) and by the
    filesystem (FsConfig): a MountConfig whose copies differ is a bug, refused at once."""
    s3 = S3Config("bucket", "pre/")
    MountConfig(s3, "/mnt", fs=FsConfig(prefix="pre/"))
    with pytest.raises(ValueError, match="must match"):
        MountConfig(s3, "/mnt")  # fs.prefix ""
    with pytest.raises(ValueError, match="must match"):
        MountConfig(s3, "/mnt", fs=FsConfig(prefix="pre/"),
                    objects=ObjectOptions(no_clobber=True))
    cfg = parse_args(["bucket:pre", "/mnt", "--no-clobber"])
    assert (cfg.fs.prefix, cfg.fs.no_clobber) == ("pre/", True)


async def _read_through(argv: list[str], size: int) -> tuple[list[tuple[int, int]], int]:
    """Mount-free: the filesystem built from this command line reads a `size`-byte object
    sequentially in 128 KiB reads; the GET ranges its reader started, and the read budget's
    limit."""
    store = MemoryStore()
    data = os.urandom(size)
    await store.put("obj", data, metadata={})
    fs = Filesystem(store, parse_args(["bucket", "/mnt", *argv]).fs)
    async with trio.open_nursery() as nursery:
        fs.start(nursery)
        inode = await fs.lookup(ROOT_INODE, "obj")
        fh = await fs.open(inode.ino, os.O_RDONLY)
        handle = fs.handles.get(fh)
        assert isinstance(handle, ReadHandle)
        got = b"".join([bytes(await fs.read(fh, off, 128 * 1024))
                        for off in range(0, size, 128 * 1024)])
        assert got == data
        assert handle.reader is not None
        ranges = list(handle.reader.ranges)
        await fs.release(fh)
    return ranges, fs.reads.budget.limit


async def test_the_filesystem_reads_with_the_command_lines_read_options() -> None:
    ranges, limit = await _read_through([], 24 * MiB)
    assert ranges[0] == (0, INITIAL_WINDOW) and limit == ReadConfig.memory_limit
    assert max(b - a for a, b in ranges) == REQUEST_SIZE  # the window grew to full requests

    ranges, limit = await _read_through(["--first-read", "256K", "--read-ahead", "1M",
                                         "--read-memory", "100M"], 24 * MiB)
    assert ranges[0] == (0, 256 * 1024) and limit == 100 * MiB
    assert max(b - a for a, b in ranges) <= MiB  # never more than the read-ahead at once


async def test_read_memory_zero_fetches_only_what_is_read() -> None:
    ranges, limit = await _read_through(["--read-memory", "0"], 4 * MiB)
    assert limit == 0
    assert ranges == [(off, off + 128 * 1024) for off in range(0, 4 * MiB, 128 * 1024)]


def test_help_and_bad_options_need_no_libfuse() -> None:
    """`s3mpfs --help` and a bad option's message work where pyfuse3 cannot be imported (no
    libfuse): cli.py and config.py do not import it."""
    script = ("import sys; sys.modules['pyfuse3'] = None; from s3mpfs.cli import main; "
              "main(sys.argv[1:])")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    shown = subprocess.run([sys.executable, "-c", script, "--help"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "--read-ahead SIZE" in shown.stdout and "reads:" in shown.stdout
    bad = subprocess.run([sys.executable, "-c", script, "bkt", "/mnt", "--read-ahead", "0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "--read-ahead must be at least 1 byte" in bad.stderr
    assert "pyfuse3" not in bad.stderr
