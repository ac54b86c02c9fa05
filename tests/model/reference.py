"""A reference model of what S3 must hold while s3mpfs (fs.Filesystem) is driven by a client.

The model is written from the documented rules (README "Semantics", the fs.py docstring's flush
rule, upload.py's "where writes may land", the Upload.rename and Filesystem.rename docstrings),
not from the implementation:

  * an object appears or changes only when a commit succeeds: a close (FUSE flush) after new
    bytes, an fsync, or the release of a handle still holding uncommitted bytes (a file never
    written is stored as a 0-byte object on release);
  * a flush with nothing new does nothing;
  * writes may land at the end, beyond the end (zero-filled), in the filling buffer, in
    part 1 of a fresh upload (kept and re-uploaded), or in the object a continued/append
    upload stands on (its base: edited block by block in memory, each block fetched with
    If-Match, the untouched rest copied with If-Match at the commit); a write into anything
    else already sent (other uploaded parts) fails with EINVAL and the handle fails: every
    later write/flush/close is EIO and S3 keeps the previous object;
  * a write after a commit continues the same file, a later commit stores the longer file;
  * open without O_TRUNC keeps the bytes (append, small in-place edits);
  * truncate grows with zeros, shrinks within the filling buffer, or starts over at 0;
    shrinking into uploaded parts is ENOTSUP and changes nothing;
  * chmod/utime ride on a pending upload, else rewrite x-amz-meta-* by copying the object;
  * unlink deletes the key; a file unlinked while being written is never stored;
  * rename copies the object(s) and deletes the source; a file being written moves with its
    upload (a multipart upload open under the old key is committed first, as a close would,
    so the old name is gone when rename returns);
  * mkdir/rmdir write/delete "dir/" markers; a directory exists when it has a marker or keys.

S3 is modelled exactly (key -> bytes, x-amz-meta-mode, x-amz-meta-mtime where known). The
namespace the filesystem shows (lookup, readdir) is modelled as POSIX wants it: S3's keys plus
files being written, where a file renamed while its upload is open is under its new name only.

Another client's changes (RemotePut/RemoteDelete) may hit a file being written: the model
knows which object each upload stands on (an ETag identity, `token`) and, as documented, a
continued or appended upload whose base object was replaced fails instead of splicing, with the
errno errors.errno_for gives S3's answer to its If-Match (ESTALE; ENOENT once the key is gone),
and every later write/flush/close of it repeats that errno.
"""

from __future__ import annotations

import errno
import itertools
import stat
from dataclasses import dataclass, field

MiB = 1024 * 1024
PART = 5 * MiB  # UploadConfig(part_size=...) used by the tests; also S3's minimum part
MIN_PART = 5 * MiB  # an existing object at least this big is copied server side, not fetched
# Past the rewrite window (the concurrency, 2) and every buffer the pool keeps (3), plus the
# part being filled: an uploaded part this far behind the buffer has no buffer left.
HELD_FOR_SURE_GONE = (2 + 3 + 1) * PART
CAP = 12 * MiB  # files never grow beyond this in the generated runs (speed)
DEFAULT_FILE_MODE = stat.S_IFREG | 0o644
DEFAULT_DIR_MODE = stat.S_IFDIR | 0o755

NEW, DIRTY, CLEAN, FAILED, DISCARDED = "new", "dirty", "clean", "failed", "discarded"


# -- operations ------------------------------------------------------------------------------
# Abstract operations, as hypothesis generates them (and regression tests spell them out).
# Handles are named by `slot`, taken modulo the number of open handles (in opening order).


@dataclass(frozen=True)
class Create:  # open(O_CREAT | O_EXCL | O_WRONLY)
    path: str
    mode: int = 0o644


@dataclass(frozen=True)
class Open:  # open(O_CREAT | O_WRONLY [| O_TRUNC]): overwrite (trunc) or append (no trunc)
    path: str
    trunc: bool = True


@dataclass(frozen=True)
class Write:
    slot: int = 0
    at: str = "end"  # end | zero | inside | beyond
    pos: int = 0  # inside: percent of the size; beyond: the gap in KiB (+1 byte)
    length: int = 1
    boundary: int | None = None  # if set: length = bytes to the next part boundary + this
    fill: int = 0


