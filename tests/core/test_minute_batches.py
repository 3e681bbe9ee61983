"""Minute rules give the alerts of steps a minute apart however the minutes are batched: a
backlog closed in one step, in steps of a few minutes, with a late bar, over two sessions and a
minute history shorter than them (`Engine(minute_by_minute=True)`, the daemon's)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable

import polars as pl
import pytest

from monitor.core.engine import Engine
from monitor.core.model import MINUTE_SCHEMA, FeedBatch
from monitor.core.rules.spec import parse_rules
from monitor.core.sessions import Sessions
from monitor.core.step_periods import MINUTES_APART, minute_batches

# Memory that reaches back over the loaded minutes: a running high over all of them, "largest
# since", a cooldown, runs, earlier alerts and what followed them; and a rule comparing
# symbols (evaluated over the whole universe at every minute).
RULES = """
[[rules]]
id = "dd.1m"
kind = "drawdown"
universe = true
timeframe = "1m"
max_below_high = 0.01
min_below_high = 0.03
horizons = [2, 5]

[[rules]]
id = "surge.1m"
kind = "surge"
universe = true
timeframe = "1m"
window = 2
min_return = 0.01
horizons = [2, 5]

[[rules]]
id = "streak.1m"
kind = "streak"
universe = true
timeframe = "1m"
count = 2
min_return = 0.002
cooldown = 4
horizons = [3]

