"""FaultyStore: wraps any ObjectStore to fail or hold chosen calls, and records call order.

    store = FaultyStore(MemoryStore())
    store.fail("upload_part", StoreError("boom", code="InternalError"), nth=2)  # 2nd call only
    store.fail("put", StoreError("down"), nth=1, and_after=True)               # every call
    gate = store.gate("upload_part")        # upload_part calls wait here ...
    gate.set()                              # ... until released
    store.calls                             # ["create_upload", "upload_part", ...]

Operations are named by their method name. A call is recorded (and counted for `nth`) when it
starts; it then waits on the operation's gate, if any, and then fails or reaches the inner store.
Upload markers are the inner store's own requests (create_upload(mark=True), store/markers.py):
they pass no gate or fault here and show only in `counts`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from s3mpfs.checksums import Checksum
from s3mpfs.errors import StoreError
from s3mpfs.store.base import (
    Buffers,
    Data,
    Deliver,
    ListPage,
    ObjectInfo,
    ObjectStore,
    PartInfo,
    UploadInfo,
)


@dataclass
class _Fault:
    error: StoreError
    nth: int
    and_after: bool

    def fires(self, call_number: int) -> bool:
        return call_number == self.nth or (self.and_after and call_number > self.nth)


class FaultyStore:
    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.counts: Counter[str] = inner.counts  # the same Counter: the inner store counts
        self.calls: list[str] = []
        self.started: Counter[str] = Counter()  # calls begun, per operation
        self.waiting: Counter[str] = Counter()  # calls currently held at a gate
        self._faults: dict[str, _Fault] = {}
        self._gates: dict[str, trio.Event] = {}

    def fail(self, op: str, error: StoreError, *, nth: int = 1, and_after: bool = False) -> None:
        """Make the nth call of `op` (counting from 1, including calls already made) raise
        `error`; with and_after, every later call too."""
        self._check_op(op)
        self._faults[op] = _Fault(error, nth, and_after)

    def heal(self, op: str) -> None:
        self._faults.pop(op, None)

    def gate(self, op: str) -> trio.Event:
        """Hold every call of `op` until the returned event is set."""
        self._check_op(op)
        event = self._gates[op] = trio.Event()
        return event

    def _check_op(self, op: str) -> None:
        if not callable(getattr(self.inner, op, None)) or op.startswith("_"):
            raise ValueError(f"not an ObjectStore operation: {op!r}")

    async def _enter(self, op: str) -> None:
        self.calls.append(op)
        self.started[op] += 1
        number = self.started[op]
        gate = self._gates.get(op)
        if gate is not None and not gate.is_set():
            self.waiting[op] += 1
            try:
                await gate.wait()
            finally:
                self.waiting[op] -= 1
        fault = self._faults.get(op)
        if fault is not None and fault.fires(number):
            raise fault.error

    # -- ObjectStore -----------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo:
        await self._enter("head")
        return await self.inner.head(key)

    async def list_page(
        self,
        prefix: str,
        *,
        delimiter: str | None = "/",
        token: str | None = None,
        max_keys: int = 1000,
    ) -> ListPage:
        await self._enter("list_page")
        return await self.inner.list_page(
            prefix, delimiter=delimiter, token=token, max_keys=max_keys
        )

    async def get_range(
        self, key: str, start: int, end: int, *, if_match: str | None = None
    ) -> bytes:
        await self._enter("get_range")
        return await self.inner.get_range(key, start, end, if_match=if_match)

    async def get_pieces(
        self, key: str, start: int, sizes: Sequence[int], deliver: Deliver, *,
        if_match: str | None = None, buffers: Buffers | None = None,
    ) -> None:
        await self._enter("get_range")  # a GET: the same faults as get_range
        await self.inner.get_pieces(key, start, sizes, deliver, if_match=if_match,
                                    buffers=buffers)

    async def put(self, key: str, data: Data, *, metadata: Mapping[str, str],
                  checksum: Checksum | None = None, replacing: str | None = None,
                  create_only: bool = False) -> str:
        await self._enter("put")
        return await self.inner.put(key, data, metadata=metadata, checksum=checksum,
                                    replacing=replacing, create_only=create_only)

    async def copy(
        self,
        src_key: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
        src_etag: str | None = None,
    ) -> str:
        await self._enter("copy")
        return await self.inner.copy(src_key, dst_key, metadata=metadata, src_etag=src_etag)

    async def delete(self, key: str) -> None:
        await self._enter("delete")
        await self.inner.delete(key)

    async def create_upload(self, key: str, *, metadata: Mapping[str, str],
                            checksum_algorithm: str | None = None, mark: bool = False,
                            headers: Mapping[str, Any] | None = None) -> str:
        await self._enter("create_upload")
        return await self.inner.create_upload(key, metadata=metadata,
                                              checksum_algorithm=checksum_algorithm, mark=mark,
                                              headers=headers)

    async def upload_part(self, key: str, upload_id: str, number: int, data: Data,
                          checksum: Checksum | None = None) -> str:
        await self._enter("upload_part")
        return await self.inner.upload_part(key, upload_id, number, data, checksum)

    async def upload_part_copy(
        self,
        key: str,
        upload_id: str,
        number: int,
        src_key: str,
        start: int,
        end: int,
        *,
        src_etag: str | None = None,
    ) -> str:
        await self._enter("upload_part_copy")
        return await self.inner.upload_part_copy(
            key, upload_id, number, src_key, start, end, src_etag=src_etag
        )

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
        part_checksums: Mapping[int, Checksum] | None = None,
        checksum: Checksum | None = None, replacing: str | None = None,
        create_only: bool = False,
    ) -> str:
        await self._enter("complete_upload")
        return await self.inner.complete_upload(key, upload_id, parts,
                                                part_checksums=part_checksums,
                                                checksum=checksum, replacing=replacing,
                                                create_only=create_only)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self._enter("abort_upload")
        await self.inner.abort_upload(key, upload_id)

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        await self._enter("list_parts")
        return await self.inner.list_parts(key, upload_id)

    async def list_uploads(self, prefix: str = "", *,
                           max_uploads: int | None = None) -> list[UploadInfo]:
        await self._enter("list_uploads")
        return await self.inner.list_uploads(prefix, max_uploads=max_uploads)


if TYPE_CHECKING:
    def _conforms(store: FaultyStore) -> ObjectStore:
        return store  # FaultyStore satisfies the ObjectStore protocol
