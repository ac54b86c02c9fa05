"""Rewrites of uploaded parts of a new file (zip patching a member's local header after its
data, any format that seeks back a little).

S3 keeps the last upload of a part number until the upload completes, so a part can be sent
again with new bytes. The bytes must still be here: after a part is sent its buffer goes back
to the PartBudget's pool of free part buffers tagged (multipart upload, part number), and
until the pool hands it out again its owner can reclaim it (parts.PartBudget.reclaim), patch
it and send it again. The pool reuses the oldest buffer first, and a writer taking a buffer
spares its own newest `--rewrite-window` parts (default: --upload-concurrency), but sparing
never makes the pool create more buffers than one file streaming at full concurrency holds
anyway (UploadConfig.pool_buffers; past that the oldest spared buffer is reused): no extra
memory at the default. When S3 is the slower side the newest parts are in flight rather than
in the pool, and a rewrite first waits for them to land (Upload._drain), so they are held
either way. Other files writing at the same time may take a spared buffer; a write into a
part whose buffer is gone fails with EINVAL (upload.py logs what was possible).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from s3mpfs.parts import PartBudget

Send = Callable[[int, bytearray | bytes], Awaitable[object]]  # (part number, body)


def spare(upload: object, next_part: int, window: int) -> Callable[[object], bool]:
    """For PartBudget.take_buffer: keep the buffers of `upload`'s newest `window` parts."""
    def keep(tag: object) -> bool:
        return (isinstance(tag, tuple) and tag[0] is upload
                and tag[1] >= next_part - window)
    return keep


async def rewrite(budget: PartBudget, upload: object, spans: dict[int, tuple[int, int]],
                  offset: int, data: memoryview, send: Send) -> bool:
    """Patch `data` at `offset` into the uploaded part holding it and send that part again;
    False when no part wholly holds it or its buffer was reused. `spans`: part number ->
    (file offset, length) of the parts sent. Errors are send()'s."""
    for number, (start, length) in spans.items():
        if start <= offset and offset + len(data) <= start + length:
            buf = budget.reclaim((upload, number))
            if buf is None:
                return False
            buf[offset - start:offset - start + len(data)] = data
            try:
                await send(number, buf if length == len(buf) else bytes(buf[:length]))
            finally:
                budget.give_buffer(buf, (upload, number))
            return True
    return False