@dataclass(frozen=True)
class Flush:  # close() of a dup'd descriptor: FUSE flush only
    slot: int = 0


@dataclass(frozen=True)
class Fsync:
    slot: int = 0


@dataclass(frozen=True)
class Close:  # last close: flush + release
    slot: int = 0


@dataclass(frozen=True)
class Truncate:  # truncate(path, size)
    path: str
    how: str = "zero"  # zero | shrink | grow
    amount: int = 0


@dataclass(frozen=True)
class Chmod:
    path: str
    mode: int = 0o600


@dataclass(frozen=True)
class Utime:
    path: str
    mtime_ns: int = 1_600_000_000_000_000_000


@dataclass(frozen=True)
class Mkdir:
    path: str
    mode: int = 0o755


@dataclass(frozen=True)
class Rmdir:
    path: str


@dataclass(frozen=True)
class Unlink:
    path: str


@dataclass(frozen=True)
class Rename:
    src: str
    dst: str


@dataclass(frozen=True)
class RemotePut:  # another client's PutObject (no x-amz-meta unless mode is given)
    path: str
    length: int = 10
    mode: int | None = None


@dataclass(frozen=True)
class RemoteDelete:  # another client's DeleteObject
    path: str


@dataclass(frozen=True)
class ReadOpen:  # open(O_RDONLY), kept open across the following operations
    path: str


@dataclass(frozen=True)
class Read:
    slot: int = 0  # of the read handles
    pos: int = 0  # percent of the size at open
    length: int = 4096


@dataclass(frozen=True)
class ReadClose:
    slot: int = 0


Op = (Create | Open | Write | Flush | Fsync | Close | Truncate | Chmod | Utime | Mkdir | Rmdir
      | Unlink | Rename | RemotePut | RemoteDelete | ReadOpen | Read | ReadClose)


# Concrete forms: offsets, sizes and handle indexes resolved against the model's state, so the
# model and the driver apply exactly the same call.


@dataclass(frozen=True)
class WriteAt:
    index: int
    offset: int
    length: int
    fill: int

    def data(self) -> bytes:
        return bytes([self.fill]) * self.length


@dataclass(frozen=True)
class OnHandle:
    kind: str  # flush | fsync | close
    index: int


@dataclass(frozen=True)
class TruncateTo:
    path: str
    size: int


@dataclass(frozen=True)
class PutBytes:  # RemotePut with its bytes chosen
    path: str
    data: bytes
    mode: int | None


@dataclass(frozen=True)
class ReadAt:
    index: int
    offset: int
    length: int


@dataclass(frozen=True)
class ReadCloseAt:
    index: int


Concrete = (Create | Open | WriteAt | OnHandle | TruncateTo | Chmod | Utime | Mkdir | Rmdir
            | Unlink | Rename | PutBytes | RemoteDelete | ReadOpen | ReadAt | ReadCloseAt)


