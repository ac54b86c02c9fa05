"""BufferPool: a buffer is handed out again only once nothing refers into it."""

from __future__ import annotations

from s3mpfs.readbuffers import BufferPool


def test_a_buffer_is_reused_once_every_view_of_it_is_gone() -> None:
    pool = BufferPool(1000, keep=4)
    a = pool.take(1000)
    b = pool.take(600)
    assert a.obj is not b.obj  # a is still alive
    assert (len(a), len(b), pool.created) == (1000, 600, 2)
    first = a.obj
    del a
    c = pool.take(10)
    assert c.obj is first and len(c) == 10 and pool.created == 2


def test_a_slice_handed_on_keeps_its_buffer_in_use() -> None:
    """As a FUSE reply does: the chunk's view is gone, a slice of it still goes to the kernel."""
    pool = BufferPool(100, keep=4)
    view = pool.take(100)
    view[:] = bytes(range(100))
    reply = view[10:20]
    del view
    again = pool.take(100)
    again[:] = b"\xff" * 100
    assert bytes(reply) == bytes(range(10, 20))
    assert again.obj is not reply.obj
    del reply, again
    assert pool.take(100) is not None and pool.created == 2  # both free now: no third


def test_the_pool_keeps_at_most_keep_buffers_and_trim_drops_the_free_ones() -> None:
    pool = BufferPool(100, keep=2)
    views = [pool.take(100) for _ in range(3)]
    assert len(pool) == 2  # the third was not pooled
    big = pool.take(101)  # larger than the pool's buffers: not pooled either
    assert len(big) == 101 and len(pool) == 2
    in_use = views[1].obj
    views.pop(0)  # the first buffer is free again, the second is still in use
    pool.trim()
    assert len(pool) == 1
    fresh = pool.take(100)  # the pooled one is in use: a new one, pooled again
    assert fresh.obj is not in_use and len(pool) == 2 and pool.created == 5
    del views, fresh
    pool.trim()
    assert len(pool) == 0


def test_trim_can_keep_some_free_buffers_spare() -> None:
    pool = BufferPool(100, keep=8)
    views = [pool.take(100) for _ in range(5)]
    in_use = views.pop()
    views.clear()  # four free, one in use
    pool.trim(spare=2)
    assert len(pool) == 3  # the one in use and two spare
    pool.trim()
    assert len(pool) == 1 and pool.take(1).obj is not in_use.obj
