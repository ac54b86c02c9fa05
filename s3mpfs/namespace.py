"""Names -> inodes: the one module that decides whether a name exists, and what it is.

mountpoint-s3 calls this layer its superblock. It owns the inode table and three caches:

  * complete directory listings by directory path (while fresh they answer lookups: a name
    not in one does not exist, a name in one is a file or a directory without a request);
  * "big" directories, whose first listing page was not the whole directory (lookups there
    probe the name instead of listing);
  * negative entries: names found missing, remembered for `negative_ttl` seconds.

A lookup is answered, cheapest first, by: an inode whose attributes are ours (being written,
changed here) or fresh and read from S3; the parent's fresh complete listing (a file in it
whose x-amz-meta we do not know costs one HEAD, so rsync sees the stored mtime); the negative
cache; otherwise a HEAD of the key and a one-key listing of the prefix, concurrently. A miss
in a directory without a listing lists its first page (one request) and keeps it when that
page is the whole directory, so the many lookups of new names that cp -r, tar and rsync make
cost nothing. ListObjectsV2 carries no x-amz-meta, so before readdir hands entries to the
kernel (readdirplus: their attributes are cached as the truth) read_meta HEADs those whose
x-amz-meta this mount does not know, HEAD_CONCURRENCY at once: attributes and the file type
are always the stored ones, never defaults. Metadata already read is kept while the ETag is
unchanged; what this mount wrote is known. A key without "/" whose Content-Type is
application/x-directory (s3fs-fuse's old directories) is a directory once a HEAD saw it.

The internal directory (INTERNAL_DIR at the bucket's root: upload markers) is never a name:
listings skip it and lookups of it fail with ENOENT without asking S3.

This mount's own changes reach the caches through created(), removed() and dropped(), so
they show at once. It depends on inodes, listing and the store interface only.
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from collections.abc import Callable, Iterator

import trio

from s3mpfs.errors import FsError, NotFound, StoreError
from s3mpfs.inodes import ROOT_INODE, Inode, InodeTable, Kind, join
from s3mpfs.listing import DirEntry, list_dir, valid_name
from s3mpfs.store.base import ObjectInfo, ObjectStore
from s3mpfs.store.markers import INTERNAL_DIR

log = logging.getLogger(__name__)

KEY_MAX = 1024  # bytes of UTF-8: S3's limit on a key
# HEADs in flight at once when a readdir reads the x-amz-meta of its entries, and how many
# entries ahead of the kernel's position one readdir call reads (the kernel takes ~25-100 per
# call; the rest are answered from what was read).
HEAD_CONCURRENCY = 32
META_BATCH = 128
# Content-Types that make a key without a trailing slash a directory (s3fs-fuse's old style).
DIR_CONTENT_TYPES = ("application/x-directory", "httpd/unix-directory")


class Namespace:
    def __init__(self, store: ObjectStore, *, prefix: str = "", metadata_ttl: float = 5.0,
                 negative_ttl: float = 1.0, uid: int, gid: int, file_mode: int = 0o644,
                 dir_mode: int = 0o755, size_of: Callable[[Inode], int] | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.metadata_ttl, self.negative_ttl = metadata_ttl, negative_ttl
        self.inodes = InodeTable(uid=uid, gid=gid, file_mode=file_mode, dir_mode=dir_mode)
        # The size a file being written shows (its upload's); listings of a directory include
        # such files before S3 does.
        self.size_of = size_of or (lambda inode: inode.size)
        # dir path -> (valid until, name -> entry)
        self._listings: dict[str, tuple[float, dict[str, DirEntry]]] = {}
        self._big_dirs: dict[str, float] = {}  # dir path -> valid until
        self._negative: dict[str, float] = {}  # path -> valid until
        # What this mount itself knows is absent: names it removed (path -> until) and
        # directories it created (their listing starts empty, and is ours until listed).
        self._gone_here: dict[str, float] = {}
        self._own_listings: set[str] = set()
        # Directories stored as a key without "/" (s3fs's old `dir`, Content-Type
        # application/x-directory): path -> that object's ETag.
        self.dir_objects: dict[str, str] = {}
        self._shadowing: dict[str, str] = {}  # directories listed beside an object `dir`
        self._heads = trio.CapacityLimiter(HEAD_CONCURRENCY)
        if prefix:  # the root's attributes live on the PREFIX/ marker (read on first stat)
            self.inodes[ROOT_INODE].forget_attrs()

    # -- names and keys --------------------------------------------------------------------

    def key(self, inode: Inode) -> str:
        return self.prefix + inode.path

    def dir_key(self, path: str) -> str:
        return self.prefix + path + "/" if path else self.prefix

    def inode(self, ino: int) -> Inode:
        inode = self.inodes.get(ino)
        if inode is None:
            raise FsError(errno.ENOENT, f"inode {ino} unknown")
        return inode

    def dir(self, ino: int) -> Inode:
        inode = self.inode(ino)
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        return inode

    def internal(self, path: str) -> bool:
        """s3mpfs's own keys (upload markers) at the bucket's root: never a user's name."""
        return not self.prefix and (path == INTERNAL_DIR or path.startswith(INTERNAL_DIR + "/"))

    def child_path(self, parent: Inode, name: str) -> str:
        """The path of name in parent, if S3 can hold it (EINVAL / ENAMETOOLONG if not)."""
        if not valid_name(name):
            raise FsError(errno.ENAMETOOLONG if len(name.encode()) > 255 else errno.EINVAL)
        path = join(parent.path, name)
        if len((self.prefix + path + "/").encode()) > KEY_MAX:
            raise FsError(errno.ENAMETOOLONG, "S3 keys are at most 1,024 bytes")
        return path

    def new_child_path(self, parent: Inode, name: str) -> str:
        """child_path for a name about to be created: the internal directory is refused."""
        path = self.child_path(parent, name)
        if self.internal(path):
            log.error("%s: reserved for s3mpfs's upload markers; choose another name", path)
            raise FsError(errno.EPERM, f"{path} is reserved")
        return path

    def _fresh(self) -> float:
        return time.monotonic() + self.metadata_ttl

    def renew(self, inode: Inode) -> None:
        inode.expiry.renew(self.metadata_ttl)

    # -- what S3 says ------------------------------------------------------------------------

    def set_file_info(self, inode: Inode, info: ObjectInfo) -> None:
        """Attributes of the object HEAD found: what its x-amz-meta says, else the defaults
        (never what an earlier object under the same name carried)."""
        inode.size, inode.etag = info.size, info.etag
        inode.mtime_ns = int(info.mtime * 1e9)
        inode.mode = stat.S_IFREG | self.inodes.file_mode
        inode.uid, inode.gid = self.inodes.uid, self.inodes.gid
        inode.apply_metadata(info.metadata)

    def is_dir_object(self, path: str, info: ObjectInfo) -> bool:
        """A key without "/" that stands for a directory (s3fs-fuse's old format): its
        Content-Type says so, or its x-amz-meta-mode carries S_IFDIR. Remembered."""
        ctype = (info.content_type or "").partition(";")[0].strip().lower()
        try:
            dir_mode = stat.S_ISDIR(int(info.metadata.get("mode", "0")))
        except ValueError:
            dir_mode = False
        if ctype in DIR_CONTENT_TYPES or dir_mode:
            self.dir_objects[path] = info.etag
            return True
        self.dir_objects.pop(path, None)
        return False

    async def head(self, path: str) -> ObjectInfo | None:
        try:
            return await self.store.head(self.prefix + path)
        except NotFound:
            return None

    async def _stat_remote(self, path: str) -> tuple[ObjectInfo | None, bool]:
        """HEAD the file key and list the directory prefix, concurrently."""
        info: ObjectInfo | None = None
        is_dir = False

        async def head() -> None:
            nonlocal info
            info = await self.head(path)

        async def probe_dir() -> None:
            nonlocal is_dir
            page = await self.store.list_page(self.dir_key(path), max_keys=1)
            is_dir = bool(page.objects or page.prefixes)

        async with trio.open_nursery() as n:
            n.start_soon(head)
            n.start_soon(probe_dir)
        return info, is_dir

    async def ensure_meta(self, inode: Inode) -> None:
        """HEAD a file whose x-amz-meta we do not know, so a rewrite keeps mode and owner."""
        if inode.known and inode.etag is not None:
            return
        info = await self.head(inode.path)
        if info is not None:
            self.set_file_info(inode, info)

    async def dir_meta(self, inode: Inode) -> None:
        """A directory's mode and times live on its marker object "dir/" (HEAD once)."""
        if inode.known:
            return
        key = self.dir_key(inode.path)
        if key:  # the bucket's root has no marker
            try:
                inode.apply_metadata((await self.store.head(key)).metadata)
            except NotFound:
                await self._dir_object_meta(inode)
        inode.attrs_stored()

    async def _dir_object_meta(self, inode: Inode) -> None:
        """No `dir/` marker, but a listing showed an object `dir` beside the prefix: if it is
        s3fs-fuse's directory object, the directory's attributes are its."""
        if inode.path not in self._shadowing:
            return
        info = await self.head(inode.path)
        if info is not None and self.is_dir_object(inode.path, info):
            inode.apply_metadata(info.metadata)

    # -- resolution --------------------------------------------------------------------------

    async def resolve(self, path: str) -> Inode:
        """The inode for path, from memory while fresh or ours, else from S3 (ENOENT)."""
        if self.internal(path):
            raise FsError(errno.ENOENT)
        inode = self.inodes.by_path(path)
        now = time.monotonic()
        if inode is not None and (inode.status.writing or inode.status.changed
                                  or inode.ino == ROOT_INODE
                                  or (inode.expiry.fresh(now) and inode.known)):
            return inode
        parent, _, name = path.rpartition("/")
        listing = await self._parent_listing(parent)
        if listing is not None:
            entry = listing.get(name)
            if entry is None:
                raise FsError(errno.ENOENT)
            inode = self.entry_inode(parent, entry)
            if inode.is_dir:
                await self.dir_meta(inode)
            if inode.is_dir or inode.known:
                return inode
        elif now < self._negative.get(path, 0.0):
            raise FsError(errno.ENOENT)
        if listing is not None:  # a listed file whose x-amz-meta we do not know yet
            info, is_dir = await self.head(path), False
        else:
            info, is_dir = await self._stat_remote(path)
        dir_object = info is not None and self.is_dir_object(path, info)
        if is_dir or dir_object:
            if info is not None and not dir_object:
                log.warning("%r is both an object and a prefix; showing the directory", path)
            inode = self.inodes.upsert(path, Kind.DIR)
            if info is not None and dir_object and not inode.known:
                inode.apply_metadata(info.metadata)  # the attributes of s3fs's `dir` object
            await self.dir_meta(inode)
        elif info is not None:
            inode = self.inodes.upsert(path, Kind.FILE)
            self.set_file_info(inode, info)
        else:
            self._absent(path)
            raise FsError(errno.ENOENT)
        self.renew(inode)
        return inode

    async def exists(self, path: str) -> bool:
        try:
            await self.resolve(path)
        except FsError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    async def refresh(self, inode: Inode) -> None:
        """getattr of a file whose attributes expired: HEAD it again (gone: left as is, the
        next lookup says ENOENT). The root of a prefix mount: its marker, once."""
        if inode.ino == ROOT_INODE:
            await self.dir_meta(inode)
        if (inode.is_dir or inode.status.writing or inode.status.changed
                or inode.open_handles or inode.expiry.fresh()):
            return
        try:
            self.set_file_info(inode, await self.store.head(self.key(inode)))
            self.renew(inode)
        except NotFound:
            pass

    # -- listings ----------------------------------------------------------------------------

    def _listing(self, dir_path: str) -> dict[str, DirEntry] | None:
        cached = self._listings.get(dir_path)
        if cached is None or time.monotonic() >= cached[0]:
            return None
        return cached[1]

    def remember_listing(self, dir_path: str, entries: list[DirEntry]) -> None:
        if self.metadata_ttl > 0:
            self._listings[dir_path] = (self._fresh(), {e.name: e for e in entries})
            self._big_dirs.pop(dir_path, None)
        self._own_listings.discard(dir_path)

    async def _parent_listing(self, dir_path: str) -> dict[str, DirEntry] | None:
        listing = self._listing(dir_path)
        if listing is not None or self.metadata_ttl <= 0:
            return listing
        if time.monotonic() < self._big_dirs.get(dir_path, 0.0):
            return None
        entries = await list_dir(self.store, self.dir_key(dir_path), max_pages=1)
        if entries is None:
            self._big_dirs[dir_path] = self._fresh()
            return None
        entries += self._pending_children(dir_path, {e.name for e in entries})
        self.remember_listing(dir_path, entries)
        return self._listing(dir_path)

    async def read_dir(self, inode: Inode) -> list[DirEntry]:
        """Every entry of a directory (all pages), files being written included."""
        entries = await list_dir(self.store, self.dir_key(inode.path))
        assert entries is not None
        entries += self._pending_children(inode.path, {e.name for e in entries})
        entries.sort(key=lambda e: e.name)
        self.remember_listing(inode.path, entries)
        return entries

    def _pending_children(self, dir_path: str, listed: set[str]) -> list[DirEntry]:
        """Files being written are not in S3 yet, but ls must show them."""
        out = []
        for child in self.inodes.children(dir_path):
            name = child.path.rpartition("/")[2]
            if name not in listed and child.status.writing:
                out.append(DirEntry(name, child.kind, self.size_of(child)))
        return out

    async def dir_is_empty(self, inode: Inode) -> bool:
        """No key below the directory (its marker aside) and no file being written in it."""
        dir_key = self.dir_key(inode.path)
        page = await self.store.list_page(dir_key, max_keys=2)
        others = [o for o in page.objects if o.key != dir_key]
        writing = [c for c in self.inodes.children(inode.path) if c.status.writing]
        return not (others or page.prefixes or writing)

    def entry_inode(self, parent_path: str, entry: DirEntry) -> Inode:
        path = join(parent_path, entry.name)
        kind = entry.kind
        if kind is Kind.FILE and entry.etag and self.dir_objects.get(path) == entry.etag:
            kind = Kind.DIR  # s3fs's `dir` object, known from a HEAD
        inode = self.inodes.upsert(path, kind)
        if kind is Kind.DIR and entry.etag:
            self._shadowing[path] = entry.etag
        if entry.kind is Kind.FILE and not inode.status.writing and (
                entry.etag != inode.etag or inode.etag is None):
            # A new or changed object: listing attributes until a lookup HEADs it.
            inode.size, inode.etag = entry.size, entry.etag
            inode.mtime_ns = int(entry.mtime * 1e9)
            inode.forget_meta()
            inode.attrs_listed()
        self.renew(inode)
        return inode

    async def read_meta(self, dir_path: str, entries: list[DirEntry]) -> None:
        """Read the x-amz-meta of entries whose attributes this mount does not know, so a
        readdirplus shows stored modes, owners, times and types, never defaults: one HEAD per
        file (a directory: of its marker), HEAD_CONCURRENCY at once. What this mount wrote,
        or read while the ETag is unchanged, costs nothing."""
        todo = [(entry, inode) for entry in entries
                if not (inode := self.entry_inode(dir_path, entry)).known
                and not inode.status.writing]
        if not todo:
            return

        async def read(entry: DirEntry, inode: Inode) -> None:
            async with self._heads:
                try:
                    await self._read_entry(dir_path, entry, inode)
                except StoreError as exc:
                    # One object S3 will not HEAD (another SSE-C key, a policy) must not fail
                    # the whole directory: it is listed as not known, which the kernel is told
                    # not to cache (fuse_ops), so a stat of it asks again and fails alone.
                    log.warning("%s: could not read its attributes: %s", inode.path, exc)

        async with trio.open_nursery() as nursery:
            for entry, inode in todo:
                nursery.start_soon(read, entry, inode)

    async def _read_entry(self, dir_path: str, entry: DirEntry, inode: Inode) -> None:
        if inode.is_dir:
            await self.dir_meta(inode)
            return
        info = await self.head(inode.path)
        if info is None:
            return  # gone since the listing: the next lookup says ENOENT
        if self.is_dir_object(inode.path, info):
            directory = self.entry_inode(dir_path, entry)
            directory.apply_metadata(info.metadata)
            directory.attrs_stored()
            return
        if inode.status.writing or inode.known:
            return  # opened or changed here meanwhile: ours wins
        self.set_file_info(inode, info)

    def entries_from(self, dir_inode: Inode, entries: list[DirEntry],
                     start: int) -> Iterator[tuple[str, Inode, bool]]:
        """readdir's entries from index `start`: ".", "..", then `entries`, as (name, inode,
        counted); the kernel takes no reference on "." and ".." (counted False)."""
        parent = self.inodes.by_path(dir_inode.path.rpartition("/")[0]) or dir_inode
        fixed = [(".", dir_inode, False), ("..", parent, False)]
        for index in range(start, len(entries) + 2):
            if index < 2:
                yield fixed[index]
                continue
            entry = entries[index - 2]
            yield entry.name, self.entry_inode(dir_inode.path, entry), True

    # -- this mount's own changes --------------------------------------------------------------

    def created(self, path: str, entry: DirEntry) -> None:
        self._negative.pop(path, None)
        self._gone_here.pop(path, None)
        parent, _, name = path.rpartition("/")
        listing = self._listing(parent)
        if listing is not None:
            listing[name] = entry

    def created_dir(self, path: str) -> None:
        """A directory this mount made: it is empty, so lookups in it are free."""
        self.created(path, DirEntry(path.rpartition("/")[2], Kind.DIR))
        self.remember_listing(path, [])
        if self.metadata_ttl > 0:
            self._own_listings.add(path)

    def removed(self, path: str) -> None:
        """This mount deleted or moved away the object under path."""
        self._absent(path)
        self._gone_here[path] = self._fresh()

    def _absent(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        listing = self._listing(parent)
        if listing is not None:
            listing.pop(name, None)
        if self.negative_ttl > 0:
            self._negative[path] = time.monotonic() + self.negative_ttl

    def absent_here(self, path: str) -> bool:
        """Absent by this mount's own doing (it removed the name, or made its directory),
        not because a cached listing or a negative entry says so."""
        now = time.monotonic()
        if now < self._gone_here.get(path, 0.0):
            return True
        parent = path.rpartition("/")[0]
        return parent in self._own_listings and self._listing(parent) is not None

    def dropped(self, path: str) -> None:
        """A directory went or moved: forget the listings of it and below it."""
        for p in [p for p in self._listings if p == path or p.startswith(path + "/")]:
            del self._listings[p]
            self._own_listings.discard(p)
