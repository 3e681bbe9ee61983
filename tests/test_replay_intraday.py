"""`replay` of minute and tick files: the engine builds the sessions from them, as the daemon
does from a feed, and minute rules fire over them. (A minute file used to be read as daily
bars: each day's first minute, 04:00 pre-market, taken for the day and the rest rejected as
repeats.)"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from monitor.cli import main
from monitor.core.model import TICK_SCHEMA, Rejection
from monitor.core.sessions import Sessions
from monitor.store import Store
from tests.cli_here import cli_here
from tests.conftest import DATA
from tests.test_service import write_config

SPY = DATA / "spy_1min_2024-03-08_2024-03-11.csv"
NEW_YORK = "America/New_York"

RULES = """
[[rules]]
id = "surge.5m"
kind = "surge"
symbols = ["SPY"]
timeframe = "1m"
window = 5
min_return = 0.001

[[rules]]
id = "up.day"
kind = "streak"
symbols = ["SPY"]
timeframe = "1d"
count = 1
min_return = -0.5
"""


def replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: str, *args: str
) -> tuple[list[dict[str, object]], str]:
    """`replay --format jsonl` of `rules` with `args`: the alerts, and stderr."""
    (tmp_path / "rules.toml").write_text(rules)
    code = main(["replay", "--rules", str(tmp_path / "rules.toml"), *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()], err


def regular_minutes() -> pl.DataFrame:
    """The minute file's bars of regular hours (09:30 to 16:00 New York), read by polars."""
    frame = pl.read_csv(SPY).with_columns(
        pl.col("datetime").str.to_datetime("%Y-%m-%d %H:%M:%S%:z").dt.convert_time_zone(NEW_YORK)
    )
    clock = pl.col("datetime").dt.time()
    regular = frame.filter((clock >= dt.time(9, 30)) & (clock < dt.time(16)))
    return regular.with_columns(pl.col("datetime").dt.date().alias("day"))


def test_a_minute_file_replays_as_its_minutes_and_the_sessions_they_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPY's minutes of 2024-03-08 and 03-11: the 5-minute surges fire where a one-shot polars
    pass over the regular-hours minutes finds them (the 5-minute return within a session at
    least 0.1%, once per episode), and the day's rule fires on 03-11 with the session built of
    them (the close of 15:59's bar, the return from 03-08's). The 819 minutes outside regular
    hours are counted, not listed."""
    alerts, err = replay(tmp_path, capsys, RULES, "--data", f"SPY={SPY}")
    minutes = regular_minutes()
    ret = pl.col("close") / pl.col("close").shift(5).over("day") - 1.0
    cond = (ret >= 0.001 - 1e-9).fill_null(False)
    onsets = minutes.filter(cond & ~cond.shift(1).fill_null(True))
    want = (onsets.get_column("datetime") + dt.timedelta(minutes=1)).dt.convert_time_zone("UTC")
    got = [a["ts"] for a in alerts if a["rule"] == "surge.5m"]
    assert got == want.dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_list()
    assert len(got) > 5
    days = minutes.group_by("day", maintain_order=True).agg(pl.col("close").last())
    close_8, close_11 = days.get_column("close").to_list()
    [day] = [a for a in alerts if a["rule"] == "up.day"]
    assert day["session"] == "2024-03-11"
    metrics = day["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["close"] == pytest.approx(close_11)
    assert metrics["return"] == pytest.approx(close_11 / close_8 - 1)
    assert "outside_session=819" in err and "(outside_session)" not in err
    # --to takes the minutes up to that date, --from prints from that date on.
    early, _ = replay(tmp_path, capsys, RULES, "--data", f"SPY={SPY}", "--to", "2024-03-08")
    assert early and all(str(a["session"]) == "2024-03-08" for a in early)
    late, _ = replay(tmp_path, capsys, RULES, "--data", f"SPY={SPY}", "--from", "2024-03-11")
    assert late == [a for a in alerts if a["session"] == "2024-03-11"]


def ticks_csv(path: Path) -> Path:
    """X trades twice a minute on 2024-07-16 from 09:30 to 10:30, climbing 0.5% every ten
    minutes and falling back between, with a pre-market trade and a repeated one."""
    rows = ["symbol,ts,price,size,id", "X,2024-07-16 08:00:00,9.00,100,P"]
    start = dt.datetime(2024, 7, 16, 9, 30)
    for minute in range(60):
        price = 10.0 * (1.005 if minute % 10 >= 5 else 1.0) ** (minute % 10 - 4)
        for second, size in ((5, 100), (40, 200)):
            at = start + dt.timedelta(minutes=minute, seconds=second)
            rows.append(f"X,{at:%Y-%m-%d %H:%M:%S},{price:.4f},{size},T{minute}-{second}")
    rows.append(rows[-1])
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_tick_file_replays_as_the_minute_bars_its_ticks_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """X's ticks (times New York) and the minute bars a one-shot polars pass makes of them
    (first, max, min, last, sum per minute of regular hours) give the same alerts, ids
    included; the pre-market trade and the repeated one are counted."""
    rules = RULES.replace('"SPY"', '"X"')
    ticks = ticks_csv(tmp_path / "ticks.csv")
    from_ticks, err = replay(tmp_path, capsys, rules, "--data", str(ticks))
    assert "duplicate=1" in err and "outside_session=1" in err
    frame = (
        pl.read_csv(ticks, try_parse_dates=True)
        .filter(pl.col("id") != "P")
        .unique(maintain_order=True)
    )
    bars = (
        frame.group_by_dynamic("ts", every="1m", group_by="symbol")
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("size").sum().alias("volume"),
        )
        .with_columns(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S").alias("datetime"))
        .drop("ts")
    )
    bars.write_csv(tmp_path / "minutes.csv")
    from_bars, _ = replay(tmp_path, capsys, rules, "--data", str(tmp_path / "minutes.csv"))
    assert [a["rule"] for a in from_ticks].count("surge.5m") == 6
    assert from_ticks == from_bars


def test_daily_history_then_minutes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A daily file up to 2024-03-07 and the minutes from 03-08: a one-session surge of 2% on
    03-08 is taken from 03-07's close in the daily file (set 2% below the close 03-08's
    minutes make), as the daemon would take it over its stored history."""
    close_8 = regular_minutes().filter(pl.col("day") == dt.date(2024, 3, 8))["close"][-1]
    daily = tmp_path / "spy_daily.csv"
    close_7 = close_8 / 1.02
    daily.write_text(f"date,close\n2024-03-06,{close_7}\n2024-03-07,{close_7}\n")
    rules = RULES + '\n[[rules]]\nid = "jump"\nkind = "surge"\nsymbols = ["SPY"]\n'
    rules += 'timeframe = "1d"\nwindow = 1\nmin_return = 0.015\n'
    alerts, _ = replay(tmp_path, capsys, rules, "--data", f"SPY={daily}", "--data", f"SPY={SPY}")
    [jump] = [a for a in alerts if a["rule"] == "jump"]
    assert jump["session"] == "2024-03-08"
    assert jump["metrics"]["return"] == pytest.approx(0.02)  # type: ignore[index]


