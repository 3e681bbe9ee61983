"""Waiting between attempts: `monitor.waiting.wait_any`."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from monitor.waiting import raise_if_cancelled, wait_any


async def test_a_cancellation_swallowed_below_still_ends_the_loop() -> None:
    """A loop whose cancellation was swallowed by a call below it (Python 3.11's `wait_for`,
    under redis-py, does when the call completes as the cancellation arrives) ends at its next
    wait: it used to wait on and loop for good, and the notifier's task group never ended."""
    stop = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while not stop.is_set():
            rounds += 1
            with contextlib.suppress(asyncio.CancelledError):  # (swallowed, not `uncancel`ed)
                await asyncio.sleep(10)  # (cancelled here)
            await wait_any((stop,), 10)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert rounds == 1


async def test_waiting_returns_at_an_event_or_the_timeout() -> None:
    first, second = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_any((first, second), 0.05)
    assert loop.time() - started >= 0.05
    loop.call_later(0.01, second.set)
    started = loop.time()
    await wait_any((first, second), 10)
    assert loop.time() - started < 5


async def test_a_worker_whose_cancellation_was_swallowed_ends_before_its_next_job() -> None:
    """A loop waiting on a queue (the notifier's delivery workers) checks at each turn: a
    swallowed cancellation used to leave it waiting for a job that never comes."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    done: list[int] = []

    async def worker() -> None:
        while True:
            raise_if_cancelled()
            job = await queue.get()
            with contextlib.suppress(asyncio.CancelledError):  # (swallowed below, as above)
                await asyncio.sleep(10)
            done.append(job)

    task = asyncio.create_task(worker())
    queue.put_nowait(1)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert done == [1]


async def test_a_task_that_handled_its_cancellation_goes_on() -> None:
    """`uncancel` (as `asyncio.timeout` does when it turns a cancellation into its timeout)
    leaves nothing to raise."""

    async def handled() -> str:
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        task.uncancel()
        raise_if_cancelled()
        await wait_any((asyncio.Event(),), 0.01)
        return "went on"

    task = asyncio.create_task(handled())
    await asyncio.sleep(0.01)
    task.cancel()
    assert await asyncio.wait_for(task, 2) == "went on"
