"""What the notifier sends: messages for alerts (text per receiver format, a chart when the
channel takes attachments) and the daily digest."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import apprise

from monitor import logs
from monitor.core.model import Alert
from monitor.notify.chart import BarsFile, alert_chart, rally_chart
from monitor.notify.config import NotifyConfig, ReceiverConfig
from monitor.notify.delivery import Sender, apprise_quiet, formats_of
from monitor.notify.digest import build_digest
from monitor.notify.render import BodyFormat, Message, kind_of, render
from monitor.notify.senders import NATIVE

CHART_CACHE = 64  # messages whose chart is kept: the receivers of one group share it


@dataclass(frozen=True)
class Prepared:
    """A message already rendered (the digest), sent once per receiver under `key`."""

    key: str
    message: Message


def digest_key(day: dt.date) -> str:
    """The delivery log key of `day`'s digest (the day in `[digest] tz`)."""
    return f"digest:{day.isoformat()}"


def body_format(r: ReceiverConfig, url: str) -> BodyFormat:
    """The receiver's body format: as configured, else HTML for email, plain text for a
    service Apprise sends as plain text (ntfy, Gotify, Signal, SMS, ...: Apprise has no
    Markdown-to-text conversion, and the markers and backslashes would show), Markdown for
    the rest."""
    if r.format != "auto":
        return r.format
    scheme = url.partition("://")[0].lower()
    if scheme in ("mailto", "mailtos"):
        return "html"
    if scheme not in ("json", "jsons", *NATIVE) and _plain_text_service(url):
        return "text"
    return "markdown"


def _plain_text_service(url: str) -> bool:
    """Whether Apprise's plugin for `url` takes plain text only (False when it cannot tell)."""
    try:
        with apprise_quiet():
            server = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    except Exception:  # (a URL Apprise cannot use is the sender's to report)
        return False
    return server is not None and formats_of(server) == {"text"}


class Composer:
    """Renders for the receivers of `config`; `formats` is each receiver's body format and
    `senders` its sender (consulted when a message is made: it may be filled in later)."""

    def __init__(
        self,
        config: NotifyConfig,
        formats: Mapping[str, BodyFormat],
        senders: Mapping[str, Sender],
    ) -> None:
        self.config = config
        self._formats = formats
        self._senders = senders
        self._bars = BarsFile(config.bars_path)
        self._charts: OrderedDict[tuple[str, ...], bytes | None] = OrderedDict()
        self._log = logs.get("notify_charts")

    def check_charts(self) -> None:
        """Read the bars file now when charts are on, so that a missing one is reported (once,
        see BarsFile) when the notifier starts rather than at its first alert; charts on for a
        receiver that takes them, with no bars file named, are reported too."""
        if not self.config.charts.enabled:
            return
        if self.config.bars_path is None:
            takers = [r for r, s in self._senders.items() if s.takes_attachments]
            if any(self.config.receiver(r).attach_chart for r in takers):
                self._bars.warn_unset()
            return
        self._bars.load()

    async def message(self, receiver: str, alerts: Sequence[Alert]) -> Message:
        """The message for `alerts` on `receiver`, with a chart when it takes attachments."""
        fmt = self._formats[receiver]
        title, body = render(alerts, fmt, self.config.templates)
        r = self.config.receiver(receiver)
        attachments: tuple[tuple[str, bytes], ...] = ()
        if (
            self.config.charts.enabled
            and r.attach_chart
            and self._senders[receiver].takes_attachments
        ):
            png = await self.chart(alerts)
            if png is not None:
                attachments = ((f"{_safe_name(alerts[0].symbol)}.png", png),)
        return Message(title, body, fmt, attachments, kind_of(alerts), tuple(alerts))

    async def chart(self, alerts: Sequence[Alert]) -> bytes | None:
        """The chart PNG for a message (cached briefly); None when there is none, or when it
        cannot be drawn (unreadable bars file, or a bug: logged as `chart_failed`)."""
        key = tuple(a.id for a in alerts)
        if key in self._charts:
            return self._charts[key]
        png = None
        try:
            bars = self._bars.load()
            if bars.height and alerts[0].history is not None:
                png = await asyncio.to_thread(
                    alert_chart, bars, alerts, self.config.charts.sessions
                )
        except Exception as exc:  # (a chart is an extra: the message goes without it)
            self._log.warning(
                "chart_failed",
                ids=[a.id for a in alerts],
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
        self._charts[key] = png
        while len(self._charts) > CHART_CACHE:
            self._charts.popitem(last=False)
        return png

    async def digest(
        self, alerts: Sequence[Alert], now: dt.datetime
    ) -> tuple[dt.date, list[tuple[str, Prepared]]]:
        """The day's digest of `alerts` (the last day's), one job per digest receiver, each under
        the key `digest:<day>` so that it goes out once per day."""
        d = self.config.digest
        bars = self._bars.load()
        day = now.astimezone(zoneinfo.ZoneInfo(d.tz)).date()
        digest = build_digest(list(alerts), bars, d, day)
        png = await asyncio.to_thread(rally_chart, bars, d.small, d.large) if bars.height else None
        jobs: list[tuple[str, Prepared]] = []
        for name in self.config.digest_receivers:
            fmt = self._formats[name]
            attach = (
                ((f"digest-{day}.png", png),)
                if png and self._senders[name].takes_attachments
                else ()
            )
            msg = Message(digest.title, digest.bodies[fmt], fmt, attach)
            jobs.append((name, Prepared(digest_key(day), msg)))
        return day, jobs


def _safe_name(symbol: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in symbol) or "chart"
