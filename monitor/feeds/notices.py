"""ProviderNotices: what a provider's stream says besides its data, counted, said and handed on.

The provider's session decodes control messages (`monitor.feeds.provider.Control`) beside the
data. The feed acts on a subscription's acknowledgement itself and hands every other one here:

- a provider error is fatal (bad key, plan, syntax: `ConfigError`, the run ends) or asks for a
  reconnect with backoff (Alpaca 406 connection limit, 407 slow client: `FeedDisconnected`):
  never a tight loop; any other the feed carries on after is logged (`feed_provider_error`) and
  handed on (a `provider_error` FeedEvent) once a while per code and message, the lines not
  logged meanwhile counted in the next (`not_logged_since`): a provider that answers each
  subscribe past its plan's limit with one error would otherwise log thousands of lines. Each
  is counted (`feed_provider_errors{code}`);
- a trading status (a halt, a resumption) is counted, logged (`trading_status`) and handed on
  (a `trading_status` FeedEvent) at the provider's time of it: the halt began then, not when
  it reached us;
- a ping is counted, anything else logged (`feed_control`).

Why apart from `monitor.feeds.websocket`: that module is the connection; this is what the
provider tells of it and of the market, with a memory of its own (the errors said lately).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from monitor.core.counters import Counters
from monitor.errors import ConfigError, FeedDisconnected
from monitor.feeds.events import FeedEvent, FeedEventKind
from monitor.feeds.provider import Control

__all__ = ["MAX_ERRORS_KEPT", "ProviderNotices"]

MAX_ERRORS_KEPT = 100  # distinct provider errors whose last log line is remembered


class ProviderNotices:
    """The control messages of the feed `feed`'s stream but its subscription's (`take`); an
    error is logged at most once every `interval_s` per code and message.

    Counters (label `feed`): feed_provider_errors{code}, feed_status_events, feed_pings.
    """

    def __init__(
        self,
        feed: str,
        provider: str,
        *,
        counters: Counters,
        log: Any,
        clock: Callable[[], dt.datetime],
        on_event: Callable[[FeedEvent], None] | None,
        interval_s: float,
    ) -> None:
        self._feed = feed
        self._provider = provider
        self._counters = counters
        self._log = log
        self._clock = clock
        self._on_event = on_event
        self._interval_s = interval_s
        self._logged_at: dict[tuple[str, str], float] = {}  # (code, message): monotonic s
        self._unlogged: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"ProviderNotices({self._feed!r}, {len(self._logged_at)} errors remembered)"

    def take(self, control: Control) -> None:
        """Count, log and hand on `control`; ConfigError on a fatal provider error,
        FeedDisconnected on one that asks for a reconnect."""
        kind = control.kind
        if kind == "error":
            self._error(control)
        elif kind == "status":
            self._counters.inc("feed_status_events", feed=self._feed)
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
        elif kind == "ping":
            self._counters.inc("feed_pings", feed=self._feed)
        else:
            self._log.info("feed_control", kind=kind, message=control.msg)

    def _error(self, control: Control) -> None:
        code = "none" if control.code is None else str(control.code)
        self._counters.inc("feed_provider_errors", feed=self._feed, code=code)
        text = f"{self._provider} error {code}: {control.msg!r}"
        if control.action == "fatal":
            raise ConfigError(
                f"feeds.{self._feed}: {text}; check the key, secret, plan and symbols"
            )
        if control.action == "reconnect":
            raise FeedDisconnected(f"{self._feed}: {text}")
        # (logged once a while per code and message: a provider that answers each subscribe
        # past its plan's limit with one error would otherwise log thousands of lines)
        key = (code, control.msg)
        now = time.monotonic()
        last = self._logged_at.get(key)
        if last is not None and now - last < self._interval_s:
            self._unlogged[key] = self._unlogged.get(key, 0) + 1
            return
        if len(self._logged_at) >= MAX_ERRORS_KEPT:  # (messages that vary: bounded)
            self._logged_at.clear()
            self._unlogged.clear()
        self._logged_at[key] = now
        repeated = self._unlogged.pop(key, 0)
        said = {"not_logged_since": repeated} if repeated else {}
        self._log.error("feed_provider_error", code=code, message=control.msg, **said)
        self._emit("provider_error", message=text)

    def _emit(
        self,
        kind: FeedEventKind,
        *,
        symbol: str | None = None,
        halted: bool | None = None,
        message: str = "",
        at: dt.datetime | None = None,
    ) -> None:
        if self._on_event is not None:
            when = at or self._clock()
            event = FeedEvent(self._feed, kind, when, None, symbol, halted, message)
            self._on_event(event)
