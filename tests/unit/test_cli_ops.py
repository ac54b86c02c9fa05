"""Operating s3mpfs: the command line as mount.fuse3 calls it, permission options, the status
subcommand rule, the progress/status extended attributes (on MemoryStore), and the S3
request log hooks (against moto through the fault-injecting proxy)."""

from __future__ import annotations

import errno
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from s3mpfs import cli, status, xattrs
from s3mpfs.config import MiB, S3Config, UploadConfig, parse_mode
from s3mpfs.errors import FsError
from s3mpfs.fs import Filesystem, FsOptions
from s3mpfs.inodes import ROOT_INODE
from s3mpfs.store.boto import BotoStore
from s3mpfs.store.memory import MemoryStore
from tests.helpers.faults import FaultyStore
from tests.helpers.s3proxy import S3Proxy

ROOT = Path(__file__).resolve().parents[2]
PART = 5 * MiB

# -- the command line as mount.fuse3 builds it ----------------------------------------------


def test_mount_fuse3_invocation_is_accepted() -> None:
    """mount -t fuse.s3mpfs bkt:pre /mnt/x -o _netdev,allow_other,part_size=16M runs
    `s3mpfs bkt:pre /mnt/x -o rw,allow_other,part_size=16M,dev,suid` (traced with strace;
    mount.fuse3 drops _netdev and appends dev,suid as root)."""
    cfg = cli.parse_args(["bkt:pre", "/mnt/x", "-o", "rw,allow_other,part_size=16M,dev,suid"])
    assert (cfg.s3.bucket, cfg.s3.prefix, cfg.mountpoint) == ("bkt", "pre/", "/mnt/x")
    assert cfg.fs.upload.part_size == 16 * MiB
    assert cfg.fuse_options == ("allow_other", "dev", "suid")
    assert cfg.fs.read_only is False and cfg.foreground is False


def test_every_generic_mount_flag_libfuse_knows_is_passed_through() -> None:
    flags = ("nodev,nosuid,noexec,exec,atime,noatime,diratime,nodiratime,relatime,norelatime,"
             "strictatime,nostrictatime,lazytime,nolazytime,dirsync,auto_unmount")
    cfg = cli.parse_args(["bkt", "/m", "-o", flags])
    assert cfg.fuse_options == tuple(flags.split(","))


@pytest.mark.parametrize("word", [
    "_netdev", "noauto", "auto", "nofail", "user", "users", "nouser", "defaults", "rw", "sync",
    "async", "nonempty", "user=joe", "x-systemd.automount", "x-systemd.idle-timeout=60",
    "x-gvfs-show", "x-mount.mkdir", "comment=x-gvfs-show",
])
def test_fstab_words_are_ignored(word: str) -> None:
    cfg = cli.parse_args(["bkt", "/m", "-o", f"{word},allow_other"])
    assert cfg.fuse_options == ("allow_other",)
    assert cfg.fs.read_only is False


@pytest.mark.parametrize("item", ["setuid=backup", "drop_privileges"])
def test_mount_fuse3_only_options_are_refused_when_given_directly(
        item: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["bkt", "/m", "-o", item])
    assert exc.value.code == 2
    assert "handled by mount.fuse3" in capsys.readouterr().err


def test_options_may_come_before_the_positionals() -> None:
    cfg = cli.parse_args(["-o", "ro,debug", "bkt", "/m"])
    assert cfg.fs.read_only and cfg.debug


# -- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "mode"), [("0640", 0o640), ("640", 0o640), ("0o750", 0o750),
                                            ("0", 0), ("4755", 0o4755)])
def test_parse_mode(text: str, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize("argv", [["--file-mode", "0999"], ["--dir-mode", "rwx"],
                                  ["-o", "umask=8"], ["--file-mode", "77777"]])
def test_bad_modes_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["bkt", "/m", *argv])
    assert exc.value.code == 2
    assert "not an octal mode" in capsys.readouterr().err


