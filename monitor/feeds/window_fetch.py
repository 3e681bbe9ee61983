"""WindowFetch: one backfill request asked of the provider's REST API until it is in, or given up.

A request (`monitor.feeds.owed.Request`: a window, some symbols) is fetched with `RestBackfill`;
the bars of the symbols answered are handed on at once, and the symbols whose requests failed
are asked again, up to `backfill_attempts` times in all, after the backoff's delay or a 429's
Retry-After, whichever is longer (that one up to `MAX_RETRY_AFTER_S`). A group the provider
refuses for a symbol it does not take (400, 404, 422) is asked again one symbol at a time, to
find which; a symbol refused in a request of its own is not asked again in that backfill (it
would be refused again) but put in the backfill's `Refusals` (see `monitor.feeds.given_up`).
Refused credentials (401, 403: a `MonitorError`) end the request at once: asking again will not
help, nor will the backfill's other requests.

Why apart from `monitor.feeds.gap_fill`: `GapFill` decides what to fetch and what is owed
when it fails (for the next subscription, or asked for again minutes later); this is one
request's attempts within a backfill, over in seconds, and it keeps nothing between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.errors import MonitorError
from monitor.feeds.given_up import Refusals
from monitor.feeds.owed import Request, some
from monitor.feeds.rest import RestBackfill

__all__ = ["MAX_RETRY_AFTER_S", "WindowFetch"]

MAX_RETRY_AFTER_S = 60.0  # the longest a backfill waits for a 429's Retry-After


class WindowFetch:
    """The requests of one feed's backfills (`fetch`), each asked up to `attempts` times, its
    bars handed on (`deliver`) as they come.

    Counter (label `feed`): backfill_bars.
    """

    def __init__(
        self,
        name: str,
        rest: RestBackfill,
        *,
        deliver: Callable[[FeedBatch], Awaitable[None]],
        counters: Counters,
        backoff: Backoff,
        log: Any,
        attempts: int,
    ) -> None:
        self._name = name
        self._rest = rest
        self._deliver = deliver
        self._counters = counters
        self._backoff = backoff
        self._log = log
        self._attempts = attempts

    def __repr__(self) -> str:
        return f"WindowFetch({self._name!r}, {self._attempts} attempts)"

    async def fetch(
        self, request: Request, refusals: Refusals
    ) -> tuple[list[str], str, str | None]:
        """Fetch one request; symbols whose requests failed are asked again (the others'
        bars are handed on at once), up to `backfill_attempts` times in all, but for those
        refused each in a request of its own (in `refusals`: asked again, it would be refused
        again). The symbols that still failed, why, and why the credentials were refused
        (None: they were not)."""
        start, end = request.start, request.end
        window = {"start": start.isoformat(), "end": end.isoformat()}
        left, why, asked_wait, one_by_one = list(request.symbols), "", 0.0, False
        for attempt in range(self._attempts):
            if attempt:  # (at least as long as a 429 asked, up to a minute)
                wait = min(asked_wait, MAX_RETRY_AFTER_S)
                await asyncio.sleep(max(self._backoff.delay(attempt - 1), wait))
            try:
                fetched = await self._rest.fetch(
                    left, start, end, feed=self._name, one_by_one=one_by_one
                )
            except MonitorError as exc:  # (refused credentials: asking again will not help)
                self._log.error("backfill_failed", error=str(exc), **window)
                return left, str(exc), str(exc)
            batch, failed, asked, refused, alone = fetched
            asked_wait = asked or 0.0
            one_by_one = bool(refused)  # (a group refused for one symbol: find which)
            bars = batch.minute_bars.height
            self._counters.inc("backfill_bars", bars, feed=self._name)
            got = len(left) - len(failed)
            refusals.answered = refusals.answered or got > 0
            self._log.info("feed_backfilled", bars=bars, symbols=got, **window)
            if bars or batch.rejections:
                await self._deliver(batch)
            if gone := [s for s in left if s in alone]:
                refusals.alone.append((Request(start, end, tuple(gone)), failed[gone[0]]))
                failed = {s: w for s, w in failed.items() if s not in alone}
            if not failed:
                return [], "", None
            left, why = list(failed), next(iter(failed.values()))
            self._log.warning(
                "backfill_retry",
                error=why,
                attempt=attempt + 1,
                failed=len(left),
                symbols=some(left),
                **window,
            )
        return left, f"retries exhausted: {why}", None