def test_backfill_stores_the_sessions_a_minute_file_makes(tmp_path: Path) -> None:
    """`backfill` of SPY's minute file stores the two sessions the daemon's engine builds of
    them (regular hours: open, high, low, close and volume of 09:30 to 16:00), counting the
    minutes outside; a daily file's bar of 03-08 given with it outranks the built one, and a
    file of closes only does not replace the built bar of 03-11. (The minute file used to be
    stored as each day's 04:00 minute.)"""
    write_config(tmp_path, "mm-backfill-minutes")
    daily = tmp_path / "spy_daily.csv"
    daily.write_text("date,open,high,low,close,volume\n2024-03-08,1,2,0.5,1.5,10\n")
    closes = tmp_path / "spy_closes.csv"  # (a close only does not replace a built bar)
    closes.write_text("date,close\n2024-03-11,500\n")
    res = cli_here(
        "backfill", "--config", str(tmp_path / "monitor.toml"),
        "--data", f"SPY={SPY}", "--data", f"SPY={daily}", "--data", f"SPY={closes}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "outside_session=819" in res.stderr and "(outside_session)" not in res.stderr
    stored = Store(tmp_path / "store").load_bars().sort("session")
    want = (
        regular_minutes()
        .group_by("day", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .filter(pl.col("day") == dt.date(2024, 3, 11))
    )
    row = stored.filter(pl.col("session") == dt.date(2024, 3, 11)).row(0, named=True)
    for field in ("open", "high", "low", "close", "volume"):
        assert row[field] == pytest.approx(want[field][0]), field
    assert stored.filter(pl.col("session") == dt.date(2024, 3, 8))["close"].to_list() == [1.5]


def synthetic_minutes(path: Path, sessions: list[dt.date], hole: dt.date | None = None) -> Path:
    """X's regular-hours minutes (New York times) over `sessions` but `hole`: a random walk."""
    rng = np.random.default_rng(7)
    rows, price = ["datetime,open,high,low,close,volume"], 50.0
    for day in sessions:
        if day == hole:
            continue
        for minute in range(390):
            at = dt.datetime.combine(day, dt.time(9, 30)) + dt.timedelta(minutes=minute)
            step = float(rng.normal(0, 0.004))
            close = round(price * (1 + step), 4)
            high, low = max(price, close) + 0.01, min(price, close) - 0.01
            rows.append(
                f"{at:%Y-%m-%d %H:%M:%S},{price},{high:.4f},{low:.4f},{close},{100 + minute}"
            )
            price = close
    path.write_text("\n".join(rows) + "\n")
    return path


def sessions_of(minutes: Path) -> pl.DataFrame:
    """The daily bars of a file of regular-hours minutes, by a one-shot polars pass."""
    frame = pl.read_csv(minutes, try_parse_dates=True)
    return frame.group_by(pl.col("datetime").dt.date().alias("date"), maintain_order=True).agg(
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
    )


SESSIONS = [dt.date(2024, 3, d) for d in (4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 18, 19, 20)]
DAILY_RULES = """
[[rules]]
id = "up.1d"
kind = "streak"
symbols = ["X"]
timeframe = "1d"
count = 1
min_return = 0.0
horizons = [1, 3]
"""


def test_a_summary_of_minutes_is_that_of_the_sessions_they_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--format summary` of a minute file: a daily rule's alerts and what followed them, as
    over a daily file of the same sessions (a one-shot polars pass over the minutes), not a
    summary without outcomes (each day's evaluation knows no later session)."""
    minutes = synthetic_minutes(tmp_path / "x_minutes.csv", SESSIONS)
    sessions_of(minutes).write_csv(tmp_path / "x_daily.csv")
    (tmp_path / "rules.toml").write_text(DAILY_RULES)
    outputs = []
    for data in ("x_minutes.csv", "x_daily.csv"):
        args = ["--rules", str(tmp_path / "rules.toml"), "--format", "summary"]
        assert main(["replay", *args, "--data", f"X={tmp_path / data}"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert "n/a" not in outputs[0] and " 0 alerts" not in outputs[0]


def test_sessions_missing_from_minutes_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A session missing inside a minute file's history is named on stderr, as a daily
    file's is."""
    minutes = synthetic_minutes(tmp_path / "x.csv", SESSIONS, hole=dt.date(2024, 3, 12))
    _, err = replay(tmp_path, capsys, DAILY_RULES, "--data", f"X={minutes}")
    assert "1 session missing" in err and "2024-03-12" in err


def test_minutes_and_ticks_from_the_future_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A minute file whose year is 2200 (a typo) builds no session and fires nothing: its
    bars are refused as `future_bar`, named on stderr; so are a tick file's ticks of 10:00
    on (`future_tick`)."""
    text = SPY.read_text().replace("2024-03-11", "2200-03-11")
    (tmp_path / "spy.csv").write_text(text)
    alerts, err = replay(tmp_path, capsys, RULES, "--data", f"SPY={tmp_path / 'spy.csv'}")
    assert alerts and {a["session"] for a in alerts} == {"2024-03-08"}
    assert f"future_bar={text.count('2200-03-11')}" in err and "2200-03-11" in err
    assert f"and {text.count('2200-03-11') - 5} more" in err  # (each one listed, not 5 only)
    ticks = ticks_csv(tmp_path / "ticks.csv")
    late = ticks.read_text().replace("2024-07-16 10:", "2200-07-16 10:")
    ticks.write_text(late)
    alerts, err = replay(tmp_path, capsys, RULES.replace('"SPY"', '"X"'), "--data", str(ticks))
    assert f"future_tick={late.count('2200-07-16') - 1}" in err  # (the repeat: a duplicate)
    assert {a["session"] for a in alerts} <= {"2024-07-16"}


WEEKLY = (
    DAILY_RULES
    + """
[[rules]]
id = "up.1w"
kind = "streak"
symbols = ["X"]
timeframe = "1w"
count = 1
min_return = -0.5
"""
)


def test_minutes_give_the_alerts_of_the_sessions_they_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daily and weekly rules over a minute file give the alerts a daily file of the same
    sessions gives, once each, and none before --from. (Day by day, every day of the next
    week evaluated the week again: its alert came back, and --from let it through.)"""
    minutes = synthetic_minutes(tmp_path / "x_minutes.csv", SESSIONS)
    sessions_of(minutes).write_csv(tmp_path / "x_daily.csv")
    for since in ((), ("--from", "2024-03-18")):
        outputs = []
        for data in ("x_minutes.csv", "x_daily.csv"):
            alerts, _ = replay(tmp_path, capsys, WEEKLY, "--data", f"X={tmp_path / data}", *since)
            outputs.append(alerts)
        assert outputs[0] == outputs[1]
        ids = [a["id"] for a in outputs[0]]
        assert len(ids) == len(set(ids))
        if not since:
            assert [a["session"] for a in outputs[0] if a["rule"] == "up.1w"] == ["2024-03-15"]
    assert [a["session"] for a in outputs[0] if a["rule"] == "up.1w"] == []
    assert all(str(a["session"]) >= "2024-03-18" for a in outputs[0])


def test_a_squeeze_on_closes_only_is_named_beside_minutes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A squeeze rule on a symbol of a file of closes only cannot fire (no volume), and says
    so when minutes of another symbol are replayed with it; one on the minutes' symbol can."""
    closes = tmp_path / "y.csv"
    closes.write_text("date,close\n2024-03-07,10\n2024-03-08,11\n")
    squeeze = '[[rules]]\nkind = "squeeze"\ntimeframe = "1d"\nmin_return = 0.05\n'
    squeeze += 'volume_ratio = 2.0\nunknown_short_interest = "fire"\n'
    rules = squeeze.replace("[[rules]]\n", '[[rules]]\nid = "sq.y"\nsymbols = ["Y"]\n')
    rules += squeeze.replace("[[rules]]\n", '[[rules]]\nid = "sq.spy"\nsymbols = ["SPY"]\n')
    _, err = replay(tmp_path, capsys, rules, "--data", f"Y={closes}", "--data", f"SPY={SPY}")
    assert "rule sq.y cannot fire: no volume" in err
    assert "sq.spy cannot fire" not in err


def test_a_session_under_way_and_a_day_that_is_none(sessions: Sessions) -> None:
    """At 10:00 New York on 2024-03-11 (`now`), SPY's minutes of that day close up to then and
    its session is not built (`session_not_closed`); minutes of a Saturday are refused whole
    (`not_a_session`), each a rejection per symbol, counted."""
    from monitor.core.model import DAILY_SCHEMA, empty
    from monitor.core.rules.spec import parse_rules
    from monitor.datafiles import DataSpec
    from monitor.minutefiles import read_minute_files
    from monitor.replay import build_engine
    from monitor.replay_days import IntradayData, intraday_step

    minutes = read_minute_files([DataSpec(path=str(SPY), symbol="SPY")]).bars
    saturday = minutes.head(3).with_columns(pl.col("start") + dt.timedelta(days=1))  # 03-09
    day = IntradayData(pl.concat([minutes, saturday]).sort("symbol", "start"), empty(TICK_SCHEMA))
    minute_engine = build_engine(parse_rules(RULES.split('[[rules]]\nid = "up.day"')[0]), sessions)
    engine = build_engine(parse_rules(""), sessions)
    now = dt.datetime(2024, 3, 11, 14, 0, tzinfo=dt.UTC)
    rejected: list[Rejection] = []
    no_daily = empty(DAILY_SCHEMA)
    none = pl.Series([], dtype=pl.Boolean)  # (no daily bar is a close only)
    step = intraday_step(engine, minute_engine, no_daily, none, day, rejected=rejected, now=now)
    assert engine.daily.get_column("session").to_list() == [dt.date(2024, 3, 8)]
    assert {(r.reason, r.symbol, r.raw) for r in rejected if r.reason != "outside_session"} == {
        ("not_a_session", "SPY", "SPY 2024-03-09"),
        ("session_not_closed", "SPY", "2024-03-11"),
    }
    assert minute_engine.counts["not_a_session"] == 3  # (its rows)
    assert minute_engine.counts["session_not_closed"] == 1  # (its symbols)
    assert step.alerts and max(a.ts for a in step.alerts) <= "2024-03-11T14:00:00Z"
    assert any(a.session == "2024-03-11" for a in step.alerts)


def test_backfill_refuses_a_daily_bar_of_a_session_under_way() -> None:
    """A daily file's bar of a session still under way is not stored (`session_not_closed`):
    it would stand for the whole session."""
    from monitor.backfill import closed
    from monitor.core.model import DAILY_SCHEMA

    bars = pl.DataFrame(
        [("X", dt.date(2024, 7, d), 10.0, 10.0, 10.0, 10.0, 1.0) for d in (10, 11)],
        schema=DAILY_SCHEMA,
        orient="row",
    )
    kept, refused = closed(bars, dt.datetime(2024, 7, 11, 15, tzinfo=dt.UTC))
    assert kept.get_column("session").to_list() == [dt.date(2024, 7, 10)]
    assert [(r.reason, r.symbol, r.raw) for r in refused] == [
        ("session_not_closed", "X", "2024-07-11")
    ]
    assert closed(bars, dt.datetime(2024, 7, 11, 20, 1, tzinfo=dt.UTC))[0].height == 2


def test_a_bar_of_a_session_under_way_is_refused_before_a_later_day_that_is_no_session() -> None:
    """Bars of Thursday 2024-07-11, Friday's session and Saturday (no session: the engine
    refuses it later): at Friday 15:00 UTC Friday's bar is refused as under way, the others
    kept; after Friday's close, every bar is kept."""
    from monitor.backfill import closed
    from monitor.core.model import DAILY_SCHEMA

    bars = pl.DataFrame(
        [("X", dt.date(2024, 7, d), 10.0, 10.0, 10.0, 10.0, 1.0) for d in (11, 12, 13)],
        schema=DAILY_SCHEMA,
        orient="row",
    )
    kept, refused = closed(bars, dt.datetime(2024, 7, 12, 15, tzinfo=dt.UTC))
    assert kept.get_column("session").to_list() == [dt.date(2024, 7, 11), dt.date(2024, 7, 13)]
    assert [(r.reason, r.raw) for r in refused] == [("session_not_closed", "2024-07-12")]
    kept, refused = closed(bars, dt.datetime(2024, 7, 12, 20, 1, tzinfo=dt.UTC))
    assert kept.height == 3
    assert refused == []


def test_a_built_session_outranks_a_close_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Beside SPY's minutes, a file of closes only for 03-08 (a wide file's kind) does not
    replace the session built of the minutes, as backfill keeps it too: the day's rule takes
    03-11's return from the built close. (Replay took the close only, and no volume.)"""
    closes = tmp_path / "closes.csv"
    closes.write_text("date,close\n2024-03-08,1.5\n")
    alerts, _ = replay(tmp_path, capsys, RULES, "--data", f"SPY={SPY}", "--data", f"SPY={closes}")
    minutes = regular_minutes()
    close_8, close_11 = minutes.group_by("day", maintain_order=True).agg(pl.col("close").last())[
        "close"
    ]
    [day] = [a for a in alerts if a["rule"] == "up.day"]
    assert day["metrics"]["return"] == pytest.approx(close_11 / close_8 - 1)  # type: ignore[index]


def test_backfill_keeps_a_stored_bar_over_a_built_one(tmp_path: Path) -> None:
    """A store holding a provider's bar of 2024-03-11 (its official close), then a backfill of
    SPY's minutes: the stored bar is kept and said to be; 03-08, not stored, is built."""
    write_config(tmp_path, "mm-backfill-kept")
    conf = str(tmp_path / "monitor.toml")
    daily = tmp_path / "spy_daily.csv"
    daily.write_text("date,open,high,low,close,volume\n2024-03-11,1,2,0.5,1.5,10\n")
    assert cli_here("backfill", "--config", conf, "--data", f"SPY={daily}").returncode == 0
    res = cli_here("backfill", "--config", conf, "--data", f"SPY={SPY}")
    assert res.returncode == 0, res.stderr
    assert (
        "kept 1 stored bar with open, high, low and volume, a daily file's or the daemon's (a"
        " bar backfill built of minutes is replaced by one built again), over sessions built"
    ) in res.stderr
    stored = Store(tmp_path / "store").load_bars().sort("session")
    assert stored.get_column("session").to_list() == [dt.date(2024, 3, 8), dt.date(2024, 3, 11)]
    assert stored.get_column("close").to_list()[1] == 1.5
    assert stored.get_column("volume").to_list()[0] > 1000


def cut_at(minutes: Path, day: dt.date, end: dt.time) -> Path:
    """`minutes` with `day`'s rows before `end` only: a download cut short."""
    frame = pl.read_csv(minutes, try_parse_dates=True)
    on_day = pl.col("datetime").dt.date() == day
    kept = frame.filter(~on_day | (pl.col("datetime").dt.time() < end))
    kept.write_csv(minutes, datetime_format="%Y-%m-%d %H:%M:%S")
    return minutes


def test_a_session_whose_minutes_stop_at_noon_is_not_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """X's minutes of 2024-03-12 end at 12:00 (a download cut short), while its other
    sessions run to the close: that session is not built of them (its close would be noon's,
    and the day's rule fire on it), but refused (`session_cut_short`, saying where the data
    ends and why that is short for X) and named missing; its minutes still run the minute
    rules. The other sessions are built as before."""
    day = dt.date(2024, 3, 12)
    minutes = cut_at(synthetic_minutes(tmp_path / "x.csv", SESSIONS), day, dt.time(12))
    rules = DAILY_RULES + RULES.replace('["SPY"]', '["X"]').split('[[rules]]\nid = "up.day"')[0]
    rules = rules.replace("min_return = 0.001", "min_return = 0.0001")
    alerts, err = replay(tmp_path, capsys, rules, "--data", f"X={minutes}")
    daily = {a["session"] for a in alerts if a["rule"] == "up.1d"}
    assert daily and "2024-03-12" not in daily
    assert any(a["session"] == "2024-03-12" for a in alerts if a["rule"] == "surge.5m")
    assert "session_cut_short=1" in err
    why = "X 2024-03-12: its data ends at 12:00 New York time, 4.0 hours before the close"
    pace = "though 150 of the session's 390 minutes have trades, 60 of the 60 before it ends"
    assert f"{why}, {pace} (session_cut_short)" in err
    assert "1 session missing" in err
    # The daily rule over the other sessions: as a daily file of them gives.
    daily_file = tmp_path / "x_daily.csv"
    sessions_of(minutes).filter(pl.col("date") != day).write_csv(daily_file)
    from_daily, _ = replay(tmp_path, capsys, DAILY_RULES, "--data", f"X={daily_file}")
    assert [a for a in alerts if a["rule"] == "up.1d"] == from_daily


def minute_rows(spans: dict[tuple[str, dt.date], list[tuple[str, str]]]) -> pl.DataFrame:
    """Minute bars (MINUTE_SCHEMA) of each (symbol, day) over its spans of New York times,
    first to last minute, every minute."""
    from monitor.core.model import MINUTE_SCHEMA

    rows = []
    for (symbol, day), runs in spans.items():
        for first, last in runs:
            start = dt.datetime.combine(day, dt.time.fromisoformat(first))
            while start <= dt.datetime.combine(day, dt.time.fromisoformat(last)):
                rows.append((symbol, start, 1.0, 1.0, 1.0, 1.0, 1.0))
                start += dt.timedelta(minutes=1)
    frame = pl.DataFrame(rows, schema=list(MINUTE_SCHEMA), orient="row")
    local = pl.col("start").dt.replace_time_zone(NEW_YORK).dt.convert_time_zone("UTC")
    return frame.with_columns(local).cast(MINUTE_SCHEMA)  # type: ignore[arg-type]


def test_cut_short_judges_a_silence_by_the_day_s_own_pace(sessions: Sessions) -> None:
    """A symbol's data of a session is cut short when it ends more than 30 minutes before
    that session's close (13:00 on an early close) and a silence that long is unlikely at
    the pace of its trading that day: a stock trading every minute cut at noon (beside
    another whose day is whole: a file sorted by symbol, cut short) is; one with five trades
    a day, the last at 13:20, is not, nor one that opens at 10:15 (a late open), nor a whole
    early-close day, nor a quiet afternoon closed by a closing print (16:00:00.2); ticks
    count as minutes do; a session not closed by now is not judged."""
    from monitor.core.model import MINUTE_SCHEMA, empty
    from monitor.intraday_checks import cut_short

    days = [dt.date(2024, 7, d) for d in (1, 2, 3, 5, 8)]  # (07-03 closes at 13:00)

    def whole(day: dt.date) -> list[tuple[str, str]]:
        return [("09:30", "12:59" if day == dt.date(2024, 7, 3) else "15:59")]

    thin = [(t, t) for t in ("09:41", "10:30", "11:15", "12:00", "13:20")]
    spans = {("A", d): whole(d) for d in days} | {("THIN", d): thin for d in days}
    spans |= {("B", d): whole(d) for d in days[:-1]} | {("B", days[-1]): [("09:30", "11:59")]}
    spans |= {("LATE", days[0]): [("10:15", "15:59")], ("ONE", days[2]): [("09:30", "12:20")]}
    now = dt.datetime(2024, 7, 9, tzinfo=dt.UTC)
    found = cut_short(minute_rows(spans), empty(TICK_SCHEMA), sessions, now)
    assert found == {
        days[2]: {
            "ONE": "ONE 2024-07-03: its data ends at 12:21 New York time, 39 minutes before the"
            " close, though 171 of the session's 210 minutes have trades, 60 of the 60 before"
            " it ends"
        },
        days[4]: {
            "B": "B 2024-07-08: its data ends at 12:00 New York time, 4.0 hours before the close,"
            " though 150 of the session's 390 minutes have trades, 60 of the 60 before it ends"
        },
    }
    # B's cut day as ticks to 15:59 beside its minutes: whole; judged at 12:00 that day: not yet.
    ticks = minute_rows({("B", days[4]): [("12:00", "15:59")]}).select(
        "symbol", pl.col("start").alias("ts"), pl.col("close").alias("price"),
        pl.col("volume").alias("size"), pl.lit("").alias("id"),
    )  # fmt: skip
    assert days[4] not in cut_short(minute_rows(spans), ticks, sessions, now)
    # A morning's trading every minute, then the closing cross only: its close is the cross.
    morning = minute_rows({("X", days[1]): [("09:30", "11:59")]})
    cross = pl.DataFrame(
        [("X", dt.datetime(2024, 7, 2, 20, 0, 0, 200_000, tzinfo=dt.UTC), 1.0, 900.0, "x")],
        schema=TICK_SCHEMA,
        orient="row",
    )
    assert cut_short(morning, cross, sessions, now) == {}
    assert days[1] in cut_short(morning, cross.clear(), sessions, now)
    # A news name: every minute to 11:29, then ten trades to 14:43 (a quiet afternoon): its
    # pace before it ends is that of the afternoon, not the morning's. Data to 15:30: exactly
    # 30 minutes, not more.
    scattered = [(f"{h}:{m:02d}", f"{h}:{m:02d}") for h, m in ((12, 5), (12, 31), (12, 58),
                 (13, 10), (13, 26), (13, 51), (14, 2), (14, 19), (14, 30), (14, 42))]  # fmt: skip
    news = minute_rows({("N", days[1]): [("09:30", "11:29"), *scattered]})
    assert cut_short(news, empty(TICK_SCHEMA), sessions, now) == {}
    to_half_past = minute_rows({("H", days[1]): [("09:30", "15:29")]})
    assert cut_short(to_half_past, empty(TICK_SCHEMA), sessions, now) == {}
    noon = dt.datetime(2024, 7, 8, 16, tzinfo=dt.UTC)
    assert days[4] not in cut_short(minute_rows(spans), empty(TICK_SCHEMA), sessions, noon)
    assert cut_short(empty(MINUTE_SCHEMA), empty(TICK_SCHEMA), sessions, now) == {}


@pytest.mark.parametrize("trades", [1, 5, 10, 15, 25])
def test_a_thin_small_cap_keeps_its_sessions(sessions: Sessions, trades: int) -> None:
    """A small cap with `trades` trades at random minutes of each of 20 sessions (some days
    none after 15:00, or before 10:30): none of its sessions is cut short. (Judged against
    its other sessions, 7 of 10 were refused at 10 trades a day.)"""
    from monitor.intraday_checks import cut_short

    rng = np.random.default_rng(trades)
    days = sessions.between(dt.date(2024, 7, 1), dt.date(2024, 7, 30)).get_column("session")
    spans = {}
    for day in days.to_list()[:20]:
        length = 210 if day == dt.date(2024, 7, 3) else 390
        picked = sorted(rng.choice(length, size=trades, replace=False).tolist())
        at = [dt.datetime.combine(day, dt.time(9, 30)) + dt.timedelta(minutes=m) for m in picked]
        spans[("THIN", day)] = [(f"{t:%H:%M}", f"{t:%H:%M}") for t in at]
    now = dt.datetime(2024, 8, 1, tzinfo=dt.UTC)
    assert cut_short(minute_rows(spans), empty_ticks(), sessions, now) == {}


def empty_ticks() -> pl.DataFrame:
    from monitor.core.model import empty

    return empty(TICK_SCHEMA)


def test_backfill_does_not_store_a_session_cut_short(tmp_path: Path) -> None:
    """`backfill` of a minute file whose 2024-03-12 ends at 12:00 stores the other sessions
    built of it, not that one, and says so on stderr."""
    write_config(tmp_path, "mm-backfill-cut-short")
    day = dt.date(2024, 3, 12)
    minutes = cut_at(synthetic_minutes(tmp_path / "x.csv", SESSIONS), day, dt.time(12))
    res = cli_here("backfill", "--config", str(tmp_path / "monitor.toml"), "--data", f"X={minutes}")
    assert res.returncode == 0, res.stderr
    assert "session_cut_short=1" in res.stderr and "4.0 hours before the close" in res.stderr
    stored = Store(tmp_path / "store").load_bars().get_column("session").to_list()
    assert sorted(stored) == [s for s in SESSIONS if s != day]


def test_jsonl_of_minutes_and_daily_history_comes_a_chunk_at_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With minute files, jsonl is written a chunk of the daily rules' alerts at a time, the
    minute rules' alerts merged in: in chunks of an instant each the lines are those of one chunk,
    in the order of one sort by ts, rule, symbol and id, and several chunks were written.
    (The two passes' alerts used to be merged in memory: a universe's daily history beside a
    minute file held its 300 MB of payloads at once.)"""
    from monitor import replay_command
    from monitor.core.payload import LineChunks

    minutes = synthetic_minutes(tmp_path / "x.csv", SESSIONS)
    rules = DAILY_RULES + RULES.replace('["SPY"]', '["X"]').split('[[rules]]\nid = "up.day"')[0]
    rules = rules.replace("min_return = 0.001", "min_return = 0.0001")
    whole, _ = replay(tmp_path, capsys, rules, "--data", f"X={minutes}")
    written: list[int] = []
    write = replay_command._write_lines
    monkeypatch.setattr(
        replay_command,
        "_write_lines",
        lambda out, lines: (written.append(len(lines)), write(out, lines)),
    )
    monkeypatch.setattr(LineChunks, "ROWS", 1)
    chunked, _ = replay(tmp_path, capsys, rules, "--data", f"X={minutes}")
    assert chunked == whole
    kinds = {a["rule"] for a in whole}
    assert kinds == {"up.1d", "surge.5m"}
    order = [(a["ts"], a["rule"], a["symbol"], a["id"]) for a in whole]
    assert order == sorted(order)
    assert len(written) > 3 and sum(written) == len(whole)


def test_merged_sessions_against_joins_over_every_bar() -> None:
    """`merged_sessions` (built bars put in their places among the daily bars) gives what
    joins over every bar give: for random daily bars (full or close only) and built bars of
    symbols first, last, in the middle and absent from the daily ones, the same rows in the
    same order, each with where it came from."""
    from monitor.core.model import DAILY_SCHEMA
    from monitor.replay_days import merged_sessions

    rng = np.random.default_rng(11)
    days = [dt.date(2024, 3, 4) + dt.timedelta(days=i) for i in range(12)]

    def bars(symbols: list[str], share: float) -> pl.DataFrame:
        rows = [
            (s, d, *([float(rng.integers(1, 99))] * 4), 100.0)
            for s in symbols
            for d in days
            if rng.random() < share
        ]
        return pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row")

    keys = ["symbol", "session"]
    for _ in range(20):
        daily = bars([f"S{i:02d}" for i in range(0, 30, 2)], 0.8).sort(keys)
        built = bars(["A", "S04", "S05", "S17", "S28", "ZZ"], 0.6).sort(keys)
        close_only = pl.Series(rng.random(daily.height) < 0.5)
        got, kind = merged_sessions(daily, close_only, built)
        # The oracle: joins over every bar, then one sort.
        closes = daily.filter(close_only)
        full = daily.filter(~close_only)
        from_built = built.join(full, on=keys, how="anti")
        closes = closes.join(from_built, on=keys, how="anti")
        parts = [(full, "full"), (from_built, "built"), (closes, "close")]
        want = pl.concat([p.with_columns(pl.lit(k).alias("kind")) for p, k in parts]).sort(keys)
        assert got.equals(want.drop("kind"))
        assert kind.to_list() == want.get_column("kind").to_list()


def test_backfill_of_files_whose_every_row_is_refused_fails(tmp_path: Path) -> None:
    """`backfill` of a minute file whose one day is a Saturday stores nothing, says why and
    exits 65 (a script sees it failed); it used to say "backfilled 0 bars" and exit 0."""
    write_config(tmp_path, "mm-backfill-nothing")
    saturday = synthetic_minutes(tmp_path / "x.csv", [dt.date(2024, 3, 9)])
    res = cli_here(
        "backfill", "--config", str(tmp_path / "monitor.toml"), "--data", f"X={saturday}"
    )
    assert res.returncode == 65, res.stderr
    assert "not_a_session=390" in res.stderr and "X 2024-03-09 (not_a_session)" in res.stderr
    assert "no bars to backfill: every row of the files was rejected or refused" in res.stderr


def test_backfill_of_files_with_no_rows_up_to_its_to_says_so(tmp_path: Path) -> None:
    """`backfill --to` a date before the files' first row stores nothing and exits 65 saying
    the files have none up to that date: it said "every row of the files was rejected or
    refused (above)", with nothing above."""
    from tests.conftest import RUT

    write_config(tmp_path, "mm-backfill-none-to")
    conf = str(tmp_path / "monitor.toml")
    res = cli_here("backfill", "--config", conf, "--data", f"^RUT={RUT}", "--to", "1980-01-01")
    assert res.returncode == 65, res.stderr
    assert res.stderr == (
        "market-monitor: no bars to backfill: the files have none up to --to 1980-01-01\n"
    )


def test_minutes_whose_times_are_utc_read_as_new_york_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPY's minutes written as naive UTC times (as pandas writes them) are read as New York
    times, hours late: stderr names SPY, most of whose volume then lies outside regular
    hours, and says what to do; the same minutes with their offset draw no such line."""
    frame = pl.read_csv(SPY).with_columns(
        pl.col("datetime").str.to_datetime("%Y-%m-%d %H:%M:%S%:z").dt.convert_time_zone("UTC")
    )
    naive = tmp_path / "spy_utc.csv"
    frame.with_columns(pl.col("datetime").dt.replace_time_zone(None)).write_csv(naive)
    _, err = replay(tmp_path, capsys, RULES, "--data", f"SPY={naive}")
    assert "warning: SPY (as if at 1" in err and "trade as if regular hours (09:30-16:00" in err
    assert "UTC times need Z (pandas writes them without)" in err
    _, err = replay(tmp_path, capsys, RULES, "--data", f"SPY={SPY}")
    assert "off by hours" not in err


def test_minute_bars_stamped_at_their_end_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """X's regular-hours minutes of Thanksgiving week (the 29th closes at 13:00) stamped at
    their end (09:31 for the open's bar, 16:00 or 13:00 for the last): stderr names X and
    says what to do (each bar was read a minute late and the last rejected as outside_session,
    with no word why). Stamped at their start, as they should be: no such line; nor for SPY's
    minutes with extended hours a minute late (a bar at the open and at the close: nothing
    tells them apart)."""
    from monitor.calendar import nyse_sessions

    sessions = nyse_sessions(dt.date(2024, 11, 1))
    days = [dt.date(2024, 11, 26), dt.date(2024, 11, 27), dt.date(2024, 11, 29)]
    for late, named in ((0, False), (1, True)):
        rows = ["datetime,open,high,low,close,volume"]
        for day in days:
            at, close = sessions.open_of(day), sessions.close_of(day)
            while at < close:
                stamp = at + dt.timedelta(minutes=late)
                rows.append(f"{stamp:%Y-%m-%dT%H:%M:%SZ},10.0,10.1,9.9,10.0,100")
                at += dt.timedelta(minutes=1)
        path = tmp_path / f"x{late}.csv"
        path.write_text("\n".join(rows) + "\n")
        _, err = replay(tmp_path, capsys, RULES, "--data", f"X={path}")
        assert (
            "warning: X (3 of 3 sessions): the minute bars of these start at the close" in err
        ) is named
        assert ("outside_session=3" in err) is named
    extended = pl.read_csv(SPY).with_columns(
        pl.col("datetime").str.to_datetime("%Y-%m-%d %H:%M:%S%:z") + dt.timedelta(minutes=1)
    )
    extended.write_csv(tmp_path / "spy_late.csv")
    _, err = replay(tmp_path, capsys, RULES, "--data", f"SPY={tmp_path / 'spy_late.csv'}")
    assert "stamped at their end" not in err


def test_times_off_by_hours_are_named_the_closing_cross_is_not() -> None:
    """Ticks of a January session with most of the volume at the open, written in UTC and
    read as New York time (09:30 at 14:30, the open inside regular hours): named. The same
    day read right, with a rebalance day's closing cross (16:00:00.2, half the day's volume):
    not; nor New York times read as UTC (hours early) once put right."""
    from monitor.core.model import MINUTE_SCHEMA, empty
    from monitor.intraday_checks import off_the_clock

    open_ = dt.datetime(2024, 1, 10, 9, 30)
    sizes = [5000.0 if m < 30 else 2000.0 if m >= 360 else 1000.0 for m in range(390)]
    rows = [("X", open_ + dt.timedelta(minutes=m), 10.0, size, "") for m, size in enumerate(sizes)]
    rows.append(("X", dt.datetime(2024, 1, 10, 16, 0, 0, 200_000), 10.0, 540_000.0, "cross"))
    local = pl.DataFrame(rows, schema=list(TICK_SCHEMA), orient="row")

    def read_as(zone: str, shift: dt.timedelta = dt.timedelta()) -> pl.DataFrame:
        moved = pl.col("ts").dt.replace_time_zone(zone).dt.convert_time_zone("UTC") + shift
        return local.with_columns(moved).cast(TICK_SCHEMA)  # type: ignore[arg-type]

    none = empty(MINUTE_SCHEMA)
    assert off_the_clock(none, read_as(NEW_YORK)) == []
    # UTC read as New York, without the cross: the open's half hour, the busiest, is inside.
    no_cross = pl.col("id") != "cross"
    late = read_as(NEW_YORK, dt.timedelta(hours=5)).filter(no_cross)
    [line] = off_the_clock(none, late)
    assert line.startswith("X (as if at 14:30-21:00): the minute bars or ticks of these trade")
    [line] = off_the_clock(none, read_as("UTC").filter(no_cross))  # (New York's, with Z)
    assert line.startswith("X (as if at 04:30-11:00)")
    # An earnings day: 8M shares in regular hours, 5M in the hour after: no line.
    earnings = local.filter(no_cross).with_columns(pl.lit(8e6 / 390).alias("size"))
    evening = [("X", dt.datetime(2024, 1, 10, 16, 1) + dt.timedelta(minutes=m), 10.0,
                5e6 / 60, "") for m in range(60)]  # fmt: skip
    day = pl.concat([earnings, pl.DataFrame(evening, schema=list(TICK_SCHEMA), orient="row")])
    moved = pl.col("ts").dt.replace_time_zone(NEW_YORK).dt.convert_time_zone("UTC")
    assert off_the_clock(none, day.with_columns(moved).cast(TICK_SCHEMA)) == []  # type: ignore[arg-type]


def test_merged_sessions_sorts_daily_bars_given_out_of_order() -> None:
    """Daily bars sorted by symbol but not by session within it (no caller gives such, but a
    caller might): the merge comes out sorted all the same."""
    from monitor.core.model import DAILY_SCHEMA
    from monitor.replay_days import merged_sessions

    days = [dt.date(2024, 3, d) for d in (6, 4, 5)]
    daily = pl.DataFrame(
        [("A", d, 1.0, 1.0, 1.0, 1.0, 1.0) for d in days]
        + [("C", d, 1.0, 1.0, 1.0, 1.0, 1.0) for d in days],
        schema=DAILY_SCHEMA,
        orient="row",
    )
    built = daily.filter(pl.col("symbol") == "A").with_columns(pl.lit("B").alias("symbol"))
    merged, _ = merged_sessions(daily, pl.repeat(False, daily.height, eager=True), built)
    assert merged.select("symbol", "session").rows() == sorted(
        merged.select("symbol", "session").rows()
    )
    assert merged.height == 9


def test_new_york_times_written_as_utc_on_a_summer_day_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPY's minutes of 2024-03-11 (daylight time: New York is UTC-4) with their New York
    times written as UTC (`...T09:30:00Z`): read 4 hours early, they trade as if regular hours
    were 05:30-12:00, and stderr says so. (Regular hours moved 4 hours share 2.5 of their
    6.5 hours with regular hours: compared whole, the two halves of the day weighed the same
    and nothing was said.)"""
    frame = pl.read_csv(SPY).with_columns(
        pl.col("datetime").str.to_datetime("%Y-%m-%d %H:%M:%S%:z").dt.convert_time_zone(NEW_YORK)
    )
    day = frame.filter(pl.col("datetime").dt.date() == dt.date(2024, 3, 11))
    as_utc = day.with_columns(pl.col("datetime").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    path = tmp_path / "spy_z.csv"
    as_utc.write_csv(path)
    _, err = replay(tmp_path, capsys, RULES, "--data", f"SPY={path}")
    assert "warning: SPY (as if at 05:30-12:00): the minute bars or ticks of these trade" in err


def test_a_session_that_starts_late_is_said_not_refused(sessions: Sessions) -> None:
    """A stock trading every minute whose data of 2024-07-10 starts at 12:00 (a download
    that starts late, or a late open: small caps open late after an imbalance or news) is
    named in a warning, its session built from its first trade; a thin one whose first
    trade comes at 11:00 is not named, nor is a whole day."""
    from monitor.intraday_checks import late_starts

    days = [dt.date(2024, 7, d) for d in (8, 9, 10, 11)]
    spans = {("A", d): [("09:30", "15:59")] for d in days}
    spans[("A", days[2])] = [("12:00", "15:59")]
    spans |= {("THIN", d): [("11:00", "11:00"), ("13:10", "13:10"), ("15:40", "15:40")]
              for d in days}  # fmt: skip
    now = dt.datetime(2024, 7, 12, tzinfo=dt.UTC)
    [line] = late_starts(minute_rows(spans), empty_ticks(), sessions, now)
    assert line.startswith(
        "A 2024-07-10 (from 12:00 New York time): the data of these sessions starts over 30"
        " minutes after the open, though they trade often after: a late open"
    )
    assert "each session is built from its first trade" in line
    whole = {("A", d): [("09:30", "15:59")] for d in days}
    assert late_starts(minute_rows(whole), empty_ticks(), sessions, now) == []
