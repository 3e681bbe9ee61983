"""When the daemon's minutes close while a feed catches up on a backlog: its close clock.

The engine loop advances the engine to the wall clock after every micro-batch. A backlog that
comes in many batches (the broker's queued messages after a reconnect, or at a start with a
persistent MQTT session: half an hour of ticks, `batch_max_rows` messages at a time) would
have its first batch's advance close every minute up to the wall clock, with most of their
ticks still to come: they would come as late ticks, correcting bars the minute rules have
fired on already. Replay, over the same ticks at once, closes each minute with all of them.

So the loop gives the engine a close clock (`Engine.advance(now, close_at=...)`): minutes and
session bars close by it, everything else goes by the wall clock. `CloseClock` decides it
from what each feed delivers: a feed is catching up while the newest data it delivered (a
tick's time, a minute bar's end) is more than the bar builder's close delay and `slack_s`
behind the wall clock and it keeps delivering (something within `quiet_s` of the acks of its
last delivery). While one is, the close clock is held at the newest data of the feed furthest
behind (the minute that data is in stays open: the rest of it is in the next batches);
otherwise it is the wall clock. MQTT does not say when a backlog is drained: a feed that
catches up (live data) or goes quiet releases the hold. A feed that delivered and lost its
connection (`down`) holds the clock at its newest data from then, counting as delivering
until it is back: the broker queues what it misses (a persistent session) and delivers it
after the reconnect, when, had the idle steps meanwhile closed its minutes by the wall clock,
all of it would come late. Its hold is bounded as any (an outage longer than `hold_max_s`:
its queue comes late), and ends as any once it is back (caught up, quiet).

A hold is bounded (`hold_max_s`): a feed whose data is always late (a provider delayed by 15
minutes) or that replays old data for ever must not keep every other feed's minutes open. A
feed released by the bound does not hold again until it has caught up or gone quiet; its data
then comes late, corrections as before. 0: never hold. Nor does a feed whose newest data are
in minutes the close clock has closed already (a delayed feed back after a quiet spell): they
come late whatever it holds, and a hold would only keep the other feeds' minutes open. Quiet
and the bound are measured in real (monotonic) seconds, not by the engine's clock: a
simulated one (the daemon's replay feed) stands still once its data is out.

A WebSocket feed back part-way through a minute lacks that minute's trades from before it came
back: its REST backfill fetches that minute once it is over (`monitor.feeds.tail_minutes`), and
until the provider's bar of it is taken in the feed awaits it (`awaiting`, the minute's start):
the close clock is held just short of that minute's close (a session's last minute's is its
session bar's, `session_close_delay_s` after the close: see `monitor.core.bars`), so that it
closes once, whole (a 1m rule evaluates the provider's bar, not the part the stream built);
bounded by `hold_max_s` from when the minute would have closed (past it, the minute closes as
built and the provider's bar, when it comes, corrects it), and not held for a minute the close
clock has closed already.

At a start, the close clock restored from the saved state stays there until a feed delivers
data, or every feed has subscribed and `quiet_s` passed with nothing delivered (`starting`,
`ready`), bounded as a feed's hold is: the broker's backlog of a persistent session comes
once the feed has connected, after a few idle steps (or many, the broker coming up after the
daemon), which would otherwise close every minute up to the wall clock before it. (With no
bars saved nor journaled, a first start, it starts at the close of the last session closed at
the engine's warm-up: the session under way is all open; see `Pipeline`.)

Defaults: `slack_s` 5 seconds (a live feed's ticks come within a second or two; a feed
further behind than the close delay has data for minutes already closed, but one a few
seconds late at a minute's end is the close delay's business); `quiet_s` 2 s (a backlog is
delivered as fast as the broker sends it, the engine loop acknowledges each batch within
milliseconds, and an idle loop steps every second: two idle steps without a message end the
hold); `hold_max_s` 60 s (a backlog of half an hour, a few hundred thousand ticks, is taken in
well within it; past it, the feed's data come late, corrections as without a hold, and every
other feed's minutes close at most that late).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import msgspec

from monitor import logs

QUIET_S = 2.0  # a feed with nothing delivered this long is quiet (see the module)
BEHIND_SLACK_S = 5.0  # behind by more than the close delay and this: catching up
HOLD_MAX_S = 60.0  # (the default `[engine] catch_up_hold_s`)
# A hold of data further behind than this is said at info level; a shorter one (a provider
# whose minute bars come a few seconds after the close delay, every minute) at debug.
LOUD_BEHIND_S = 60.0
_MINUTE = dt.timedelta(minutes=1)
_ONE_US = dt.timedelta(microseconds=1)


class _Feed(msgspec.Struct):
    newest: dt.datetime | None = None  # the newest data it delivered
    delivered_at: float | None = None  # when it last delivered (monotonic seconds)
    held_since: float | None = None  # holding the close clock since (monotonic seconds)
    spent: bool = False  # released by the bound: holds no more until caught up or quiet
    loud: bool = False  # its hold was said at info level (see LOUD_BEHIND_S)


class CloseClock:
    """The close clock of the engine loop's steps (see the module); one per daemon."""

    def __init__(
        self,
        *,
        hold_max_s: float = HOLD_MAX_S,
        quiet_s: float = QUIET_S,
        slack_s: float = BEHIND_SLACK_S,
        log: Any = None,
    ) -> None:
        self.slack = dt.timedelta(seconds=slack_s)
        self.hold_max_s = hold_max_s
        self.quiet_s = quiet_s
        self._log = log if log is not None else logs.get("pipeline")
        self._feeds: dict[str, _Feed] = {}
        self._start: tuple[dt.datetime, float] | None = None  # (see `starting`)
        self._start_said = False
        self._ready_at: float | None = None  # (every feed subscribed since: see `ready`)
        # (feed, minute awaited) -> since when its hold keeps the minute open (monotonic
        # seconds; None: not yet, the minute would not have closed), or released by the bound
        self._awaited: dict[tuple[str, dt.datetime], float | None] = {}
        self._awaited_spent: set[tuple[str, dt.datetime]] = set()

    def delivered(self, feed: str, at: float, newest: dt.datetime | None = None) -> None:
        """`feed` delivered data at `at` (monotonic seconds), the newest of it `newest` (None:
        its newest is unchanged; the end of the step that took it in, say)."""
        state = self._feeds.setdefault(feed, _Feed())
        state.delivered_at = at
        if newest is not None and (state.newest is None or newest > state.newest):
            state.newest = newest

    def starting(self, closes_at: dt.datetime | None, at: float) -> None:
        """A start (at `at`, monotonic seconds) whose close clock, restored from the saved
        state, is `closes_at` (None: nothing restored): it stays there until a feed delivers
        data or `hold_max_s` has passed (see the module)."""
        if closes_at is not None and self.hold_max_s > 0:
            self._start = (closes_at, at)

    def ready(self, at: float) -> None:
        """Every feed has subscribed (at `at`, monotonic seconds, or before): a start's hold
        ends `quiet_s` after the first call if nothing is delivered by then."""
        if self._ready_at is None:
            self._ready_at = at

    def close_at(
        self,
        now: dt.datetime,
        at: float,
        close_delay: dt.timedelta,
        closes_at: dt.datetime | None = None,
        down: frozenset[str] = frozenset(),
        awaiting: Mapping[str, dt.datetime] | None = None,
        *,
        closes: Callable[[dt.datetime], dt.datetime] | None = None,
    ) -> dt.datetime | None:
        """The instant minutes and sessions close by at `now` (the engine's clock; `at`: the
        monotonic seconds; None: `now`), for a bar builder that closes a minute `close_delay`
        after its end (`closes`: when it closes the minute starting at an instant, where that
        is later for some: the daemon's closes a session's last minute with the session's
        bar; see `monitor.core.bars`) and whose close clock is at `closes_at` (None: not
        known), with the feeds `down` disconnected, and `awaiting` the provider's bar of a
        minute (by feed, the earliest such minute's start); the holds start and end here,
        each said in one line."""
        most = close_delay + self.slack  # (behind by more: catching up)
        if self._start is not None:
            start = self._started(now, at, most)
            if start is not None:
                return start
        if closes is None:
            closes = partial(_closes, close_delay=close_delay)
        # (a feed's data in minutes closed already: a hold would not keep them open)
        closed = _closed_by(closes_at, close_delay, closes) if closes_at is not None else None
        held: list[dt.datetime] = []
        for name, feed in self._feeds.items():
            if feed.newest is None or feed.delivered_at is None:
                continue
            behind = now - feed.newest
            lost = name in down
            if lost:  # (its data stopped where the broker's queue for it starts)
                feed.delivered_at = at
            elif behind <= most or at - feed.delivered_at > self.quiet_s:
                why = "caught_up" if behind <= most else "quiet"
                self._release(name, feed, now, at, why)
                feed.spent = False
                continue
            if feed.spent or self.hold_max_s <= 0:
                continue
            if feed.held_since is None and closed is not None and feed.newest < closed:
                continue
            if feed.held_since is None:
                feed.held_since = at
                feed.loud = lost or behind.total_seconds() >= LOUD_BEHIND_S
                self._say(
                    feed.loud,
                    "close_clock_held",
                    feed=name,
                    behind_s=round(behind.total_seconds(), 1),
                    note="the feed is disconnected: minutes close as its data comes in once it "
                    "is back (the broker's queue for it)"
                    if lost
                    else "the feed is catching up on a backlog: minutes close as its data "
                    "comes in, not by the wall clock",
                )
            elif at - feed.held_since > self.hold_max_s:
                self._release(name, feed, now, at, "bound")
                feed.spent = True
                continue
            held.append(feed.newest)
        held += self._awaited_holds(now, at, closes, closes_at, awaiting or {})
        return min(held, default=None)

    def _awaited_holds(
        self,
        now: dt.datetime,
        at: float,
        closes: Callable[[dt.datetime], dt.datetime],
        closes_at: dt.datetime | None,
        awaiting: Mapping[str, dt.datetime],
    ) -> list[dt.datetime]:
        """Where the minutes feeds await the provider's bar of hold the close clock: just
        short of each one's close (see the module)."""
        held: list[dt.datetime] = []
        for key in [key for key in self._awaited if awaiting.get(key[0]) != key[1]]:
            since = self._awaited.pop(key)
            if since is not None:
                self._say(True, "close_clock_released", feed=key[0], why="no_longer_awaited",
                          minute=key[1].isoformat(), held_s=round(at - since, 1))  # fmt: skip
        self._awaited_spent.intersection_update(awaiting.items())
        for key in awaiting.items():
            name, minute = key
            closing = closes(minute)  # (when it closes, unheld)
            if key in self._awaited_spent or self.hold_max_s <= 0:
                continue
            if (closes_at is not None and closing <= closes_at) or now < closing:
                self._awaited.setdefault(key, None)  # (closed already, or not due yet)
                continue
            since = self._awaited.get(key)
            if since is None:
                self._awaited[key] = since = at
                self._say(True, "close_clock_held", feed=name, minute=minute.isoformat(),
                          behind_s=round((now - closing).total_seconds(), 1),
                          note="the feed came back part-way through this minute: it closes "
                          "once the provider's bar of it is fetched")  # fmt: skip
            elif at - since > self.hold_max_s:
                self._awaited_spent.add(key)
                self._awaited.pop(key)
                self._say(True, "close_clock_released", feed=name, why="bound",
                          minute=minute.isoformat(), held_s=round(at - since, 1))  # fmt: skip
                continue
            held.append(closing - _ONE_US)
        return held

    def _started(self, now: dt.datetime, at: float, most: dt.timedelta) -> dt.datetime | None:
        """The start's close clock while it holds (see `starting`), else None."""
        assert self._start is not None
        held, since = self._start
        behind = now - held
        delivered = any(feed.newest is not None for feed in self._feeds.values())
        quiet = self._ready_at is not None and at - self._ready_at > self.quiet_s
        if behind > most and not delivered and not quiet and at - since <= self.hold_max_s:
            if not self._start_said:
                self._start_said = True
                self._say(
                    behind.total_seconds() >= LOUD_BEHIND_S,
                    "close_clock_held",
                    feed=None,
                    behind_s=round(behind.total_seconds(), 1),
                    note="at a start, until a feed delivers: a broker's backlog comes once "
                    "its feed has connected",
                )
            return held
        if self._start_said:
            self._say(
                behind.total_seconds() >= LOUD_BEHIND_S,
                "close_clock_released",
                feed=None,
                why="delivered"
                if delivered
                else "caught_up"
                if behind <= most
                else "quiet"
                if quiet
                else "bound",
                behind_s=round(behind.total_seconds(), 1),
                held_s=round(at - since, 1),
            )
        self._start = None
        return None

    def _release(self, name: str, feed: _Feed, now: dt.datetime, at: float, why: str) -> None:
        if feed.held_since is None:
            return
        assert feed.newest is not None
        self._say(
            feed.loud,
            "close_clock_released",
            feed=name,
            why=why,
            behind_s=round((now - feed.newest).total_seconds(), 1),
            held_s=round(at - feed.held_since, 1),
        )
        feed.held_since = None

    def _say(self, loud: bool, event: str, **fields: object) -> None:
        (self._log.info if loud else self._log.debug)(event, **fields)


def _closes(minute: dt.datetime, close_delay: dt.timedelta) -> dt.datetime:
    """When a bar builder that closes every minute `close_delay` after its end closes the
    minute starting at `minute`."""
    return minute + _MINUTE + close_delay


def _closed_by(
    closes_at: dt.datetime,
    close_delay: dt.timedelta,
    closes: Callable[[dt.datetime], dt.datetime],
) -> dt.datetime:
    """The instant minutes starting at or before which are closed by the close clock at
    `closes_at`: those that ended `close_delay` before it, but a minute `closes` keeps open
    longer (a session's last) and those after it."""
    closed = closes_at - _MINUTE - close_delay
    minute = closed.replace(second=0, microsecond=0)
    while closes(minute) > closes_at:
        closed, minute = minute - _ONE_US, minute - _MINUTE
    return closed
