"""Chart PNGs with matplotlib's Agg backend (no pyplot, no global state; safe in a thread).

`alert_chart`: the symbol's recent closes with the sessions that fired highlighted (top), and its
whole loaded history with earlier occurrences (`history.prior_dates`) marked (bottom).
`rally_chart`: the small-cap proxy against the large caps, rebased to 100, for the digest.
Closes come from the daemon's `bars_daily.parquet`; `BarsFile` re-reads it when it changes, and
says once (a warning) when it is missing, as messages then go out without a chart.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monitor import logs
from monitor.core.model import DAILY_SCHEMA, Alert, empty

_DRAW_LOCK = threading.Lock()  # matplotlib's font cache and text layout are not thread-safe


class BarsFile:
    """The daemon's daily bars Parquet file, re-read when its mtime changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._bars = empty(DAILY_SCHEMA)
        self._missing = False  # warned about it; reset once the file is back
        self._log = logs.get("notify_charts")

    def warn_unset(self) -> None:
        """Charts are on and a receiver takes them, but no bars file is named: say so."""
        self._log.warning(
            "bars_file_unset",
            hint="messages go out without charts; set [charts] bars to the daemon's store "
            "bars_daily.parquet (relative to the notifier's config), or enabled = false",
        )

    def load(self) -> pl.DataFrame:
        """The bars (empty when there is no file: logged once, until the file appears)."""
        if self.path is None:
            return self._bars
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            if not self._missing:
                self._missing = True
                self._log.warning(
                    "bars_file_missing",
                    path=str(self.path),
                    error=exc.strerror,
                    hint="messages go out without charts; [charts] bars must name the "
                    "daemon's store bars_daily.parquet (relative to the notifier's config)",
                )
            return empty(DAILY_SCHEMA)
        self._missing = False
        if mtime != self._mtime:
            self._bars = (
                pl.read_parquet(self.path).select(list(DAILY_SCHEMA)).sort("symbol", "session")
            )
            self._mtime = mtime
        return self._bars


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)  # type: ignore[no-untyped-call]
    return buf.getvalue()


def _day(text: str) -> dt.date | None:
    """A session date (YYYY-MM-DD), or None when `text` is not one (the notifier rejects such
    alerts when it reads them; a date that is not one is not drawn, rather than raising)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def alert_chart(bars: pl.DataFrame, alerts: Sequence[Alert], sessions: int = 120) -> bytes | None:
    """A PNG for the first alert's symbol, or None when the bars file has no closes for it (or
    none of its alerts has a session date)."""
    symbol = alerts[0].symbol
    mine = bars.filter(pl.col("symbol") == symbol).sort("session")
    if mine.height < 2:
        return None
    fired = {d for a in alerts if a.symbol == symbol and (d := _day(a.session)) is not None}
    if not fired:
        return None
    prior: set[dt.date] = set()
    for a in alerts:
        if a.symbol == symbol and a.history is not None:
            prior.update(d for text in a.history.prior_dates if (d := _day(text)) is not None)
    last = max(fired)
    recent = mine.filter(pl.col("session") <= last).tail(sessions)
    if recent.height < 2:
        recent = mine.tail(sessions)
    days: list[dt.date] = recent.get_column("session").to_list()
    closes: list[float] = recent.get_column("close").to_list()
    by_day: dict[dt.date, float] = dict(
        zip(mine.get_column("session").to_list(), mine.get_column("close").to_list(), strict=True)
    )
    # numpy arrays, not lists of dates: matplotlib converts those one by one.
    all_days = mine.get_column("session").to_numpy()
    all_closes = mine.get_column("close").to_numpy()
    with _DRAW_LOCK:
        fig = Figure(figsize=(8, 5), dpi=80)  # no constrained layout: it draws twice
        fig.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.06, hspace=0.25)
        top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])
        top.plot(days, closes, color="#1f4e79", linewidth=1.4)
        hits = [d for d in days if d in fired]
        top.scatter(hits, [by_day[d] for d in hits], color="#d62728", zorder=3, s=36, label="fired")
        top.set_title(f"{symbol}: last {len(days)} sessions", fontsize=11)
        top.grid(alpha=0.3)
        if hits:
            top.legend(loc="upper left", fontsize=8)
        bottom.plot(all_days, all_closes, color="#7f7f7f", linewidth=0.8)
        marks = sorted(d for d in prior if d in by_day)
        bottom.scatter(
            marks,
            [by_day[d] for d in marks],
            color="#ff7f0e",
            zorder=3,
            s=20,
            label=f"earlier occurrences ({len(prior)})",
        )
        now = [d for d in fired if d in by_day]
        bottom.scatter(now, [by_day[d] for d in now], color="#d62728", zorder=4, s=24)
        if float(all_closes.min()) > 0:
            bottom.set_yscale("log")
        bottom.grid(alpha=0.3)
        bottom.legend(loc="upper left", fontsize=8)
        return _png(fig)


def rally_chart(
    bars: pl.DataFrame, small: str, large: Sequence[str], sessions: int = 63
) -> bytes | None:
    """Closes of `small` and `large` over the last `sessions`, rebased to 100."""
    names = [small, *large]
    with _DRAW_LOCK:
        fig = Figure(figsize=(8, 4), dpi=80)
        fig.subplots_adjust(left=0.08, right=0.98, top=0.92, bottom=0.08)
        ax = fig.subplots()
        drawn = 0
        for name in names:
            s = bars.filter(pl.col("symbol") == name).sort("session").tail(sessions)
            if s.height < 2:
                continue
            closes: list[float] = s.get_column("close").to_list()
            ax.plot(
                s.get_column("session").to_list(),
                [100 * c / closes[0] for c in closes],
                label=name,
                linewidth=2.0 if name == small else 1.2,
            )
            drawn += 1
        if drawn == 0:
            return None
        ax.set_title(f"{small} against {', '.join(large)} (rebased to 100)", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        return _png(fig)
