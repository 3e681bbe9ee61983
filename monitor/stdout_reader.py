"""Whether the reader of standard output is still there, for the commands that print now and
then and wait in between (`tail`, `watch`).

A writer learns that the reader of its pipe has gone only when it next writes (EPIPE, a
BrokenPipeError): for `tail --json | head -1` that is the next alert, which may be hours after
head has exited, and for `watch`, which writes nothing to a pipe until it stops, never. Polling
the descriptor tells it while it waits: on Linux the write end of a pipe whose read end is
closed reports POLLERR, and a socket shut both ways or a terminal hung up reports POLLHUP,
whatever events were asked for (none are asked for here). A regular file or /dev/null reports
neither: its reader never goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import select
import time
from collections.abc import AsyncIterator
from typing import IO, Any

CHECK_S = 0.5  # how often `until_gone` looks
_GONE = select.POLLERR | select.POLLHUP


def is_gone(out: IO[Any]) -> bool:
    """Whether the reader of `out` has gone; False for an `out` without a descriptor (a
    test's StringIO) or with a closed one (its next write says so: EBADF, not EPIPE)."""
    return _gone_within(out, 0.0)


def sleep(out: IO[Any], seconds: float) -> bool:
    """Sleep `seconds`, or less: True as soon as the reader of `out` has gone (`is_gone`)."""
    ends = time.monotonic() + seconds
    if _gone_within(out, seconds):
        return True
    time.sleep(max(0.0, ends - time.monotonic()))  # (no descriptor, or closed: poll did not wait)
    return False


def _gone_within(out: IO[Any], seconds: float) -> bool:
    """Whether the reader of `out` goes within `seconds` (poll returns as soon as it does)."""
    try:
        poller = select.poll()
        poller.register(out.fileno(), 0)
    except (AttributeError, OSError, ValueError):  # (no descriptor, or closed)
        return False
    return any(revents & _GONE for _, revents in poller.poll(seconds * 1000))


@contextlib.asynccontextmanager
async def until_gone(out: IO[Any], every_s: float = CHECK_S) -> AsyncIterator[None]:
    """Run the block until it ends or the reader of `out` goes (looked at every `every_s`):
    then cancel the block and raise BrokenPipeError, as the next write to `out` would. (The
    shape of `asyncio.timeout`: a callback on the loop, no task of its own.)"""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None  # (entered in a coroutine)
    gone = False
    handle: asyncio.TimerHandle | None = None

    def look() -> None:
        nonlocal gone, handle
        if is_gone(out):
            gone = True
            task.cancel()
        else:
            handle = loop.call_later(every_s, look)

    handle = loop.call_later(every_s, look)
    try:
        yield
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise BrokenPipeError(errno.EPIPE, "the reader of stdout has gone") from None
        raise
    finally:
        handle.cancel()
