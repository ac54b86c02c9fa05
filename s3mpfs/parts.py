"""The part-size schedule: how big part N of a streamed upload is.

S3 allows at most 10,000 parts per upload, each 5 MiB..5 GiB (all but the last). Fixed 8 MiB
parts stop a streamed file at 78.1 GiB (mountpoint-s3 users hit this: awslabs/mountpoint-s3
#451, #1396). We do not know a streamed file's size in advance, so the part size grows with the
part number instead, like goofys' tiers (internal/file.go): the parts are split into ten equal
tiers and each tier doubles the size of the previous one.

With the default 8 MiB and 10,000 parts: 1,000 parts each of 8, 16, 32, ... 4,096 MiB, so
files up to 7.8 GiB are unchanged, a 100 GiB file ends on 64 MiB parts, a 1 TiB file on 1 GiB
parts, and the ceiling is 8,184,000 MiB = 7.8 TiB. With --max-parts (stores that allow fewer
parts) the tiers shrink with it: 1,000 parts reach 799 GiB. The memory a file being written
holds grows with its part size (see README: memory).
"""

from __future__ import annotations

from s3mpfs.config import MAX_PART_SIZE

TIERS = 10


def part_size(number: int, base: int, max_parts: int) -> int:
    """Size of part `number` (1-based) for a first part of `base` bytes."""
    tier_len = max(1, max_parts // TIERS)
    tier = min((number - 1) // tier_len, TIERS - 1)
    return min(base << tier, MAX_PART_SIZE)


def capacity(base: int, max_parts: int) -> int:
    """The largest object the schedule can stream (all parts full)."""
    return sum(part_size(n, base, max_parts) for n in range(1, max_parts + 1))
