"""Minute rules: a window stays in its session (the overnight gap is no move of a few minutes)."""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Literal

import polars as pl
import pytest
from msgspec.structs import astuple

from monitor.calendar import nyse_sessions
from monitor.core.engine import Engine
from monitor.core.model import Alert, Bar, FeedBatch, bars_frame
from monitor.core.rules.spec import parse_rules

RULES = """
[[rules]]
id = "m.jump"
kind = "surge"
symbols = ["X"]
timeframe = "1m"
window = 2
min_return = 0.05

[[rules]]
id = "m.run"
kind = "streak"
symbols = ["X"]
timeframe = "1m"
count = 3
min_return = 0.001
"""


def at(day: int, hour: int, minute: int) -> dt.datetime:
    """An instant of July 2024 (sessions 13:30-20:00 UTC; the 1st and 2nd are sessions)."""
    return dt.datetime(2024, 7, day, hour, minute, tzinfo=dt.UTC)


def alerts(closes: list[tuple[dt.datetime, float]]) -> list[Alert]:
    """The alerts of one-minute bars of X with these closes, each closed in its own step."""
    engine = Engine(parse_rules(RULES), nyse_sessions(dt.date(2024, 1, 1)))
    engine.warm(at(1, 19, 0))
    fired: list[Alert] = []
    for start, close in closes:
        batch = FeedBatch.empty("t")
        bar = Bar("X", "1m", close, close, close, close, 100.0, start=start)
        batch.minute_bars = bars_frame([bar], "1m")
        engine.ingest(batch)
        fired += engine.advance(start + dt.timedelta(minutes=1, seconds=5)).alerts
    return fired


def test_a_minute_window_does_not_reach_over_the_night() -> None:
    """X ends the 1st at 10.00 (two minutes up 0.2% each) and opens the 2nd at 11.00: the
    opening gap is neither a 2-minute surge of 10% nor the third minute of a run; the same
    rise within the session is both. A window at 09:30 and 09:31 used to reach back into the
    1st's last minutes: "X rose 10.0% in 2 minutes, its largest 2-minute gain on record"."""
    evening = [(at(1, 19, 57), 9.96), (at(1, 19, 58), 9.98), (at(1, 19, 59), 10.0)]
    morning = [(at(2, 13, 30), 11.0), (at(2, 13, 31), 11.02)]
    assert alerts(evening + morning) == []
    later = [(at(2, 13, 32), 11.05), (at(2, 13, 33), 11.6), (at(2, 13, 34), 12.2)]
    fired = alerts(evening + morning + later)
    assert [(a.rule, a.ts) for a in fired] == [
        ("m.jump", "2024-07-02T13:34:00Z"),  # the minute of 13:33: 11.02 -> 11.6 is +5.3%
        ("m.run", "2024-07-02T13:34:00Z"),  # 13:31, 13:32 and 13:33 each up: the third
    ]


JUMPS = """
[[rules]]
id = "jump"
kind = "surge"
symbols = ["X"]
timeframe = "{timeframe}"
window = 1
min_return = 0.05
horizons = [2, 5]
"""


def history(
    timeframe: Literal["1m", "1d"], bars: list[Bar], now: dt.datetime
) -> tuple[list[Alert], dict[str, list[pl.DataFrame]]]:
    """The alerts of a one-period jump of 5% (horizons 2 and 5) over `bars` in one batch, and
    its baseline (`firing.every_period`'s rows, as replay's summary collects them)."""
    engine = Engine(
        parse_rules(JUMPS.format(timeframe=timeframe)), nyse_sessions(dt.date(2024, 1, 1))
    )
    engine.warm(at(1, 13, 0))
    engine.baseline = {}
    batch = FeedBatch.empty("t")
    if timeframe == "1m":
        batch.minute_bars = bars_frame(bars, "1m")
    else:
        batch.daily_bars = bars_frame(bars, "1d")
    engine.ingest(batch)
    return engine.advance(now).alerts, engine.baseline


def stats(h: int, returns: list[float]) -> object:
    """What `history.forward` says of these forward returns over `h` periods (a HorizonStats's
    fields, floats approximately)."""
    n, up = len(returns), sum(r > 0 for r in returns)
    mean, median = statistics.fmean(returns), statistics.median(returns)
    return pytest.approx((h, n, mean, median, up / n, min(returns), max(returns)))