def test_modes_from_options_and_umask() -> None:
    cfg = cli.parse_args(["bkt", "/m"])
    assert (cfg.fs.file_mode, cfg.fs.dir_mode) == (0o644, 0o755)
    cfg = cli.parse_args(["bkt", "/m", "--file-mode", "0640", "--dir-mode", "0750"])
    assert (cfg.fs.file_mode, cfg.fs.dir_mode) == (0o640, 0o750)
    cfg = cli.parse_args(["bkt", "/m", "-o", "umask=027,uid=33,gid=34"])
    assert (cfg.fs.file_mode, cfg.fs.dir_mode, cfg.fs.uid, cfg.fs.gid) == (0o640, 0o750, 33, 34)
    cfg = cli.parse_args(["bkt", "/m", "-o", "umask=077,file_mode=0644"])
    assert (cfg.fs.file_mode, cfg.fs.dir_mode) == (0o644, 0o700)  # explicit mode wins
    cfg = cli.parse_args(["bkt", "/m", "--umask", "022"])
    assert (cfg.fs.file_mode, cfg.fs.dir_mode) == (0o644, 0o755)


def test_systemd_flag_implies_foreground() -> None:
    cfg = cli.parse_args(["bkt", "/m", "--systemd"])
    assert cfg.systemd and cfg.foreground
    assert cli.parse_args(["bkt", "/m", "-o", "systemd"]).foreground


async def test_default_modes_apply_to_objects_without_metadata() -> None:
    mem = MemoryStore()
    await mem.put("plain", b"x", metadata={})
    await mem.put("d/inside", b"x", metadata={})
    await mem.put("withmeta", b"x", metadata={"mode": str(0o100600)})
    fs = Filesystem(mem, FsOptions(uid=33, gid=34, file_mode=0o640, dir_mode=0o750))
    plain = await fs.lookup(ROOT_INODE, "plain")
    assert (plain.mode & 0o7777, plain.uid, plain.gid) == (0o640, 33, 34)
    d = await fs.lookup(ROOT_INODE, "d")
    assert d.mode & 0o7777 == 0o750
    assert fs.inodes[ROOT_INODE].mode & 0o7777 == 0o750
    withmeta = await fs.lookup(ROOT_INODE, "withmeta")
    assert withmeta.mode & 0o7777 == 0o600  # stored metadata wins


# -- --help and the README ------------------------------------------------------------------


def test_help_is_grouped_and_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for heading in ("S3 connection:", "uploads:", "mount:", "permissions:", "logging:",
                    "commands:", "examples:"):
        assert heading in out, heading
    assert "s3mpfs status MOUNTPOINT" in out
    assert out.startswith("usage: s3mpfs BUCKET[:PREFIX] MOUNTPOINT [options]")


def test_readme_documents_every_option() -> None:
    readme = (ROOT / "README.md").read_text()
    parser = cli._parser()
    options = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    missing = sorted(o for o in options - {"--help"} if f"`{o}" not in readme)
    assert not missing, f"README.md does not document {missing}"
    for word in sorted(cli.S3MPFS_VALUED | cli.S3MPFS_FLAGS):
        assert word in readme or word.replace("_", "-") in readme, word


# -- the status subcommand rule -------------------------------------------------------------

MOUNTINFO = (
    "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
    "90 29 0:50 / /mnt/my\\040backups rw,nosuid,nodev,relatime shared:1 - fuse.s3mpfs "
    "s3mpfs:bkt rw,user_id=0,group_id=0,default_permissions\n"
    "91 29 0:51 / /mnt/other rw - fuse.sshfs host:/ rw\n"
)


def test_parse_mountinfo_unescapes_and_skips_optional_fields() -> None:
    entries = status.parse_mountinfo(MOUNTINFO)
    assert entries[1] == status.MountEntry("/mnt/my backups", "fuse.s3mpfs", "s3mpfs:bkt",
                                           "rw,nosuid,nodev,relatime")
    assert status.find_mount("/mnt/other", MOUNTINFO) == entries[2]
    assert status.find_mount("/mnt/none", MOUNTINFO) is None


