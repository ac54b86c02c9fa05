"""openers.py against this test process's own descriptors in /proc."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from s3mpfs import openers


def _mnt_and_ino(fd: int) -> tuple[int, int]:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        info = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    return int(info["mnt_id"]), os.fstat(fd).st_ino


def test_a_writable_descriptor_is_found_and_forgotten_once_closed(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    mnt, ino = _mnt_and_ino(fd)
    assert openers.holds_writable(os.getpid(), mnt, ino)
    assert not openers.holds_writable(os.getpid(), mnt + 1, ino)  # another mount
    os.close(fd)
    assert not openers.holds_writable(os.getpid(), mnt, ino)


def test_read_only_and_path_descriptors_do_not_count(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    fds = [os.open(tmp_path / "f", os.O_RDONLY), os.open(tmp_path / "f", os.O_PATH)]
    try:
        mnt, ino = _mnt_and_ino(fds[0])
        assert not openers.holds_writable(os.getpid(), mnt, ino)
        rw = os.open(tmp_path / "f", os.O_RDWR)
        assert openers.holds_writable(os.getpid(), mnt, ino)
        os.close(rw)
    finally:
        for fd in fds:
            os.close(fd)


def test_a_thread_maps_to_its_process_and_a_gone_one_to_none() -> None:
    seen: list[int | None] = []
    t = threading.Thread(target=lambda: seen.append(openers.process_of(threading.get_native_id())))
    t.start()
    t.join()
    assert seen == [os.getpid()]
    assert openers.process_of(2**22 + 1) is None  # above the kernel's pid_max limit
    assert not openers.holds_writable(2**22 + 1, 1, 1)
