"""ExchangeTimer: one lazily moved timer bounds each wait of an upstream exchange and the whole.

On the running event loop, with real sleeps of a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hapaxd.providers.exchange_timer import ExchangeTimer


async def test_a_wait_longer_than_its_limit_times_out_and_leaves_the_task_uncancelled() -> None:
    with ExchangeTimer(total=None, step=0.05) as timer:
        with pytest.raises(TimeoutError):
            await timer.within(0.05, asyncio.sleep(5))
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        # the timer still works for the next wait
        assert await timer.within(0.5, asyncio.sleep(0.01, result="next")) == "next"


async def test_time_between_waits_never_counts() -> None:
    """A caller busy with what it read (here: sleeping outside `within`) is not cut off, however
    long that takes, as long as each wait is within its limit."""
    with ExchangeTimer(total=None, step=0.05) as timer:
        for _ in range(3):
            assert await timer.within(0.05, asyncio.sleep(0.01, result=1)) == 1
            await asyncio.sleep(0.12)  # outside any wait: longer than the limit


async def test_waits_each_within_their_limit_are_cut_by_the_total() -> None:
    with ExchangeTimer(total=0.15, step=0.1) as timer:
        with pytest.raises(TimeoutError):
            for _ in range(10):
                await timer.within(0.1, asyncio.sleep(0.04))
        assert timer.past_total


async def test_a_long_first_wait_then_shorter_ones() -> None:
    """first_byte longer than idle: the first wait may take longer than the step."""
    with ExchangeTimer(total=None, step=0.05) as timer:
        assert await timer.within(0.5, asyncio.sleep(0.15, result="headers")) == "headers"
        assert await timer.within(0.05, asyncio.sleep(0.01, result="body")) == "body"
        with pytest.raises(TimeoutError):
            await timer.within(0.05, asyncio.sleep(5))
        assert not timer.past_total


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    async def waiting(timer: ExchangeTimer) -> None:
        await timer.within(5, asyncio.sleep(5))

    with ExchangeTimer(total=None, step=5) as timer:
        task = asyncio.ensure_future(waiting(timer))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_fast_exchange_schedules_one_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of it: reads that come quickly move no timer (asyncio.timeout per read
    schedules and cancels one each)."""
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    call_at = loop.call_at

    def counting(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        scheduled.append(when)
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting)
    with ExchangeTimer(total=600, step=30) as timer:
        await timer.within(60, asyncio.sleep(0))  # the headers (first_byte)
        for _ in range(20):  # the body's reads (idle)
            await timer.within(30, asyncio.sleep(0))
    assert len(scheduled) == 1


async def test_closing_drops_the_handle() -> None:
    loop = asyncio.get_running_loop()
    before = len(getattr(loop, "_scheduled", ()))
    timer = ExchangeTimer(total=10, step=10)
    await timer.within(10, asyncio.sleep(0))
    timer.close()
    await asyncio.sleep(0)  # cancelled handles leave the loop's heap lazily; none of ours stays
    live = [h for h in getattr(loop, "_scheduled", ()) if not h.cancelled()]
    assert len(live) <= before