@pytest.mark.parametrize(("argv", "expected"), [
    (["status", "/mnt/my backups"], True),  # an s3mpfs mount point: the subcommand
    (["status", "/mnt/my backups", "--json"], True),
    (["status", "/mnt/other"], False),  # not s3mpfs: mount bucket "status" (refused: busy)
    (["status", "/mnt/none"], False),  # not a mount: mount bucket "status" there
    (["status"], False),
    (["--status", "/mnt/none"], True),  # explicit spelling: always the subcommand
    (["mybucket", "/mnt/my backups"], False),
])
def test_status_subcommand_rule(argv: list[str], expected: bool) -> None:
    assert status.wants_status(argv, MOUNTINFO) is expected


def test_format_status_table() -> None:
    data = {"version": "1", "pid": 7, "parts_in_flight": 3, "max_parts_in_flight": 32,
            "uploads": [{"path": "a/backup.tar", "written": 3 * 1024**3, "uploaded": 2 * MiB,
                         "parts_done": 1, "parts_in_flight": 3, "state": "writing"}],
            "more_uploads": 2}
    text = status.format_status("/mnt/x", "s3mpfs:bkt", data)
    lines = text.splitlines()
    assert "3 uploads open, 3 of 32 parts in flight" in lines[0]
    assert re.search(r"3\.0 GiB\s+2\.0 MiB\s+1\s+3\s+writing\s+a/backup\.tar$", lines[2])
    assert lines[-1] == "... and 2 more"
    empty = status.format_status("/mnt/x", "s3mpfs:bkt", {"uploads": []})
    assert "0 uploads open" in empty and len(empty.splitlines()) == 1