def test_a_minute_history_horizon_does_not_reach_over_the_night() -> None:
    """X jumps at 15:51 and 15:57 (New York) on the 1st and at 09:34 on the 2nd. For the last
    alert, both earlier jumps are 2 minutes old with their 2 minutes in their session; of
    their 5 minutes, the 15:57 jump's end in the next session, and that return is unknown (it
    used to count the 09:32 close as "5 minutes later"). The baseline counts likewise."""
    evening = [10.0, 11.0, 11.1, 11.2, 11.3, 11.4, 11.5, 12.2, 12.0, 12.1]  # 19:50-19:59 UTC
    morning = [12.3, 12.4, 12.6, 12.7, 13.5]  # 13:30-13:34 UTC
    starts = [at(1, 19, 50 + i) for i in range(10)] + [at(2, 13, 30 + i) for i in range(5)]
    closes = dict(zip(starts, evening + morning, strict=True))
    bars = [Bar("X", "1m", c, c, c, c, 100.0, start=s) for s, c in closes.items()]
    fired, baseline = history("1m", bars, at(2, 13, 35) + dt.timedelta(seconds=5))
    assert [a.ts for a in fired] == [
        "2024-07-01T19:52:00Z",
        "2024-07-01T19:58:00Z",
        "2024-07-02T13:35:00Z",
    ]

    def fwd(start: dt.datetime, h: int) -> float:
        return closes[start + dt.timedelta(minutes=h)] / closes[start] - 1.0

    first, second = at(1, 19, 51), at(1, 19, 57)
    last = fired[-1].history
    assert last is not None
    assert [astuple(f) for f in last.forward] == [
        stats(2, [fwd(first, 2), fwd(second, 2)]),
        stats(5, [fwd(first, 5)]),
    ]
    # Forward returns in the session of every minute: 10 minutes then 5.
    totals = pl.concat(baseline["jump"]).sum().row(0, named=True)
    assert (totals["n_2"], totals["n_5"]) == ((10 - 2) + (5 - 2), (10 - 5) + (5 - 5))


def test_a_daily_history_horizon_spans_sessions() -> None:
    """The same closes as sessions: a daily jump's 2 and 5 sessions later are counted, as
    ever, and the baseline counts every session with 2 (5) sessions after it."""
    closes = [10.0, 11.0, 11.1, 11.2, 11.3, 11.4, 11.5, 12.2, 12.0, 12.1, 12.3, 12.4, 12.6, 13.5]
    calendar = nyse_sessions(dt.date(2024, 1, 1))
    sessions = [calendar.shift(dt.date(2024, 7, 1), i) for i in range(len(closes))]
    bars = [
        Bar("X", "1d", c, c, c, c, 100.0, session=d) for d, c in zip(sessions, closes, strict=True)
    ]
    fired, baseline = history("1d", bars, dt.datetime(2024, 8, 1, tzinfo=dt.UTC))
    assert [a.session for a in fired] == [str(sessions[i]) for i in (1, 7, 13)]
    last = fired[-1].history
    assert last is not None

    def fwd(i: int, h: int) -> float:
        return closes[i + h] / closes[i] - 1.0

    assert [astuple(f) for f in last.forward] == [
        stats(2, [fwd(1, 2), fwd(7, 2)]),
        stats(5, [fwd(1, 5), fwd(7, 5)]),
    ]
    totals = pl.concat(baseline["jump"]).sum().row(0, named=True)
    assert (totals["n_2"], totals["n_5"]) == (len(closes) - 2, len(closes) - 5)


def test_a_minute_surge_says_the_minute_it_is_the_largest_since() -> None:
    """A 2-minute surge of X (+7%) at 09:33 (New York) on the 2nd, below the 2-minute returns of
    the 1st's 15:52 and 15:53 minutes (+12%): its `largest_since` is the 1st and
    `largest_since_ts` the later of the two minutes' close, and the text names the minute
    ("since 2024-07-01 15:54"), not only the day (for a surge earlier the same day, it read
    "its largest 2-minute gain since" that very day)."""
    evening = [(at(1, 19, 50), 10.0), (at(1, 19, 51), 10.0), (at(1, 19, 52), 11.2)]
    quiet = [(at(1, 19, 53), 11.2), (at(1, 19, 54), 11.2)]
    morning = [(at(2, 13, 30), 10.0), (at(2, 13, 31), 10.0), (at(2, 13, 32), 10.7)]
    fired = [a for a in alerts(evening + quiet + morning) if a.rule == "m.jump"]
    assert [a.ts for a in fired] == ["2024-07-01T19:53:00Z", "2024-07-02T13:33:00Z"]
    first, second = fired
    assert first.metrics["largest_since"] is None and "on record" in first.text
    assert second.metrics["largest_since"] == "2024-07-01"
    assert second.metrics["largest_since_ts"] == "2024-07-01T19:54:00Z"
    assert second.text.endswith("its largest 2-minute gain since 2024-07-01 15:54.")