[[rules]]
id = "movers.1m"
kind = "movers"
universe = true
timeframe = "1m"
window = 3
top = 1
min_return = 0.005
min_coverage = 0.5
horizons = [2]
"""
SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
# The last 25 minutes of 2024-07-08 and the first 25 of 2024-07-09 (UTC; sessions 13:30-20:00).
EVENING = dt.datetime(2024, 7, 8, 19, 35, tzinfo=dt.UTC)
MORNING = dt.datetime(2024, 7, 9, 13, 30, tzinfo=dt.UTC)
MINUTES = [t + dt.timedelta(minutes=i) for t in (EVENING, MORNING) for i in range(25)]
HISTORY = 15  # minutes held per symbol: fewer than the minutes fed


def minute_bars() -> pl.DataFrame:
    """Random walks of 1.5% a minute; a symbol misses a minute now and then (no trade)."""
    rng = random.Random(11)
    rows = []
    for symbol in SYMBOLS:
        close = 10.0
        for start in MINUTES:
            close *= 1.0 + rng.gauss(0.0, 0.015)
            if rng.random() < 0.15:
                continue
            rows.append((symbol, start, close, close * 1.004, close * 0.996, close, 100.0))
    frame = pl.DataFrame(rows, schema=list(MINUTE_SCHEMA), orient="row")
    return frame.cast(MINUTE_SCHEMA).sort("symbol", "start")  # type: ignore[arg-type]


def engine(sessions: Sessions, minute_by_minute: bool = True, apart: int = 100) -> Engine:
    """An engine of RULES whose steps evaluate up to `apart` minutes a minute at a time (the
    daemon's: 15; more here, so a backlog of the 50 minutes is exact)."""
    made = Engine(
        parse_rules(RULES), sessions, minute_history=HISTORY, minute_by_minute=minute_by_minute
    )
    made.minutes_apart = apart
    return made


def run(engine: Engine, deliveries: Iterable[tuple[dt.datetime, pl.DataFrame]]) -> list[tuple]:
    """Each delivery's bars ingested, then a step 5 s after the end of its last minute; the
    alert lines (ts, rule, symbol, id and the JSON payload) of every step, in order."""
    columns = ["ts", "rule", "symbol", "id", "json"]
    lines: list[tuple] = []
    for last, bars in deliveries:
        batch = FeedBatch.empty("t")
        batch.minute_bars = bars
        engine.ingest(batch)
        step = engine.advance(last + dt.timedelta(minutes=1, seconds=5))
        lines += step.lines.select(columns).rows()
    return lines


def by_minute(bars: pl.DataFrame) -> list[tuple[dt.datetime, pl.DataFrame]]:
    """A delivery per minute: the daemon stepping every minute."""
    return [(start, bars.filter(pl.col("start") == start)) for start in MINUTES]


def in_batches(bars: pl.DataFrame, sizes: list[int]) -> list[tuple[dt.datetime, pl.DataFrame]]:
    """Deliveries of `sizes` minutes each (the rest in the last)."""
    out, at = [], 0
    for size in [*sizes, len(MINUTES)]:
        chunk = MINUTES[at : at + size]
        if not chunk:
            break
        out.append((chunk[-1], bars.filter(pl.col("start").is_in(chunk))))
        at += size
    return out


@pytest.fixture(scope="module")
def stepped(sessions: Sessions) -> list[tuple]:
    """The alert lines of an engine stepped every minute."""
    return run(engine(sessions), by_minute(minute_bars()))


def test_stepping_every_minute_fires_every_rule_over_both_sessions(stepped: list[tuple]) -> None:
    """The walks make every rule fire, in both sessions, before and after the first
    `minute_history` minutes: the comparisons below compare something."""
    assert {rule for _, rule, *_ in stepped} == {"dd.1m", "surge.1m", "streak.1m", "movers.1m"}
    assert {ts[:10] for ts, *_ in stepped} == {"2024-07-08", "2024-07-09"}
    assert len(stepped) > 30


def test_one_batch_gives_the_alerts_of_steps_a_minute_apart(
    sessions: Sessions, stepped: list[tuple]
) -> None:
    """All 50 minutes closed in one step: the same alert lines, ids and payloads included."""
    bars = minute_bars()
    assert run(engine(sessions), [(MINUTES[-1], bars)]) == stepped


@pytest.mark.parametrize("seed", [1, 2])
def test_random_batches_give_the_alerts_of_steps_a_minute_apart(
    sessions: Sessions, stepped: list[tuple], seed: int
) -> None:
    """Minutes closed in steps of 1 to 12 minutes at random: the same alert lines."""
    rng = random.Random(seed)
    sizes = [rng.randint(1, 12) for _ in range(len(MINUTES))]
    assert run(engine(sessions), in_batches(minute_bars(), sizes)) == stepped
    # (the daemon's limit of minutes a step takes a minute at a time: above these batches')
    assert max(sizes) <= MINUTES_APART
    daemons = engine(sessions, apart=MINUTES_APART)
    assert run(daemons, in_batches(minute_bars(), sizes)) == stepped


def test_batches_of_minutes_differ_without_minute_by_minute(
    sessions: Sessions, stepped: list[tuple]
) -> None:
    """Replay's engine (a day per step, for speed) evaluates a batch of minutes at once: a
    rule's memory then depends on the batches (here, other alerts, and other payloads of the
    same alerts)."""
    bars = minute_bars()
    batched = run(engine(sessions, minute_by_minute=False), in_batches(bars, [10] * 5))
    payloads = {line[3]: line[4] for line in stepped}
    assert {line[3] for line in batched} != payloads.keys()
    assert any(payloads.get(line[3]) not in (None, line[4]) for line in batched)


def test_a_late_bar_of_the_last_minute_evaluated_comes_with_the_backlog(
    sessions: Sessions,
) -> None:
    """BBB's bar of 19:45 comes a minute late: stepping every minute, with the bars of 19:46,
    and 19:45 is evaluated again (its alerts as new). Stepped to 19:45, then ten minutes in
    one step, it comes with the backlog's first minute: the same alert lines."""
    bars = minute_bars()
    late_start = EVENING + dt.timedelta(minutes=10)
    is_late = (pl.col("symbol") == "BBB") & (pl.col("start") == late_start)
    late, bars = bars.filter(is_late), bars.filter(~is_late)
    assert late.height == 1
    split = MINUTES.index(late_start) + 1
    steps = by_minute(bars)[: split + 10]
    backlog = pl.concat([late, *(b for _, b in steps[split:])]).sort("symbol", "start")
    at_once = run(engine(sessions), [*steps[:split], (steps[-1][0], backlog)])
    first, after = steps[split]
    steps[split] = (first, pl.concat([late, after]).sort("symbol", "start"))
    assert at_once == run(engine(sessions), steps)


def at(minute: int) -> dt.datetime:
    """10:mm UTC on 2024-07-09."""
    return dt.datetime(2024, 7, 9, 10, minute, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("evaluated", "watermark", "batches"),
    [
        # Minutes up to 10:05 evaluated: a correction (10:00) and a late bar (10:04) come with
        # the first new minute, each later minute in a batch of its own.
        (at(5), at(5), [[0, 4, 5], [6], [7]]),
        # Nothing evaluated yet: every minute alone (the first with nothing before it).
        (None, None, [[0], [4], [5], [6], [7]]),
        # Alerts from 10:07 on (a restart's watermark): a minute ending before it fires nothing
        # and goes with the first that can, the minute ending at 10:07.
        (None, at(7), [[0, 4, 5, 6], [7]]),
        # One new minute (the usual step), or none: the bars as they are.
        (at(7), at(7), [[0, 4, 5, 6, 7]]),
        (at(8), at(8), [[0, 4, 5, 6, 7]]),
    ],
)
def test_minute_batches_are_the_minutes_not_yet_evaluated_one_at_a_time(
    evaluated: dt.datetime | None, watermark: dt.datetime | None, batches: list[list[int]]
) -> None:
    """A step's bars by minute not evaluated yet, the earlier ones with the first of them."""
    starts = [at(m) for m in (0, 4, 5, 6, 7)]
    bars = pl.DataFrame(
        {"symbol": ["X"] * 5 + ["Y"] * 2, "start": starts + starts[-2:], "close": 1.0},
        schema_overrides={"start": MINUTE_SCHEMA["start"]},
    )
    got = minute_batches(bars, evaluated, watermark)
    assert [sorted({s.minute for s in b["start"]}) for b in got] == batches
    assert pl.concat(got).sort("symbol", "start").equals(bars)
    # At most `most` batches: a longer backlog's earlier minutes go with the first.
    capped = minute_batches(bars, evaluated, watermark, most=2)
    assert (
        [sorted({s.minute for s in b["start"]}) for b in capped]
        == [
            sorted(m for b in batches[:-1] for m in b),
            *batches[-1:],
        ]
        if len(batches) > 2
        else batches
    )


def test_fewer_minutes_a_step_apart_as_more_minute_bars_are_held() -> None:
    """The daemon's step takes up to 15 minutes a minute at a time with 2,000 symbols x 780
    minutes held (about 10 s on 2 cores), fewer as more are held (with extended hours' 1,920
    minutes, 6), one at least: a step's cost stays inside the 30 s watchdog."""
    from monitor.core.step_periods import minutes_apart

    assert minutes_apart(0) == minutes_apart(2_000 * 780) == MINUTES_APART == 15
    assert minutes_apart(2_000 * 1_920) == 6
    assert minutes_apart(3_000 * 1_920) == 4
    assert minutes_apart(10**9) == 1
    assert minutes_apart(2_000 * 1_920, most=100) == 6
