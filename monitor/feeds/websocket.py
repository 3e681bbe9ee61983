"""WebSocketFeed: a provider's stream in, FeedBatches out, reconnecting for ever, with no holes.

One connection lives exactly as long as its `async with connect(...)`. The provider's sans-I/O
session (`alpaca`, `polygon`, `finnhub`, or the generic JSON shape: `monitor.feeds.stream_sessions`)
says what to send and decodes each frame; this module does the I/O around it:

- auth and subscribe, per the session's handshake; a provider error is fatal (`ConfigError`, the
  run ends) or asks for a reconnect with backoff, never a tight loop (`ProviderNotices`, which
  takes the provider's other control messages too: `monitor.feeds.notices`); a handshake the
  provider never acknowledges (no reply to auth or subscribe within `subscribe_timeout_s`) is a
  lost connection too;
- every data frame is counted (messages, ticks, bars, rejections by reason; rejections are logged,
  at most one line per reason per interval) and put on the queue, awaiting when it is full;
- a watchdog raises `feed_stale` when no data arrived for `stale_after_s` in regular hours, and
  `feed_recovered` (with the gap) on the next data;
- after a reconnect, the minutes missed in the gap are fetched over REST and queued as minute
  bars (`GapFill`, which keeps the failed gaps and asks for them again), and the minute it
  came back in once that is over (its trades before the reconnect), the daemon's close of it
  held meanwhile (`await_minute`). The gap opens where the data stopped, by the data's own
  times when it ends earlier (a delayed stream's), and a delayed stream's is owed from where
  its data ends at a stop, and while it runs, too (`OpenGap`: `monitor.feeds.open_gap`).

The provider's other messages (`ProviderNotices`), where the data stands (`OpenGap`), the
backfills (`GapFill`), the quiet watch (`QuietWatch`), the pauses between connections
(`Reconnects`) and the rejections' log lines (`RejectionLog`) are objects of their own that
the feed owns and drives.

websockets and httpx types stay in this module: they become `FeedDisconnected`, `TransientError`
or `ConfigError`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from monitor import logs
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import FeedBatch
from monitor.errors import ConfigError, FeedDisconnected
from monitor.feeds.events import FeedEvent, FeedEventKind, QuietSettings, QuietWatch
from monitor.feeds.gap_fill import GapFill
from monitor.feeds.notices import ProviderNotices
from monitor.feeds.open_gap import OpenGap
from monitor.feeds.owed import Owed
from monitor.feeds.provider import RAW_LIMIT, Control, Decoded, Outgoing, frame_rejection
from monitor.feeds.reconnects import Reconnects
from monitor.feeds.rejections import RejectionLog
from monitor.feeds.rest import RestBackfill, mask_url
from monitor.feeds.stream_sessions import Provider, session_for
from monitor.feeds.wire import Wire, hand_on

__all__ = ["FeedEvent", "FeedEventKind", "Provider", "RestBackfill", "WebSocketFeed", "mask_url"]


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
        self._session = session_for(name, url, provider, self._symbols, key, secret, msgpack)
        self._secrets = [s for s in (key, secret) if s]
        self._queue = queue
        self._counters = counters
        self._clock = clock
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
        self._gap = OpenGap(self._gaps, clock, self._quiet, gap_since)
        self._notices = ProviderNotices(
            name,
            provider,
            counters=counters,
            log=self._log,
            clock=clock,
            on_event=on_event,
            interval_s=rejection_log_interval_s,
        )
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
            if self._fatal is None:  # (a stop: a delayed stream owes from where its data ends)
                if self._connected_at is not None:
                    self._gap.owe_behind()
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
        """The connection is lost (or the feed crashed on it): the gap opens (`OpenGap.open`)."""
        if self._connected_at is not None:
            self._gap.open()

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
        if (start := self._gap.start) is not None:
            gap_s = (now - start).total_seconds()
            self._counters.inc("feed_gap_seconds", gap_s, feed=self.name)
            self._log.warning("feed_gap", gap_s=round(gap_s, 3))
        self._gaps.fill(start, now)
        self._gap.filled()

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
        later = self._gap.took(batch.data_end())
        # (behind as it came: after a wait for room in a full queue, a real-time feed's
        # frame would look delayed, and be owed)
        behind = self._gap.behind(self._clock()) if later else None
        await self._deliver(batch)
        if later:  # (a delayed stream's gap at a kill -9: see `GapFill.mark`)
            await self._gaps.mark(behind)

    async def _deliver(self, batch: FeedBatch) -> None:
        await hand_on(batch, self._queue, self._counters, self._rejections, self.name)

    async def _on_control(self, ws: ClientConnection, control: Control) -> None:
        if control.kind == "subscribed":
            self._on_subscribed(control.msg)
        else:  # (an error may end the connection, or the run: `ProviderNotices`)
            self._notices.take(control)
        await _send(ws, self._session.replies(control))


async def _relay(stop: asyncio.Event, halt: asyncio.Event) -> None:
    await stop.wait()
    halt.set()


async def _send(ws: ClientConnection, messages: list[Outgoing]) -> None:
    for message in messages:
        await ws.send(message)


def _closed(ws: ClientConnection) -> str:
    code, reason = ws.close_code, ws.close_reason
    return f"code {code}" + (f", {reason}" if reason else "")