def test_status_of_a_directory_that_is_not_a_mount(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--status", str(tmp_path)]) == 1
    assert "is not an s3mpfs mount point" in capsys.readouterr().err


# -- extended attributes on the filesystem core ----------------------------------------------


@pytest.fixture
async def faulty() -> AsyncIterator[tuple[Filesystem, FaultyStore]]:
    store = FaultyStore(MemoryStore())
    upload = UploadConfig(part_size=PART, concurrency=2, memory_limit=8 * PART)
    async with trio.open_nursery() as n:
        fs = Filesystem(store, FsOptions(upload=upload, uid=1, gid=1))
        fs.start(n)
        yield fs, store


async def _progress(fs: Filesystem, ino: int) -> dict[str, str]:
    return xattrs.parse_progress(await fs.getxattr(ino, xattrs.PROGRESS))


async def test_progress_follows_a_write(faulty: tuple[Filesystem, FaultyStore]) -> None:
    fs, store = faulty
    gate = store.gate("upload_part")
    inode, fh = await fs.create(ROOT_INODE, "big", 0o644, 1, 1)
    assert await _progress(fs, inode.ino) == {
        "state": "open", "written": "0", "uploaded": "0", "parts_done": "0",
        "parts_in_flight": "0", "buffered": "0"}
    await fs.write(fh, 0, bytes(2 * PART + 100))
    await trio.testing.wait_all_tasks_blocked()
    p = await _progress(fs, inode.ino)
    assert p["state"] == "writing"
    assert (p["written"], p["uploaded"], p["buffered"]) == (str(2 * PART + 100), "0", "100")
    assert (p["parts_done"], p["parts_in_flight"]) == ("0", "2")  # held at the gate
    st = json.loads(await fs.getxattr(ROOT_INODE, xattrs.STATUS))
    assert st["parts_in_flight"] == 2
    assert [(u["path"], u["parts_in_flight"]) for u in st["uploads"]] == [("big", 2)]
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    p = await _progress(fs, inode.ino)
    assert (p["parts_done"], p["parts_in_flight"], p["uploaded"]) == ("2", "0", str(2 * PART))
    await fs.flush(fh)
    p = await _progress(fs, inode.ino)
    assert (p["state"], p["uploaded"]) == ("stored", str(2 * PART + 100))
    await fs.release(fh)
    assert await _errno(fs.getxattr(inode.ino, xattrs.PROGRESS)) == errno.ENODATA
    assert json.loads(await fs.getxattr(ROOT_INODE, xattrs.STATUS))["uploads"] == []


async def _ours(fs: Filesystem, ino: int) -> list[str]:
    """The user.s3mpfs.* names listxattr reports (user.s3.* belong to S3's attributes)."""
    return [n for n in await fs.listxattr(ino) if n.startswith("user.s3mpfs.")]


async def test_xattr_names_and_unknown_names(faulty: tuple[Filesystem, FaultyStore]) -> None:
    fs, _ = faulty
    inode, fh = await fs.create(ROOT_INODE, "f", 0o644, 1, 1)
    assert await _ours(fs, inode.ino) == []  # read by name only: listed, cp -a / rsync -X
    assert await fs.getxattr(inode.ino, xattrs.PROGRESS)  # would copy or try to remove it
    assert await _ours(fs, ROOT_INODE) == []
    for name in ("user.s3mpfs.nope", "security.capability", xattrs.STATUS):
        assert await _errno(fs.getxattr(inode.ino, name)) == errno.ENODATA
    assert await _errno(fs.getxattr(ROOT_INODE, xattrs.PROGRESS)) == errno.ENODATA
    assert await _errno(fs.getxattr(12345, xattrs.PROGRESS)) == errno.ENOENT
    await fs.release(fh)
    assert await _ours(fs, inode.ino) == []


async def test_status_xattr_stays_under_the_kernel_limit(
        faulty: tuple[Filesystem, FaultyStore]) -> None:
    fs, _ = faulty
    handles = [(await fs.create(ROOT_INODE, f"{i:04d}-" + "n" * 200, 0o644, 1, 1))[1]
               for i in range(400)]
    value = await fs.getxattr(ROOT_INODE, xattrs.STATUS)
    assert len(value) <= xattrs.STATUS_MAX_BYTES
    st = json.loads(value)
    assert len(st["uploads"]) + st["more_uploads"] == 400
    assert st["more_uploads"] > 0
    for fh in handles:
        await fs.release(fh)


async def _errno(call: Any) -> int:
    with pytest.raises(FsError) as exc:
        await call
    return exc.value.errno


# -- S3 request log ---------------------------------------------------------------------------


async def test_retries_are_logged_as_warnings(proxy: S3Proxy, bucket: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    store = BotoStore(S3Config(bucket, endpoint_url=proxy.url), threads=2)
    proxy.add_fault("PutObject", "status", status=503, times=2)
    with caplog.at_level(logging.DEBUG, logger="s3mpfs.s3"):
        await store.put("dir/k.txt", b"x", metadata={})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "S3 PutObject dir/k.txt: retrying (attempt 2 of 5) after HTTP 503 SlowDown",
        "S3 PutObject dir/k.txt: retrying (attempt 3 of 5) after HTTP 503 SlowDown",
    ]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 3  # one line per HTTP attempt
    assert re.fullmatch(r"S3 PutObject dir/k\.txt: HTTP 200 in \d+\.\d{3} s", debug[-1])
    assert proxy.counts()["PutObject"] == 3


async def test_connection_failures_name_the_cause_without_the_query(
        proxy: S3Proxy, bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    store = BotoStore(S3Config(bucket, endpoint_url=proxy.url), threads=2)
    upload_id = await store.create_upload("big", metadata={})
    proxy.add_fault("UploadPart", "reset", times=1)
    with caplog.at_level(logging.WARNING, logger="s3mpfs.s3"):
        await store.upload_part("big", upload_id, 7, b"y" * 100)
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message.startswith("S3 UploadPart big part 7: retrying (attempt 2 of 5) after ")
    assert "Error" in message  # the exception's class, e.g. ConnectionClosedError
    assert "uploadId" not in message and "?" not in message
