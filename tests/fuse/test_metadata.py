"""Extended attributes, kept metadata and timestamps on a real mount (setfattr/getfattr,
chmod/chown/touch/mv), checked through boto3 and after a remount (a fresh daemon knows only
what S3 holds). Whole trees through rsync -aX, cp -a and tar --xattrs: test_backup_restore."""

from __future__ import annotations

import datetime
import errno
import os
import shutil
import subprocess
from typing import Any

import pytest

from s3mpfs import xattrcodec
from tests.helpers.servers import Mount

BINARY = bytes(range(256))
HEADERS = {"CacheControl": "max-age=3600", "ContentDisposition": 'attachment; filename="r.bin"',
           "ContentEncoding": "identity", "ContentLanguage": "de-CH"}
FOREIGN = {"md5chksum": "1B2M2Y8AsgTpgAmY7PhCfg==", "application": "kept"}


def sh(cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)


def ok(cmd: str) -> str:
    r = sh(cmd)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(autouse=True)
def _needs_attr_tools() -> None:
    if shutil.which("setfattr") is None:
        pytest.skip("setfattr/getfattr missing (apt-get install attr; scripts/setup.sh does)")


def test_setfattr_getfattr_binary_values(mount: Mount, s3: Any, bucket: str) -> None:
    f = mount.mountpoint / "f"
    f.write_bytes(b"data")
    ok(f"setfattr -n user.bin -v 0x{BINARY.hex()} {f}")
    ok(f"setfattr -n user.text -v hello {f}")
    ok(f"setfattr -n user.empty {f}")
    out = ok(f"getfattr -n user.bin -e hex {f}")
    assert f"user.bin=0x{BINARY.hex()}" in out.splitlines()
    out = ok(f"getfattr -d -e hex {f}")  # what backup tools list: the stored names only
    assert [line.partition("=")[0] for line in out.splitlines()[1:] if line] == [
        "user.bin", "user.empty", "user.text"]
    stored = s3.head_object(Bucket=bucket, Key="f")["Metadata"]
    assert xattrcodec.decode(stored["xattr"]) == {"user.bin": BINARY, "user.text": b"hello",
                                                  "user.empty": b""}
    assert sorted(os.listxattr(f)) == ["user.bin", "user.empty", "user.text"]
    with pytest.raises(OSError) as exc:
        os.setxattr(f, "user.text", b"x", os.XATTR_CREATE)
    assert exc.value.errno == errno.EEXIST
    with pytest.raises(OSError) as exc:
        os.setxattr(f, "user.none", b"x", os.XATTR_REPLACE)
    assert exc.value.errno == errno.ENODATA
    with pytest.raises(OSError) as exc:
        os.setxattr(f, "user.big", b"x" * 3000)
    assert exc.value.errno == errno.E2BIG
    for name, code in (("trusted.x", errno.EOPNOTSUPP), ("user.s3.etag", errno.EPERM)):
        with pytest.raises(OSError) as exc:
            os.setxattr(f, name, b"x")
        assert exc.value.errno == code, name
    ok(f"setfattr -x user.text {f}")
    mount.remount()
    assert sorted(os.listxattr(f)) == ["user.bin", "user.empty"]
    assert os.getxattr(f, "user.bin") == BINARY
    assert f.read_bytes() == b"data"


def test_foreign_headers_and_metadata_survive_chmod_chown_touch_and_rename(
        mount: Mount, s3: Any, bucket: str) -> None:
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    for key in ("a.bin", "b.bin"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"payload", Metadata=FOREIGN,
                      ContentType="application/x-app", Expires=expires, **HEADERS)
    mnt = mount.mountpoint
    ok(f"chmod 600 {mnt}/a.bin && chown 123:456 {mnt}/a.bin && touch -d @1600000000 {mnt}/a.bin")
    ok(f"setfattr -n user.k -v v {mnt}/a.bin")
    ok(f"mv {mnt}/a.bin {mnt}/a2.bin && mv {mnt}/b.bin {mnt}/b.txt")  # same and other type
    for key, ctype in (("a2.bin", "application/x-app"), ("b.txt", "text/plain")):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert {k: head.get(k) for k in HEADERS} == HEADERS, key
        assert head["ContentType"] == ctype, key
        assert head["Expires"] == expires, key
        assert {k: head["Metadata"].get(k) for k in FOREIGN} == FOREIGN, key
    meta = s3.head_object(Bucket=bucket, Key="a2.bin")["Metadata"]
    assert (meta["mode"], meta["uid"], meta["gid"], meta["mtime"]) == (
        str(0o100600), "123", "456", "1600000000")
    assert xattrcodec.decode(meta["xattr"]) == {"user.k": b"v"}
    assert s3.get_object(Bucket=bucket, Key="b.txt")["Body"].read() == b"payload"


def test_ctime_moves_on_chmod_and_atime_survives_a_remount(mount: Mount) -> None:
    f = mount.mountpoint / "f"
    f.write_bytes(b"data")
    ok(f"touch -m -d @1500000000 {f}")
    before = os.stat(f)
    os.chmod(f, 0o600)
    after = os.stat(f)
    assert after.st_ctime_ns > before.st_ctime_ns
    assert after.st_mtime_ns == before.st_mtime_ns == 1_500_000_000 * 10**9
    z = int(ok(f"stat -c %Z {f}"))
    assert z >= int(before.st_ctime_ns // 10**9) and z > 1_500_000_000
    ok(f"touch -a -d '2001-02-03 04:05:06.5 UTC' {f}")
    atime = 981173106_500_000_000
    assert os.stat(f).st_atime_ns == atime
    assert f.read_bytes() == b"data"  # noatime: reading does not move it
    mount.remount()
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, 1_500_000_000 * 10**9)
    assert st.st_ctime_ns >= after.st_ctime_ns
