"""The growing part-size schedule (s3mpfs/parts.py), checked as properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s3mpfs.config import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, MiB
from s3mpfs.parts import capacity, part_size

TiB = 1024**4

bases = st.integers(MIN_PART_SIZE, 64 * MiB)
limits = st.integers(1, MAX_PARTS)


@given(bases, limits, st.data())
def test_every_part_is_within_s3_limits(base: int, max_parts: int, data: st.DataObject) -> None:
    number = data.draw(st.integers(1, max_parts))
    size = part_size(number, base, max_parts)
    assert MIN_PART_SIZE <= size <= MAX_PART_SIZE


@given(bases, limits)
def test_sizes_never_shrink_and_start_at_the_base(base: int, max_parts: int) -> None:
    sizes = [part_size(n, base, max_parts) for n in range(1, max_parts + 1)]
    assert sizes[0] == base
    assert sizes == sorted(sizes)


def test_default_schedule_reaches_past_5_tib_and_keeps_small_files_unchanged() -> None:
    assert capacity(8 * MiB, MAX_PARTS) >= 5 * TiB
    # the first 1,000 parts (7.8 GiB) are the plain 8 MiB parts
    assert {part_size(n, 8 * MiB, MAX_PARTS) for n in range(1, 1001)} == {8 * MiB}
    assert part_size(1001, 8 * MiB, MAX_PARTS) == 16 * MiB
    assert part_size(MAX_PARTS, 8 * MiB, MAX_PARTS) == 4096 * MiB


@given(bases)
def test_growth_lifts_the_ceiling_far_above_fixed_parts(base: int) -> None:
    assert capacity(base, MAX_PARTS) > 20 * base * MAX_PARTS


def test_fewer_parts_adapt() -> None:
    assert [part_size(n, 8 * MiB, 4) // MiB for n in range(1, 5)] == [8, 16, 32, 64]
    assert capacity(8 * MiB, 1000) > 700 * 1024**3
