"""WebSocketFeed: a provider's stream in, FeedBatches out, reconnecting for ever, with no holes.

One connection lives exactly as long as its `async with connect(...)`. The provider's sans-I/O
session (`alpaca`, `polygon`, `finnhub`, or the generic JSON shape) says what to send and decodes
each frame; this module does the I/O around it:

- auth and subscribe, per the session's handshake; a provider error is fatal (bad key, plan,
  syntax: `ConfigError`, the run ends) or asks for a reconnect with backoff (Alpaca 406 connection
  limit, 407 slow client): never a tight loop; a handshake the provider never acknowledges
  (no reply to auth or subscribe within `subscribe_timeout_s`) is a lost connection too;
- every data frame is counted (messages, ticks, bars, rejections by reason; rejections are logged,
  at most one line per reason per interval) and put on the queue, awaiting when it is full;
- a watchdog raises `feed_stale` when no data arrived for `stale_after_s` in regular hours, and
  `feed_recovered` (with the gap) on the next data;
- after a reconnect, the minutes missed in the gap are fetched over REST and queued as minute
  bars (`GapFill`, which keeps the failed gaps and asks for them again), and the minute it
  came back in once that is over (its trades before the reconnect), the daemon's close of it
  held meanwhile (`await_minute`). The gap opens where
  the data stopped: when the last frame came, or its last tick's or minute's time when that
  is earlier (a delayed stream's; frames that waited while the engine's queue was full). A
  delayed stream's is owed from where its data ends at a stop too, and, while it runs, from
  the minute its data ends in, in case of a kill -9 (`GapFill.mark`).

websockets and httpx types stay in this module: they become `FeedDisconnected`, `TransientError`
or `ConfigError`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from monitor import logs
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.errors import ConfigError, FeedDisconnected
from monitor.feeds.alpaca import AlpacaSession
from monitor.feeds.events import FeedEvent, FeedEventKind, QuietSettings, QuietWatch
from monitor.feeds.finnhub import FinnhubSession
from monitor.feeds.gap_fill import GapFill
from monitor.feeds.generic import decode_generic
from monitor.feeds.owed import Owed, floor_minute
from monitor.feeds.polygon import PolygonSession
from monitor.feeds.provider import (
    RAW_LIMIT,
    Control,
    Decoded,
    Outgoing,
    Session,
    frame_rejection,
)
from monitor.feeds.reconnects import Reconnects
from monitor.feeds.rejections import RejectionLog
from monitor.feeds.rest import RestBackfill, mask_url
from monitor.feeds.wire import Wire, hand_on

__all__ = ["FeedEvent", "FeedEventKind", "Provider", "RestBackfill", "WebSocketFeed", "mask_url"]

Provider = Literal["alpaca", "polygon", "finnhub", "generic"]
MAX_DELAY = dt.timedelta(hours=1)  # the longest a stream's data is taken to be delayed by
# how far behind its arrival a feed's data may end at a stop (or, for a kill -9, as it comes)
# before the gap from there is owed (a start backfills from a minute before the daemon's saved
# clock in any case)
BEHIND_AT_STOP = dt.timedelta(minutes=1)
MAX_ERRORS_KEPT = 100  # distinct provider errors whose last log line is remembered


class _GenericSession:
    """The generic JSON tick/bar shape: no handshake, nothing to subscribe."""

    provider = "generic"
    acknowledges_subscribe = False

    def __init__(self, url: str) -> None:
        self._url = url

    def url(self) -> str:
        return self._url

    def headers(self) -> dict[str, str]:
        return {}

    def opening(self) -> list[Outgoing]:
        return []

    def replies(self, control: Control) -> list[Outgoing]:
        return []

    def decode(self, frame: bytes | str, feed: str) -> Decoded:
        payload = frame.encode() if isinstance(frame, str) else frame
        return Decoded(decode_generic(payload, feed=feed), [])


class WebSocketFeed:
    """Read one provider stream until stopped, putting a FeedBatch per data frame on `queue`.

    Counters (label `feed`): feed_messages, feed_ticks, feed_bars, feed_rejections{reason},
    feed_ignored, feed_provider_errors{code}, feed_status_events, feed_queue_full_waits,
    feed_connects, feed_subscribes, feed_reconnects, feed_gap_seconds, backfill_bars,
    backfill_failures, backfill_given_up{reason}; gauges feed_connected and feed_stale.
    """

    def __init__(
        self,
        name: str,
        url: str,
        provider: Provider,
        symbols: Sequence[str],
        *,
        key: str | None,
        secret: str | None,
        queue: asyncio.Queue[FeedBatch | Wire],
        counters: Counters,
        backoff: Backoff,
        stale_after_s: float,
        is_regular_hours: Callable[[dt.datetime], bool],
        clock: Callable[[], dt.datetime],
        rest: RestBackfill | None = None,
        on_event: Callable[[FeedEvent], None] | None = None,
        msgpack: bool = False,
        stable_after_s: float = 30.0,
        rejection_log_interval_s: float = 10.0,
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        subscribe_timeout_s: float = 30.0,
        max_frame_bytes: int = 16 * 2**20,
        backfill_max_s: float = 6 * 3600.0,
        backfill_attempts: int = 3,
        backfill_retry_s: float = 60.0,
        stale_at_start: bool = False,
        gap_since: dt.datetime | None = None,
        keeps_from: Callable[[dt.datetime], dt.datetime | None] | None = None,
        owe: Callable[[Owed], None] | None = None,
        settle: Callable[[list[Owed]], None] | None = None,
        owed: Sequence[Owed] = (),
        traded: Callable[[dt.datetime, dt.datetime], bool] | None = None,
        backfill_tail_delay_s: float = 5.0,
        await_minute: Callable[[dt.datetime, bool], None] | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ConfigError(f"feeds.{name}.url: must be ws://... or wss://...")
        if stale_after_s <= 0:
            raise ConfigError(f"feeds.{name}.stale_after_s: must be positive")
        self.name = name
        self.provider = provider
        self._symbols = list(symbols)
        self._session = _session(name, url, provider, self._symbols, key, secret, msgpack)
        self._secrets = [s for s in (key, secret) if s]
        self._queue = queue
        self._counters = counters
        self._clock = clock
        self._on_event = on_event
        self._open_timeout_s = open_timeout_s
        self._close_timeout_s = close_timeout_s
        self._subscribe_timeout_s = subscribe_timeout_s
        self._handshake: asyncio.Timeout | None = None  # until subscribed, on a connection
        self._max_frame_bytes = max_frame_bytes
        self._log = logs.get("feed.websocket").bind(
            feed=name, provider=provider, url=mask_url(self._session.url())
        )
        self._fatal: ConfigError | None = None
        quiet = QuietSettings(stale_after_s, is_regular_hours, clock, on_event, stale_at_start)
        self._quiet = QuietWatch(name, quiet, counters, self._log)
        self._connected_at: float | None = None
        self._subscribed = False
        # when data last came before the connection was lost (or, from `gap_since`, before
        # the daemon stopped): the first subscription after it backfills from there
        self._gap_start: dt.datetime | None = gap_since
        # Where the data received so far ends, by its own times (its last tick or minute): a
        # delayed stream's (Alpaca's delayed_sip) ends well before the clock, and its gap
        # opens there, not when the last frame came.
        self._data_end: dt.datetime | None = None
        self._gaps = GapFill(
            name,
            self._symbols,
            rest,
            queue=queue,
            deliver=self._deliver,
            is_subscribed=lambda: self._subscribed,
            clock=clock,
            counters=counters,
            backoff=backoff,
            log=self._log,
            max_s=backfill_max_s,
            attempts=backfill_attempts,
            retry_s=backfill_retry_s,
            keeps_from=keeps_from,
            owe=owe,
            settle=settle,
            owed=owed,
            traded=traded,
            tail_delay_s=backfill_tail_delay_s,
            await_minute=await_minute,
        )
        if gap_since is not None:
            self._gaps.owe(gap_since)
        self._error_log_interval_s = rejection_log_interval_s
        self._errors_logged_at: dict[tuple[str, str], float] = {}
        self._errors_unlogged: dict[tuple[str, str], int] = {}
        self._rejections = RejectionLog(
            self._log,
            counters,
            counter="feed_rejections",
            interval_s=rejection_log_interval_s,
            clock=time.monotonic,
            feed=name,
        )
        self._reconnects = Reconnects(
            name,
            backoff,
            stable_after_s,
            counters=counters,
            log=self._log,
            rejections=self._rejections,
        )

    @property
    def backfill_error(self) -> str | None:
        """Why the last backfill failed, while its gap is not filled (None: none), for
        /healthz."""
        return self._gaps.error

    @property
    def last_error(self) -> str | None:
        """Why the last connection was lost or refused (None: none was), for /healthz."""
        return self._reconnects.last_error

    def __repr__(self) -> str:
        return f"WebSocketFeed({self.name!r}, {self.provider}, {mask_url(self._session.url())})"

    # --- lifecycle -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Read until `stop` is set, reconnecting on every loss; ConfigError on a fatal error."""
        self._quiet.last_data = asyncio.get_running_loop().time()
        halt = asyncio.Event()
        try:
            await self._tasks(stop, halt)
            if self._fatal is None:  # (a stop)
                self._owe_behind()
                self._gaps.unmark()
        except Exception:
            # (a crash, a bug: the supervisor runs the feed again, whose first subscription
            # fills the gap from here; it used to fill none, as no connection was lost)
            self._open_gap()
            raise
        finally:
            self._gaps.bind(None)
            self._counters.set("feed_connected", 0, feed=self.name)
            self._rejections.flush()
            self._log.info("feed_stopped")
        if self._fatal is not None:
            raise self._fatal

    async def _tasks(self, stop: asyncio.Event, halt: asyncio.Event) -> None:
        """The connections, the watchdog and the backfills, until `halt`."""
        async with asyncio.TaskGroup() as tg:
            self._gaps.bind(tg)
            tasks = [
                tg.create_task(self._connections(halt), name=f"feed-{self.name}"),
                tg.create_task(self._quiet.watch(), name=f"feed-{self.name}-watchdog"),
                tg.create_task(_relay(stop, halt), name=f"feed-{self.name}-stop"),
            ]
            await halt.wait()
            pending = self._gaps.pending
            if pending:
                self._log.warning(
                    "backfill_abandoned",
                    backfills=len(pending),
                    note="still owed: fetched at the next start" if self._gaps.settles else "",
                )
            for task in [*tasks, *pending]:
                task.cancel()

    async def _connections(self, halt: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._connected_at = None
            self._subscribed = False
            try:
                await self._connection()
            except ConfigError as exc:
                self._fatal = exc
                self._log.error("feed_failed", error=str(exc))
                halt.set()
                return
            except FeedDisconnected as exc:
                error = str(exc)
            lasted = None
            if self._connected_at is not None:
                lasted = loop.time() - self._connected_at
                self._open_gap()
            # (a connection never subscribed is no working one, however long it hung: the
            # delays grow, as for one that could not be made)
            await self._reconnects.pause(error, lasted if self._subscribed else None)

    def _open_gap(self) -> None:
        """The connection is lost (or the feed crashed on it): the gap opens where the data
        stopped, owed until its backfill is on disk; the next subscription fills it."""
        if self._connected_at is None or self._gap_start is not None:
            return
        since_data = asyncio.get_running_loop().time() - self._quiet.last_data
        self._gap_start = self._clock() - dt.timedelta(seconds=since_data)
        ended = self._data_end
        if ended is not None and self._gap_start - MAX_DELAY <= ended:
            # (a delayed feed's: see above; data older still is no delay, but old data sent
            # as it is, a test stream's, and the clock says when it stopped)
            self._gap_start = min(self._gap_start, ended)
        self._gaps.owe(self._gap_start)

    def _owe_behind(self) -> None:
        """At a stop: a feed whose data ended well before it came (a delayed stream's, or
        frames held up behind a full queue) owes the gap from where the data ends, so that
        the next start backfills from there, not from the daemon's saved clock, which is
        later: the minutes between, which the stream does not send again, used to be lost.
        (A feed quiet for long lost nothing: its data ended when it came.)"""
        ended = self._data_end
        if self._connected_at is None or self._gap_start is not None or ended is None:
            return
        since_data = asyncio.get_running_loop().time() - self._quiet.last_data
        if self._behind(self._clock() - dt.timedelta(seconds=since_data)) is not None:
            self._gap_start = ended
            self._gaps.owe(ended)

    def _behind(self, arrived: dt.datetime) -> dt.datetime | None:
        """The minute the data ends in, if it ends well behind `arrived` (when it came: a
        delayed stream's), else None."""
        ended = self._data_end
        if ended is None or not arrived - MAX_DELAY <= ended < arrived - BEHIND_AT_STOP:
            return None
        return floor_minute(ended)

    async def _connection(self) -> None:
        """One connection from connect to loss; raises FeedDisconnected or ConfigError."""
        session = self._session
        try:
            async with connect(
                session.url(),
                additional_headers=session.headers(),
                open_timeout=self._open_timeout_s,
                close_timeout=self._close_timeout_s,
                max_size=self._max_frame_bytes,
            ) as ws:
                self._on_open()
                # A provider that takes the connection and never acknowledges the handshake
                # (no "connected", no reply to auth or subscribe) would leave the feed
                # connected, and healthy, with no data for ever: after subscribe_timeout_s
                # the connection is given up and made again, with backoff.
                waits = session.acknowledges_subscribe
                try:
                    async with asyncio.timeout(self._subscribe_timeout_s if waits else None) as t:
                        self._handshake = t
                        await _send(ws, session.opening())
                        if not waits:
                            self._on_subscribed("subscribe sent")
                        async for frame in ws:
                            await self._on_frame(ws, frame)
                except TimeoutError:
                    if not t.expired():
                        raise
                    raise FeedDisconnected(
                        f"{self.name}: not subscribed {self._subscribe_timeout_s:g} s after"
                        f" connecting (the {self.provider} handshake was never acknowledged)"
                    ) from None
                finally:
                    self._handshake = None
                raise FeedDisconnected(f"{self.name}: closed by the server ({_closed(ws)})")
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise ConfigError(
                    f"feeds.{self.name}: {self.provider} refused the credentials (HTTP {status});"
                    " check the key"
                ) from exc
            raise FeedDisconnected(f"{self.name}: upgrade refused (HTTP {status})") from exc
        except ConnectionClosed as exc:
            raise FeedDisconnected(
                f"{self.name}: connection lost ({self._mask(str(exc))})"
            ) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            text = self._mask(str(exc)) or type(exc).__name__
            raise FeedDisconnected(f"{self.name}: {text}") from exc

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _on_open(self) -> None:
        loop = asyncio.get_running_loop()
        self._connected_at = loop.time()
        self._counters.inc("feed_connects", feed=self.name)
        self._counters.set("feed_connected", 1, feed=self.name)
        self._log.info("feed_connected")

    def _on_subscribed(self, message: str) -> None:
        if self._subscribed:
            return
        self._subscribed = True
        if self._handshake is not None:
            self._handshake.reschedule(None)
        self._counters.inc("feed_subscribes", feed=self.name)
        self._log.info("feed_subscribed", symbols=len(self._symbols), message=message)
        now = self._clock()
        if self._gap_start is not None:
            gap_s = (now - self._gap_start).total_seconds()
            self._counters.inc("feed_gap_seconds", gap_s, feed=self.name)
            self._log.warning("feed_gap", gap_s=round(gap_s, 3))
        self._gaps.fill(self._gap_start, now)
        self._gap_start = None

    async def _backfill(
        self,
        start: dt.datetime,
        end: dt.datetime,
        gaps: list[Owed] | None = None,
        symbols: list[str] | None = None,
    ) -> None:
        """`GapFill.fetch`: [start, end) over REST, handed on."""
        await self._gaps.fetch(start, end, gaps, symbols)

    def _reach(self, now: dt.datetime) -> dt.datetime:
        """`GapFill.reach`: how far back a backfill at `now` goes at most."""
        return self._gaps.reach(now)

    # --- frames ----------------------------------------------------------------------------------

    async def _on_frame(self, ws: ClientConnection, frame: bytes | str) -> None:
        try:
            decoded = self._session.decode(frame, self.name)
        except Exception as exc:  # (a frame nobody foresaw: rejected, not fatal)
            # (A decoder never raises on bad input; should one still, the frame is counted
            # and logged, and the connection goes on.)
            self._log.error("decode_failed", error=repr(exc)[:RAW_LIMIT])
            rejected = FeedBatch.empty(self.name)
            rejected.rejections = [frame_rejection("decode_error", frame)]
            decoded = Decoded(rejected, [])
        counters, feed = self._counters, self.name
        counters.inc("feed_messages", feed=feed)
        for control in decoded.controls:
            await self._on_control(ws, control)
        if decoded.ignored:
            counters.inc("feed_ignored", decoded.ignored, feed=feed)
        batch = decoded.batch
        if not (batch.size() or batch.rejections):
            return
        self._quiet.data()
        end = batch.data_end()
        later = end is not None and (self._data_end is None or end > self._data_end)
        if later:
            self._data_end = end
        await self._deliver(batch)
        if later:  # (a delayed stream's gap at a kill -9: see `GapFill.mark`)
            await self._gaps.mark(self._behind(self._clock()))

    async def _deliver(self, batch: FeedBatch) -> None:
        await hand_on(batch, self._queue, self._counters, self._rejections, self.name)

    async def _on_control(self, ws: ClientConnection, control: Control) -> None:
        kind = control.kind
        if kind == "error":
            self._on_error(control)
        elif kind == "status":
            self._counters.inc("feed_status_events", feed=self.name)
            self._log.info(
                "trading_status",
                symbol=control.symbol,
                halted=control.halted,
                status=control.msg,
                codes=control.detail,
            )
            # (at the provider's time of it: the halt began then, not when it reached us)
            at = control.ts
            self._emit("trading_status", symbol=control.symbol, halted=control.halted, at=at)
        elif kind == "subscribed":
            self._on_subscribed(control.msg)
        elif kind == "ping":
            self._counters.inc("feed_pings", feed=self.name)
        else:
            self._log.info("feed_control", kind=kind, message=control.msg)
        await _send(ws, self._session.replies(control))

    def _on_error(self, control: Control) -> None:
        code = "none" if control.code is None else str(control.code)
        self._counters.inc("feed_provider_errors", feed=self.name, code=code)
        text = f"{self.provider} error {code}: {control.msg!r}"
        if control.action == "fatal":
            raise ConfigError(f"feeds.{self.name}: {text}; check the key, secret, plan and symbols")
        if control.action == "reconnect":
            raise FeedDisconnected(f"{self.name}: {text}")
        # (logged once a while per code and message: a provider that answers each subscribe
        # past its plan's limit with one error would otherwise log thousands of lines)
        key = (code, control.msg)
        now = time.monotonic()
        last = self._errors_logged_at.get(key)
        if last is not None and now - last < self._error_log_interval_s:
            self._errors_unlogged[key] = self._errors_unlogged.get(key, 0) + 1
            return
        if len(self._errors_logged_at) >= MAX_ERRORS_KEPT:  # (messages that vary: bounded)
            self._errors_logged_at.clear()
            self._errors_unlogged.clear()
        self._errors_logged_at[key] = now
        repeated = self._errors_unlogged.pop(key, 0)
        said = {"not_logged_since": repeated} if repeated else {}
        self._log.error("feed_provider_error", code=code, message=control.msg, **said)
        self._emit("provider_error", message=text)

    def _emit(
        self,
        kind: FeedEventKind,
        *,
        gap_s: float | None = None,
        symbol: str | None = None,
        halted: bool | None = None,
        message: str = "",
        at: dt.datetime | None = None,
    ) -> None:
        if self._on_event is not None:
            when = at or self._clock()
            event = FeedEvent(self.name, kind, when, gap_s, symbol, halted, message)
            self._on_event(event)


def _session(
    name: str,
    url: str,
    provider: str,
    symbols: list[str],
    key: str | None,
    secret: str | None,
    msgpack: bool,
) -> Session:
    if provider == "generic":
        return _GenericSession(url)
    if not symbols:
        raise ConfigError(f"feeds.{name}.symbols: is empty")
    if not key:
        raise ConfigError(f"feeds.{name}.key: {provider} needs an API key")
    if provider == "alpaca":
        if not secret:
            raise ConfigError(f"feeds.{name}.secret: alpaca needs the API secret")
        return AlpacaSession(url, symbols, key, secret, msgpack=msgpack)
    if provider == "polygon":
        return PolygonSession(url, symbols, key)
    if provider == "finnhub":
        return FinnhubSession(url, symbols, key)
    raise ConfigError(f"feeds.{name}.provider: unknown provider {provider!r}")


async def _relay(stop: asyncio.Event, halt: asyncio.Event) -> None:
    await stop.wait()
    halt.set()


async def _send(ws: ClientConnection, messages: list[Outgoing]) -> None:
    for message in messages:
        await ws.send(message)


def _closed(ws: ClientConnection) -> str:
    code, reason = ws.close_code, ws.close_reason
    return f"code {code}" + (f", {reason}" if reason else "")