def remote_bytes(serial: int, length: int) -> bytes:
    """Another client's content: unique per put, so its ETag always differs."""
    tag = f"R{serial}:".encode()
    return (tag * (length // len(tag) + 1))[:length]


class Unmodelled(Exception):  # noqa: N818 - not an error: "this case is out of scope"
    """A situation the documented rules do not decide; the example is discarded."""


# -- state -----------------------------------------------------------------------------------


@dataclass(eq=False)
class Obj:
    data: bytes
    mode: int | None  # x-amz-meta-mode; None: absent or not predicted (not checked)
    mtime: int | None  # x-amz-meta-mtime in ns; None: not predicted (not checked)
    token: int  # ETag identity: copies keep it, every new upload or put makes a new one


@dataclass(eq=False)
class Writer:
    """One handle open for writing, as upload.py documents its regions and states."""

    path: str | None  # where the file is in the namespace; None once unlinked/replaced
    key: str  # the S3 key its commits go to
    data: bytearray
    state: str
    mode: int
    mtime: int | None
    base_len: int = 0  # [0, base_len) is copied from the committed/existing object
    edited: set[int] = field(default_factory=set)  # blocks of the base fetched and edited
    buf_start: int = 0  # file offset of the filling buffer
    mp_open: bool = False  # a multipart upload is open (parts were sent)
    lazy: bool = False  # an existing object, not yet fetched or copied (open without O_TRUNC)
    token: int | None = None  # the object this upload stands on (upload.etag)
    inode_token: int | None = None  # the object the inode knows (inode.etag)
    pending_move: str | None = None  # renamed with a multipart upload open
    meta_sent: bool = False  # x-amz-meta went out with a CreateMultipartUpload/PutObject
    meta_changed: bool = False  # chmod/utime after that, to apply after the commit
    error: int = errno.EIO  # what every call fails with once FAILED
    detached: bool = False  # unlinked while open: written and read on, never stored

    @property
    def live(self) -> bool:
        return self.path is not None


@dataclass(eq=False)
class ReaderModel:
    """A read handle: every GET carries If-Match with the ETag seen at open, so it reads the
    object it opened or fails (ESTALE, ENOENT once the key is gone), never other bytes; until
    it has read a byte, a replaced object is read in its new version (a 412 refreshes it).
    Opened while the file is written (token None), it reads what the writers hold."""

    key: str
    data: bytes
    token: int | None
    served: bool = False  # it returned bytes (the driver says so)
    writers: list[Writer] = field(default_factory=list)  # the file's, when it was opened


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


class Model:
    def __init__(self, *, skip_known_bugs: bool = False) -> None:
        self.objects: dict[str, Obj] = {}
        self.handles: list[Writer] = []
        self._tokens = itertools.count(1)
        self.remote_serial = itertools.count(1)
        # With skip_known_bugs, an example about to run into a bug already reported (each has
        # a test_regression_* test) is discarded (Unmodelled) so the search goes on past it.
        self.skip_known_bugs = skip_known_bugs
        # Paths the Filesystem has inodes for (the checks look every existing path up, and
        # lookups keep them: the kernel never forgets in these runs); only used to recognise
        # a known bug.
        self.inode_paths: set[str] = set()
        self.readers: list[ReaderModel] = []
        # What the last ReadAt may return when it succeeds.
        self.expected_reads: list[bytes] = []

    def _known_bug(self, what: str) -> None:
        if self.skip_known_bugs:
            raise Unmodelled(f"known bug: {what}")

    def _move_inodes(self, src: str, dst: str) -> None:
        self.inode_paths.discard(dst)
        moved = {p for p in self.inode_paths if p == src or p.startswith(src + "/")}
        self.inode_paths -= moved
        self.inode_paths |= {dst + p[len(src):] for p in moved}

    # -- views -------------------------------------------------------------------------------

    def token(self) -> int:
        return next(self._tokens)

    def writer_at(self, path: str) -> Writer | None:
        for w in self.handles:
            if w.path == path:
                return w
        return None

    def _ghosts(self) -> set[str]:
        """Keys whose object moved away by a rename that S3 will only see at the next commit
        (Upload.rename: the object moves inside that commit)."""
        return {w.key for w in self.handles
                if w.live and w.pending_move is not None and w.token is not None}

    def visible_keys(self) -> list[str]:
        ghosts = self._ghosts()
        return [k for k in self.objects if k not in ghosts]

    def kind(self, path: str) -> str | None:
        if path == "":
            return "dir"
        if self.writer_at(path) is not None:
            return "file"
        keys = self.visible_keys()
        if any(k.startswith(path + "/") for k in keys):
            return "dir"
        if path in keys:
            return "file"
        return None

    def size(self, path: str) -> int:
        w = self.writer_at(path)
        return len(w.data) if w is not None else len(self.objects[path].data)

    def stat_mode(self, path: str) -> int | None:
        """st_mode that stat must show (x-amz-meta-mode, else the mount's default)."""
        if self.kind(path) == "dir":
            return self.dir_mode(path)[0]
        w = self.writer_at(path)
        if w is not None:
            return w.mode
        obj = self.objects[path]
        return obj.mode if obj.mode is not None else DEFAULT_FILE_MODE

    def children(self, path: str) -> set[str]:
        prefix = path + "/" if path else ""
        names = set()
        for k in self.visible_keys():
            if k.startswith(prefix) and len(k) > len(prefix):
                names.add(k[len(prefix):].split("/")[0])
        for w in self.handles:
            if w.path is not None and parent_of(w.path) == path:
                names.add(w.path.rpartition("/")[2])
        return names

    def dirs(self) -> list[str]:
        out = {""}
        for k in self.visible_keys():
            parts = k.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return sorted(out)

    def files(self) -> list[str]:
        out = {k for k in self.visible_keys() if not k.endswith("/")}
        out |= {w.path for w in self.handles if w.path is not None}
        return sorted(p for p in out if self.kind(p) == "file")

    def path_error(self, path: str) -> int:
        """errno of walking to path's parent (0 if it is a directory)."""
        parts = path.split("/")
        for i in range(1, len(parts)):
            k = self.kind("/".join(parts[:i]))
            if k is None:
                return errno.ENOENT
            if k == "file":
                return errno.ENOTDIR
        return 0

    def lookup_error(self, path: str) -> int:
        err = self.path_error(path)
        if err:
            return err
        return 0 if self.kind(path) is not None else errno.ENOENT

    def dir_mode(self, path: str) -> tuple[int, int | None]:
        marker = self.objects.get(path + "/")
        if marker is None:
            return DEFAULT_DIR_MODE, None
        return (marker.mode if marker.mode is not None else DEFAULT_DIR_MODE), marker.mtime

    # -- concretisation ----------------------------------------------------------------------

    def concretize(self, op: Op) -> Concrete | None:
        """The exact call this op makes in the current state, or None to skip it."""
        if isinstance(op, Write):
            if not self.handles:
                return None
            index = op.slot % len(self.handles)
            size = len(self.handles[index].data)
            if op.at == "end":
                offset = size
            elif op.at == "zero":
                offset = 0
            elif op.at == "inside":
                offset = size * op.pos // 100
            else:
                offset = size + op.pos * 1024 + 1
            length = op.length
            if op.boundary is not None:
                length = max(1, PART - offset % PART + op.boundary)
            length = min(length, CAP - offset)
            if length <= 0:
                return None
            return WriteAt(index, offset, length, op.fill)
        if isinstance(op, Flush | Fsync | Close):
            if not self.handles:
                return None
            kind = {Flush: "flush", Fsync: "fsync", Close: "close"}[type(op)]
            return OnHandle(kind, op.slot % len(self.handles))
        if isinstance(op, ReadOpen):
            return None if self.writer_at(op.path) is not None else op
        if isinstance(op, Read | ReadClose):
            if not self.readers:
                return None
            index = op.slot % len(self.readers)
            if isinstance(op, ReadClose):
                return ReadCloseAt(index)
            size = len(self.readers[index].data)
            return ReadAt(index, size * op.pos // 100, op.length)
        if isinstance(op, Truncate):
            size = self.size(op.path) if self.kind(op.path) == "file" and \
                self.lookup_error(op.path) == 0 else 0
            if op.how == "zero":
                new = 0
            elif op.how == "shrink":
                new = max(0, size - op.amount)
            else:
                new = min(CAP, size + op.amount)
            return TruncateTo(op.path, new)
        if isinstance(op, Open):
            w = self.writer_at(op.path)
            if w is not None:
                return None  # one write handle per file (two open()s are not modelled)
            return op
        if isinstance(op, RemotePut):
            if self._remote_blocked(op.path) or self.kind(op.path) == "dir":
                return None
            parts = op.path.split("/")
            for i in range(1, len(parts)):
                if self.kind("/".join(parts[:i])) == "file":
                    return None
            return PutBytes(op.path, remote_bytes(next(self.remote_serial), op.length),
                            op.mode)
        if isinstance(op, RemoteDelete):
            if self._remote_blocked(op.path) or op.path not in self.objects:
                return None
            return op
        return op

    def _remote_blocked(self, path: str) -> bool:
        """Another client may replace or delete the object of a file being written (the
        upload's ETag pins decide what happens), but not the old key of a file renamed while
        its multipart upload is open (a known bug, test_regression_rename_*)."""
        return any(w.pending_move is not None and path in (w.key, w.pending_move)
                   for w in self.handles if w.state != DISCARDED)

    # -- applying ----------------------------------------------------------------------------

    def apply(self, op: Concrete) -> set[int]:
        """Apply op; return the errnos it may end with (0: success)."""
        method = getattr(self, "_" + type(op).__name__.lower())
        result = method(op)
        self.inode_paths |= set(self.files()) | set(self.dirs())
        return result if isinstance(result, set) else {result}

    def _create(self, op: Create) -> int:
        err = self.path_error(op.path)
        if err:
            return err
        if self.kind(op.path) is not None:
            return errno.EEXIST
        self.handles.append(Writer(op.path, op.path, bytearray(), NEW,
                                   stat.S_IFREG | op.mode, None))
        return 0

    def _open(self, op: Open) -> int:
        err = self.path_error(op.path)
        if err:
            return err
        kind = self.kind(op.path)
        if kind is None:
            return self._create(Create(op.path, 0o644))
        if kind == "dir":
            return errno.EISDIR
        obj = self.objects[op.path]
        mode = obj.mode if obj.mode is not None else DEFAULT_FILE_MODE
        if op.trunc:
            self.handles.append(Writer(op.path, op.path, bytearray(), NEW, mode, None,
                                       inode_token=obj.token))
        else:
            self.handles.append(Writer(op.path, op.path, bytearray(obj.data), CLEAN, mode,
                                       obj.mtime, lazy=True, token=obj.token,
                                       inode_token=obj.token))
        return 0

    # upload.py's pipeline, by region

    def _fail(self, w: Writer, error: int = errno.EIO) -> None:
        w.state = FAILED
        w.mp_open = False
        w.error = error

    def _base_changed(self, w: Writer) -> int:
        """The object the upload stands on is not there any more: S3 refuses the If-Match of
        its GET or UploadPartCopy (PreconditionFailed, or NoSuchKey once the key is gone)."""
        error = errno.ESTALE if w.key in self.objects else errno.ENOENT
        self._fail(w, error)
        return error

    def _pinned(self, w: Writer) -> bool:
        obj = self.objects.get(w.key)
        return obj is not None and obj.token == w.token

    def _materialize(self, w: Writer, keep: int) -> int:
        w.lazy = False
        if keep >= MIN_PART:
            w.base_len = w.buf_start = keep
        elif keep and not self._pinned(w):
            return self._base_changed(w)
        del w.data[keep:]
        return 0

    def _open_upload(self, w: Writer) -> int:
        w.mp_open = w.meta_sent = True  # the base is sent at the commit
        return 0

    def _edit_base(self, w: Writer, start: int, end: int) -> int:
        """Bytes [start, end) of the base are rewritten: each block not yet held is fetched
        (If-Match the base)."""
        last = max(1, w.base_len // PART) - 1
        for index in range(min(start // PART, last), min((end - 1) // PART, last) + 1):
            if index not in w.edited:
                if not self._pinned(w):
                    return self._base_changed(w)
                w.edited.add(index)
        return 0

    def _base_copied(self, w: Writer) -> bool:
        """Some of the base is copied server side at the commit (not every block edited)."""
        return w.base_len > 0 and len(w.edited) < max(1, w.base_len // PART)

    def _append(self, w: Writer, data: bytes) -> int:
        """Fill the buffer; each full buffer is sent as a part (opening the upload first)."""
        pos = 0
        while pos < len(data):
            take = min(len(data) - pos, PART - (len(w.data) - w.buf_start))
            w.data += data[pos:pos + take]
            pos += take
            if len(w.data) - w.buf_start == PART:
                if not w.mp_open:
                    err = self._open_upload(w)
                    if err:
                        return err
                w.buf_start += PART
        return 0

    def _writeat(self, op: WriteAt) -> int:
        w = self.handles[op.index]
        if w.state == FAILED:
            return w.error
        if w.state == DISCARDED:
            if len(w.data) < op.offset + op.length:
                w.data += bytes(op.offset + op.length - len(w.data))
            return 0
        if w.lazy:
            err = self._materialize(w, len(w.data))
            if err:
                return err
        w.mtime = None
        data = op.data()
        if op.offset > len(w.data):
            err = self._append(w, bytes(op.offset - len(w.data)))
            if err:
                return err
        if op.offset < len(w.data):
            inside = min(len(data), len(w.data) - op.offset)
            below_buffer_end = min(op.offset + inside, w.buf_start)
            if op.offset < min(below_buffer_end, w.base_len):
                err = self._edit_base(w, op.offset, min(below_buffer_end, w.base_len))
                if err:
                    return err
            if max(op.offset, w.base_len) < below_buffer_end:
                part1_kept = w.base_len == 0 and w.buf_start >= PART
                if not (part1_kept and below_buffer_end <= PART):
                    # An uploaded part is rewritten while the mount's pool of free part
                    # buffers still holds its buffer (heldparts.py), else EINVAL: that
                    # depends on every file's use of the shared pool, not modelled, except
                    # that a part this far behind is gone for sure (tests/unit/test_edits.py
                    # covers both outcomes).
                    if w.buf_start - op.offset <= HELD_FOR_SURE_GONE:
                        raise Unmodelled("write into an uploaded part (held or EINVAL)")
                    self._fail(w)
                    return errno.EINVAL
            w.data[op.offset:op.offset + inside] = data[:inside]
            data = data[inside:]
        err = self._append(w, data)
        if err:
            return err
        w.state = DIRTY
        return 0

    def _commit(self, w: Writer) -> int:
        if w.detached:
            return 0  # unlinked while open: never stored
        if w.state == FAILED:
            return w.error
        if w.state in (CLEAN, DISCARDED):
            return 0
        if w.mp_open or w.base_len:
            if self._base_copied(w) and not self._pinned(w):
                return self._base_changed(w)
            if not w.mp_open:
                err = self._open_upload(w)
                if err:
                    return err
            w.base_len = w.buf_start
            w.edited.clear()
        token = self.token()
        self.objects[w.key] = Obj(bytes(w.data), w.mode, w.mtime, token)
        w.mp_open = w.meta_changed = False
        w.meta_sent = True
        w.state = CLEAN
        w.token = w.inode_token = token
        if w.pending_move is not None:
            obj = self.objects.pop(w.key)
            self.objects[w.pending_move] = Obj(obj.data, obj.mode, obj.mtime, obj.token)
            w.key, w.pending_move = w.pending_move, None
        return 0

    def _onhandle(self, op: OnHandle) -> int:
        w = self.handles[op.index]
        if op.kind == "fsync":
            return self._commit(w)
        err = 0 if w.state == NEW else self._commit(w)
        if op.kind == "close":
            if w.state in (NEW, DIRTY):
                self._commit(w)  # release: errors only logged
            if w.state == FAILED and w.meta_changed and w.path is not None:
                self._known_bug("the inode of a failed upload stays (meta_changed)")
            del self.handles[op.index]
        return err

    # attributes

    def _truncateto(self, op: TruncateTo) -> int:
        err = self.lookup_error(op.path)
        if err:
            return err
        if self.kind(op.path) == "dir":
            return errno.EISDIR
        w = self.writer_at(op.path)
        if w is None:  # a stored file: a short-lived upload on the object, committed at once
            obj = self.objects[op.path]
            if op.size == len(obj.data):
                return 0
            data = obj.data[:op.size] + bytes(max(0, op.size - len(obj.data)))
            mode = obj.mode if obj.mode is not None else DEFAULT_FILE_MODE
            self.objects[op.path] = Obj(data, mode, None, self.token())
            return 0
        if op.size == len(w.data):
            return 0
        if w.state == FAILED:
            return w.error
        if w.lazy:
            err = self._materialize(w, min(op.size, len(w.data)))
            if err:
                return err
        if op.size > len(w.data):
            err = self._append(w, bytes(op.size - len(w.data)))
            if err:
                return err
        elif op.size >= w.buf_start:
            del w.data[op.size:]
        elif op.size == 0:
            w.mp_open = False
            w.base_len = w.buf_start = 0
            w.edited.clear()
            w.data.clear()
        else:
            return errno.ENOTSUP
        w.mtime = None
        w.state = DIRTY
        return 0

    def _setattr(self, path: str, mode: int | None, mtime: int | None) -> int | set[int]:
        err = self.lookup_error(path)
        if err:
            return err
        if self.kind(path) == "dir":
            cur_mode, cur_mtime = self.dir_mode(path)
            new_mode = cur_mode if mode is None else stat.S_IFDIR | mode
            new_mtime = cur_mtime if mtime is None else mtime
            if new_mode != cur_mode or (mtime is not None and mtime != cur_mtime):
                self.objects[path + "/"] = Obj(b"", new_mode, new_mtime, self.token())
            return 0
        w = self.writer_at(path)
        if w is not None:
            changed = (mode is not None and stat.S_IFREG | mode != w.mode) or \
                (mtime is not None and mtime != w.mtime)
            if mode is not None:
                w.mode = stat.S_IFREG | mode
            if mtime is not None:
                w.mtime = mtime
            if changed and w.state in (NEW, DIRTY) and w.meta_sent:
                w.meta_changed = True
            if not changed or w.state in (NEW, DIRTY) or w.inode_token is None:
                return 0  # rides on the pending upload (or nothing is stored yet)
            w.meta_changed = False
            obj = self.objects.get(path)
            if obj is None:
                return errno.ENOENT
            if obj.token != w.inode_token:
                return {errno.ESTALE}
            self.objects[path] = Obj(obj.data, w.mode, w.mtime, obj.token)
            return 0
        obj = self.objects[path]
        cur_mode = obj.mode if obj.mode is not None else DEFAULT_FILE_MODE
        new_mode = cur_mode if mode is None else stat.S_IFREG | mode
        if new_mode == cur_mode and (mtime is None or mtime == obj.mtime):
            return 0
        self.objects[path] = Obj(obj.data, new_mode, obj.mtime if mtime is None else mtime,
                                 obj.token)
        return 0

    def _chmod(self, op: Chmod) -> int | set[int]:
        return self._setattr(op.path, op.mode, None)

    def _utime(self, op: Utime) -> int | set[int]:
        return self._setattr(op.path, None, op.mtime_ns)

    # names

    def _mkdir(self, op: Mkdir) -> int:
        err = self.path_error(op.path)
        if err:
            return err
        if self.kind(op.path) is not None:
            return errno.EEXIST
        if op.path in self.inode_paths:
            self._known_bug("mkdir where a stale inode is known: EEXIST")
        self.objects[op.path + "/"] = Obj(b"", stat.S_IFDIR | op.mode, None, self.token())
        return 0

    def _rmdir(self, op: Rmdir) -> int:
        err = self.lookup_error(op.path)
        if err:
            return err
        if self.kind(op.path) == "file":
            return errno.ENOTDIR
        if self.children(op.path):
            return errno.ENOTEMPTY
        self.objects.pop(op.path + "/", None)
        self.inode_paths.discard(op.path)
        return 0

    def _discard(self, w: Writer) -> None:
        w.state = DISCARDED
        w.mp_open = False
        w.pending_move = None
        w.path = None

    def _unlink(self, op: Unlink) -> int:
        err = self.lookup_error(op.path)
        if err:
            return err
        if self.kind(op.path) == "dir":
            return errno.EISDIR
        for w in self.writers_of(op.path):  # its descriptors go on; nothing is stored
            w.detached = True
            w.pending_move = None
            w.path = None
        self.objects.pop(op.path, None)
        self.inode_paths.discard(op.path)
        return 0

    def _move_writer(self, w: Writer, new_key: str) -> None:
        """Upload.rename: a multipart upload open under the old key is committed first (as a
        close would); then the object the upload stands on (if any) moves now."""
        if w.mp_open:
            self._commit(w)
        if w.token is not None:
            if not self._pinned(w):
                raise Unmodelled("rename of a file whose object another client replaced")
            obj = self.objects.pop(w.key)
            self.objects[new_key] = Obj(obj.data, obj.mode, obj.mtime, obj.token)
        w.key = new_key

    def _rename(self, op: Rename) -> int:
        src, dst = op.src, op.dst
        err = self.path_error(src) or self.path_error(dst)
        if err:
            return err
        kind = self.kind(src)
        if kind is None:
            return errno.ENOENT
        if src == dst:
            return 0
        if kind == "dir" and dst.startswith(src + "/"):
            return errno.EINVAL  # the kernel refuses: a directory into itself
        if src.startswith(dst + "/"):
            return errno.ENOTEMPTY  # the kernel refuses: onto an ancestor
        target = self.kind(dst)
        if target == "dir" and kind == "file":
            return errno.EISDIR
        if target == "file" and kind == "dir":
            return errno.ENOTDIR
        if target == "dir" and self.children(dst):
            return errno.ENOTEMPTY
        self._move_inodes(src, dst)
        if kind == "file":
            t = self.writer_at(dst)
            if t is not None:
                self._discard(t)
            w = self.writer_at(src)
            if w is None:
                obj = self.objects.pop(src)
                self.objects[dst] = Obj(obj.data, obj.mode, obj.mtime, obj.token)
                return 0
            self._move_writer(w, dst)
            if w.inode_token is not None and w.token is None:
                self.objects.pop(src, None)  # the object this O_TRUNC handle replaces
            w.path = dst
            return 0
        srcp, dstp = src + "/", dst + "/"
        listed = sorted(k for k in self.objects if k.startswith(srcp))
        if target == "dir":
            self.objects.pop(dstp, None)
        for k in listed:
            obj = self.objects[k]
            self.objects[dstp + k[len(srcp):]] = Obj(obj.data, obj.mode, obj.mtime, obj.token)
        if not listed:
            mode, mtime = self.dir_mode(src)
            self.objects[dstp] = Obj(b"", mode, mtime, self.token())
        movers = [w for w in self.handles if w.path is not None and w.path.startswith(srcp)]
        for w in movers:
            assert w.path is not None
            self._move_writer(w, dstp + w.path[len(srcp):])
        for k in listed:
            self.objects.pop(k, None)
        for w in movers:
            assert w.path is not None
            w.path = dstp + w.path[len(srcp):]
        return 0

    # reading

    def writers_of(self, path: str) -> list[Writer]:
        return [w for w in self.handles if w.path == path]

    def _readopen(self, op: ReadOpen) -> int:
        err = self.lookup_error(op.path)
        if err:
            return err
        if self.kind(op.path) == "dir":
            return errno.EISDIR
        writers = self.writers_of(op.path)
        if writers:  # reads go through the writer (readback.py): no HEAD, no pinned ETag
            self.readers.append(ReaderModel(op.path, b"", None, writers=writers))
            return 0
        obj = self.objects[op.path]
        self.readers.append(ReaderModel(op.path, obj.data, obj.token))
        return 0

    def _readat(self, op: ReadAt) -> set[int]:
        r = self.readers[op.index]
        window = slice(op.offset, op.offset + op.length)
        writers = [w for w in r.writers + self.writers_of(r.key) if w in self.handles]
        if writers:
            # Through a writer of the file: what it holds; a range in parts S3 acknowledged
            # (an incomplete upload) or of a failed upload fails with EIO. When the writer
            # the inode reports on has closed, the stored object.
            self.expected_reads = [bytes(w.data[window]) for w in writers]
            obj = self.objects.get(r.key)
            if obj is not None:
                self.expected_reads.append(obj.data[window])
            return {0, errno.EIO, errno.ENOENT, errno.ESTALE}
        obj = self.objects.get(r.key)
        if r.token is None:  # opened while written; stored (or not) since
            if obj is None:
                return {errno.ENOENT}
            self.expected_reads = [obj.data[window]]
            return {0}
        self.expected_reads = [r.data[window]]
        if obj is not None and obj.token == r.token:
            return {0}
        if obj is not None and not r.served:  # the first read refreshes: the new version
            self.expected_reads.append(obj.data[window])
        # Replaced or gone: ESTALE/ENOENT, or bytes already prefetched (still the old ones).
        return {0, errno.ESTALE, errno.ENOENT}

    def _readcloseat(self, op: ReadCloseAt) -> int:
        del self.readers[op.index]
        return 0

    # another client

    def _putbytes(self, op: PutBytes) -> int:
        mode = None if op.mode is None else stat.S_IFREG | op.mode
        self.objects[op.path] = Obj(op.data, mode, None, self.token())
        return 0

    def _remotedelete(self, op: RemoteDelete) -> int:
        del self.objects[op.path]
        return 0
