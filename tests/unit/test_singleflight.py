"""Singleflight: counted with events, never timed."""

from __future__ import annotations

import asyncio

import pytest

from hapaxd.core.singleflight import Group, StreamGroup


async def test_concurrent_identical_calls_run_once_and_all_get_the_result() -> None:
    group: Group[str] = Group()
    release = asyncio.Event()
    runs = 0

    async def work() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return "answer"

    waiters = [asyncio.create_task(group.do("k", work)) for _ in range(100)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters)
    assert runs == 1
    assert [r for r, _ in results] == ["answer"] * 100
    assert sum(shared for _, shared in results) == 99
    assert group.in_flight() == 0


async def test_every_waiter_gets_the_same_error() -> None:
    group: Group[str] = Group()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        raise ValueError("boom")

    waiters = [asyncio.create_task(group.do("k", work)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, ValueError) and str(r) == "boom" for r in results)


async def test_one_waiter_cancelling_does_not_cancel_the_others() -> None:
    group: Group[str] = Group()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(group.do("k", work))
    second = asyncio.create_task(group.do("k", work))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert (await second) == ("done", True)
    assert first.cancelled()


async def test_the_call_is_cancelled_when_the_last_waiter_leaves() -> None:
    group: Group[str] = Group()
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    waiters = [asyncio.create_task(group.do("k", work)) for _ in range(2)]
    await asyncio.sleep(0)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.wait_for(cancelled.wait(), 2)
    assert group.in_flight() == 0


async def test_different_keys_do_not_share_and_a_finished_key_starts_afresh() -> None:
    group: Group[int] = Group()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        return runs

    assert (await group.do("a", work))[0] == 1
    assert (await group.do("a", work))[0] == 2
    assert (await group.do("b", work))[0] == 3


async def test_a_late_stream_joiner_gets_what_was_sent_then_the_rest() -> None:
    group: StreamGroup[int] = StreamGroup()
    produced = asyncio.Queue[int | None]()
    starts = 0

    async def source():  # type: ignore[no-untyped-def]
        nonlocal starts
        starts += 1
        while (item := await produced.get()) is not None:
            yield item

    async with group.join("k", source) as (first, shared_first):
        await produced.put(1)
        await produced.put(2)
        assert [await anext(first), await anext(first)] == [1, 2]
        async with group.join("k", source) as (second, shared_second):
            await produced.put(3)
            await produced.put(None)
            assert [x async for x in second] == [1, 2, 3]
            assert [x async for x in first] == [3]
    assert (shared_first, shared_second, starts) == (False, True, 1)
    assert group.in_flight() == 0


async def test_a_stream_error_reaches_every_subscriber() -> None:
    group: StreamGroup[int] = StreamGroup()
    go = asyncio.Event()

    async def source():  # type: ignore[no-untyped-def]
        yield 1
        await go.wait()
        raise RuntimeError("upstream broke")

    async with group.join("k", source) as (a, _), group.join("k", source) as (b, _):
        go.set()
        for items in (a, b):
            with pytest.raises(RuntimeError, match="upstream broke"):
                [x async for x in items]


async def test_the_stream_is_cancelled_when_its_last_subscriber_leaves() -> None:
    group: StreamGroup[int] = StreamGroup()
    closed = asyncio.Event()

    async def source():  # type: ignore[no-untyped-def]
        try:
            yield 1
            await asyncio.Event().wait()
        finally:
            closed.set()

    async with group.join("k", source) as (items, _):
        assert await anext(items) == 1
    await asyncio.wait_for(closed.wait(), 2)
    assert group.in_flight() == 0
