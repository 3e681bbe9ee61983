"""One engine, two paths: history in one batch or in many small batches gives the same alerts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from monitor.cli import load_rules
from monitor.core.engine import Engine
from monitor.core.model import decode_alert, encode_alert
from monitor.core.payload import decode_lines
from monitor.core.sessions import Sessions
from monitor.datafiles import DataSpec, read_many
from monitor.replay import build_engine, replay, replay_steps
from tests.conftest import DATA, DEMO, RULES


def history() -> pl.DataFrame:
    """^RUT since 2018 plus IWM, QQQ and three small caps: every rule family has work to do."""
    specs = [
        DataSpec(path=str(DEMO / "rut_index_daily_1987_2026.csv"), symbol="^RUT"),
        DataSpec(path=str(DATA / "iwm_daily_adj_2023_2024.csv"), symbol="IWM"),
        DataSpec(path=str(DATA / "qqq_daily_adj_2023_2024.csv"), symbol="QQQ"),
        DataSpec(path=str(DEMO / "smallcaps_ohlcv_2024-06-28_2024-08-02.csv")),
    ]
    return read_many(specs, start=dt.date(2018, 1, 1)).bars


def run(sessions: Sessions, batch_sessions: int | None) -> list[bytes]:
    engine = build_engine(load_rules(RULES), sessions)  # type: ignore[arg-type]
    return [encode_alert(a) for a in replay(engine, history(), batch_sessions=batch_sessions)]


def test_one_batch_equals_many_small_batches(sessions: Sessions) -> None:
    """Alerts (ids, numbers, history) are byte-identical whether history comes in one batch
    or in batches of 37 sessions."""
    whole = run(sessions, None)
    pieces = run(sessions, 37)
    assert len(whole) > 20
    assert pieces == whole


def test_every_rule_family_fired(sessions: Sessions) -> None:
    """The history above exercises streak, surge, rotation, drawdown and movers."""
    kinds = {decode_alert(a).kind for a in run(sessions, None)}
    assert {"streak", "surge", "rotation", "drawdown", "movers"} <= kinds


def test_a_halted_symbol_cannot_rally_in_the_feed(sessions: Sessions) -> None:
    """Bars of a symbol are rejected as `halted` while a feed reports it halted, and accepted
    again once it resumes."""
    from monitor.core.model import FeedBatch
    from monitor.core.rules.spec import RulesFile

    bars = history().filter(pl.col("symbol") == "CRBU").head(3)
    engine = Engine(RulesFile(), sessions)
    engine.set_halted("CRBU", True)
    first = FeedBatch.empty("t")
    first.daily_bars = bars.head(2)
    assert [r.reason for r in engine.ingest(first)] == ["halted", "halted"]
    engine.set_halted("CRBU", False)
    second = FeedBatch.empty("t")
    second.daily_bars = bars.tail(1)
    assert engine.ingest(second) == []


def test_deferred_payloads_in_small_chunks_equal_the_eager_lines(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Payloads built later, a few firings at a time in time order (replay's jsonl path), are
    the eager lines: same alerts, same order, ids included, in one batch or in many. A deferred
    step's lines are read once only."""
    from monitor.core import payload
    from monitor.replay import replay_steps

    def lines(deferred: bool, batch_sessions: int | None) -> list[pl.DataFrame]:
        engine = build_engine(load_rules(RULES), sessions)  # type: ignore[arg-type]
        steps = replay_steps(engine, history(), batch_sessions=batch_sessions, deferred=deferred)
        return [chunk for step in steps for chunk in step.line_chunks()]

    monkeypatch.setattr(payload.LineChunks, "ROWS", 7)
    for batch_sessions in (None, 250):
        eager, chunks = lines(False, batch_sessions), lines(True, batch_sessions)
        assert len(chunks) > len(eager)  # several chunks per step
        assert pl.concat(chunks).equals(pl.concat(eager))

    engine = build_engine(load_rules(RULES), sessions)  # type: ignore[arg-type]
    step = next(replay_steps(engine, history(), deferred=True))
    assert step.lines.height > 20  # built all at once, then kept
    assert step.lines.height == pl.concat(lines(False, None)).height
    with pytest.raises(RuntimeError, match="already read"):
        list(step.line_chunks())


def test_a_universe_evaluated_in_pieces_equals_it_whole(
    sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-symbol rules over a universe cut into pieces of a few hundred bars give the alerts
    (ids, order, history) and the progress of one pass over it whole; breadth, movers and
    rotation, which compare symbols, still see every symbol."""
    from monitor.core import engine as engine_module
    from monitor.core.evaluation import pieces as cut
    from monitor.short_interest_io import read_short_interest
    from tests.conftest import SHORT_INTEREST, SQUEEZE

    rules_path = tmp_path / "rules.toml"
    everyone = RULES.read_text().replace('symbols = ["^RUT", "IWM"]', "universe = true")
    rules_path.write_text(everyone)
    rules = load_rules(rules_path)
    bars = pl.concat([history(), read_many([DataSpec(str(SQUEEZE))]).bars]).sort(
        "symbol", "session"
    )
    si = read_short_interest(SHORT_INTEREST).figures

    def run() -> tuple[pl.DataFrame, dict[str, list[object]]]:
        engine = build_engine(rules, sessions, short_interest=si, rule_threads=2)  # type: ignore[arg-type]
        engine.track_progress = True
        lines = pl.concat([step.lines for step in replay_steps(engine, bars, batch_sessions=300)])
        return lines, {k: list(v) for k, v in engine.progress.items()}

    whole = run()
    monkeypatch.setattr(engine_module, "PIECE_ROWS", 400)
    assert len(cut(bars, 400)) > 5
    pieces = run()
    assert whole[0].height > 100
    assert {"streak", "surge", "squeeze", "drawdown", "fade"} <= set(
        a.kind for a in decode_lines(whole[0])
    )
    assert pieces[0].equals(whole[0])
    assert pieces[1] == whole[1]


def test_bad_daily_bars_are_rejected_by_the_engine(sessions: Sessions) -> None:
    """Bars given to the engine directly (not read from a file) with a NaN, infinite, zero,
    negative or missing price, high below low, open or close outside [low, high], a NaN,
    infinite or negative volume, or a date that is no session are rejected as values and
    counted; the good bars are kept (one without volume too). Before, a NaN volume was taken
    (and made its week's volume NaN), and so was a close above the high."""
    from monitor.core.model import DAILY_SCHEMA
    from monitor.core.rules.spec import RulesFile

    nan, inf = float("nan"), float("inf")
    rows = [  # symbol, session, open, high, low, close, volume
        ("OK", dt.date(2024, 7, 15), 1.0, 2.0, 0.5, 1.5, 10.0),
        ("A", dt.date(2024, 7, 15), 1.0, 2.0, 0.5, nan, 10.0),
        ("B", dt.date(2024, 7, 15), 1.0, inf, 0.5, 1.5, 10.0),
        ("C", dt.date(2024, 7, 15), 0.0, 2.0, 0.5, 1.5, 10.0),
        ("D", dt.date(2024, 7, 15), 1.0, 2.0, -0.5, 1.5, 10.0),
        ("E", dt.date(2024, 7, 15), 1.0, 2.0, 0.5, None, 10.0),
        ("F", dt.date(2024, 7, 15), 1.0, 0.4, 0.5, 1.5, 10.0),
        ("G", dt.date(2024, 7, 15), 1.0, 2.0, 0.5, 1.5, -1.0),
        ("H", dt.date(2024, 7, 15), -inf, 2.0, 0.5, 1.5, 10.0),
        ("J", dt.date(2024, 7, 15), 1.0, 2.0, 0.5, 1.5, nan),
        ("K", dt.date(2024, 7, 15), 1.0, 2.0, 0.5, 1.5, inf),
        ("L", dt.date(2024, 7, 15), 1.0, 2.0, 0.5, 3.0, 10.0),  # close above the high
        ("M", dt.date(2024, 7, 15), 0.4, 2.0, 0.5, 1.5, 10.0),  # open below the low
        ("N", dt.date(2024, 7, 15), 1.0, 2.0, 0.5, 1.5, None),  # no volume: a close-only bar
        ("I", dt.date(2024, 7, 14), 1.0, 2.0, 0.5, 1.5, 10.0),  # a Sunday
    ]
    engine = Engine(RulesFile(), sessions)
    rejected = engine.ingest_daily(pl.DataFrame(rows, schema=DAILY_SCHEMA, orient="row"))
    assert [(r.reason, r.symbol) for r in rejected] == [
        *[("bad_bar", s) for s in "ABCDEFGHJKLM"],
        ("not_a_session", "I"),
    ]
    step = engine.advance(dt.datetime(2024, 7, 15, 21, tzinfo=dt.UTC))
    assert step.daily_bars["symbol"].to_list() == ["N", "OK"]


def test_an_alert_id_emitted_is_never_emitted_again(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the watermarks forgotten, the same history again fires the same alerts, and none is
    emitted twice: while the emitted ids are still polars columns (payloads built at once, or
    later in chunks of a few firings), once they are a set, and in an engine restored from the
    state."""
    from monitor.core import payload
    from monitor.replay import replay_steps

    rules = load_rules(RULES)
    engine = build_engine(rules, sessions)  # type: ignore[arg-type]
    first = list(replay(engine, history()))
    assert len(first) > 20
    engine.watermarks.clear()
    assert list(replay(engine, history())) == []  # (ids checked as columns)
    monkeypatch.setattr(payload.LineChunks, "ROWS", 7)
    engine.watermarks.clear()
    steps = replay_steps(engine, history(), batch_sessions=2000, deferred=True)
    assert [chunk.height for step in steps for chunk in step.line_chunks()] == []
    state = engine.state()
    assert sorted(state.fired) == sorted(a.id for a in first)
    engine.watermarks.clear()
    assert list(replay(engine, history())) == []  # (ids checked as a set)
    restored = build_engine(rules, sessions)  # type: ignore[arg-type]
    restored.restore(state)
    restored.watermarks.clear()
    assert list(replay(restored, history())) == []
    fresh = build_engine(rules, sessions)  # type: ignore[arg-type]
    assert [a.id for a in replay(fresh, history())] == [a.id for a in first]


def symbol_by_symbol(
    sessions: Sessions, rules: Path, bars: pl.DataFrame, last: dt.date, order: list[str]
) -> tuple[list[bytes], list[bytes], Engine]:
    """The alerts of session `last` from one batch of `bars` (sorted), and from the history
    before it in one batch and then `last`'s bars one symbol per step, in `order` (a second
    after the close, then a second apart); and that engine."""
    from monitor.core.model import FeedBatch

    expected = sorted(
        encode_alert(a)
        for a in replay(build_engine(load_rules(rules), sessions), bars)  # type: ignore[arg-type]
        if a.session == str(last)
    )
    engine = build_engine(load_rules(rules), sessions)  # type: ignore[arg-type]
    got = list(replay(engine, bars.filter(pl.col("session") < last)))
    close = sessions.close_of(last)
    for i, symbol in enumerate(order):
        batch = FeedBatch.empty("t")
        batch.daily_bars = bars.filter((pl.col("symbol") == symbol) & (pl.col("session") == last))
        engine.ingest(batch)
        got += engine.advance(close + dt.timedelta(seconds=1 + i)).alerts
    return expected, sorted(encode_alert(a) for a in got if a.session == str(last)), engine


@pytest.mark.parametrize(
    ("last", "order"),
    [
        (dt.date(2024, 7, 16), ["^RUT", "QQQ", "IWM", "IWM"]),  # IWM's surge comes late
        (dt.date(2020, 12, 4), ["ZZZ", "^RUT"]),  # a Friday: ^RUT's weekly streak comes late
    ],
)
def test_bars_of_one_session_in_several_batches_fire_as_in_one(
    sessions: Sessions, last: dt.date, order: list[str]
) -> None:
    """A feed's daily bars of the session just closed come a symbol at a time, each in its own
    step: the alerts of the late ones (a daily surge; a weekly streak, whose week they change)
    are those a replay in one batch emits, each once (IWM's bar comes twice); a bar of an
    earlier session is a correction and fires nothing. (ZZZ: a symbol no rule names.)"""
    from monitor.core.model import FeedBatch

    bars = history().filter(pl.col("symbol").is_in(["^RUT", "IWM", "QQQ"]))
    bars = bars.filter(pl.col("session") <= last)
    extra = bars.filter(pl.col("session") == last).head(1).with_columns(symbol=pl.lit("ZZZ"))
    bars = pl.concat([bars, extra]).sort("symbol", "session")
    expected, got, engine = symbol_by_symbol(sessions, RULES, bars, last, order)
    assert got == expected
    assert any(decode_alert(a).symbol == order[-1] for a in got)
    batch = FeedBatch.empty("t")
    batch.daily_bars = bars.filter(pl.col("session") < last).tail(1)
    engine.ingest(batch)
    assert engine.advance(sessions.close_of(last) + dt.timedelta(seconds=9)).alerts == []


def test_minute_bars_of_one_minute_in_several_batches_fire_as_in_one(sessions: Sessions) -> None:
    """Provider minute bars of the minute just closed, a symbol at a time: the late symbol's
    minute surge is emitted, once, as when every bar comes in one batch."""
    from monitor.core.model import MINUTE_SCHEMA, FeedBatch
    from monitor.core.rules.spec import RulesFile, SurgeRule

    rule = SurgeRule(
        id="surge.1m", symbols=["AAA", "BBB"], timeframe="1m", window=3, min_return=0.02
    )
    start = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)
    rows = [
        (symbol, start + dt.timedelta(minutes=m), price, price, price, price, 100.0)
        for symbol, jump in (("AAA", 1.0), ("BBB", 1.05))
        for m, price in enumerate([10.0] * 9 + [10.0 * jump])
    ]
    bars = pl.DataFrame(rows, schema=MINUTE_SCHEMA, orient="row")
    end = start + dt.timedelta(minutes=10)

    def step(engine: Engine, part: pl.DataFrame, now: dt.datetime) -> list[bytes]:
        batch = FeedBatch.empty("t")
        batch.minute_bars = part
        engine.ingest(batch)
        return [encode_alert(a) for a in engine.advance(now).alerts]

    whole = step(Engine(RulesFile(rules=[rule]), sessions), bars, end)
    assert [decode_alert(a).symbol for a in whole] == ["BBB"]
    engine = Engine(RulesFile(rules=[rule]), sessions)
    got = step(engine, bars.filter(pl.col("start") < end - dt.timedelta(minutes=1)), end)
    last = bars.filter(pl.col("start") == end - dt.timedelta(minutes=1))
    for i, symbol in enumerate(["AAA", "BBB", "BBB"]):
        part = last.filter(pl.col("symbol") == symbol)
        got += step(engine, part, end + dt.timedelta(seconds=1 + i))
    assert got == whole


WEEKLY = """
[[rules]]
id = "streak.w"
kind = "streak"
symbols = ["^RUT", "IWM", "QQQ"]
timeframe = "1w"
count = 2
min_return = 0.002

[[rules]]
id = "drawdown.w"
kind = "drawdown"
symbols = ["^RUT", "IWM", "QQQ"]
timeframe = "1w"
min_below_high = 0.02
"""


@pytest.mark.parametrize(
    ("last", "order"),
    [
        (dt.date(2024, 3, 28), ["QQQ", "IWM", "^RUT"]),  # Good Friday: the week ends Thursday
        (dt.date(2024, 7, 19), ["CRBU", "QQQ", "^RUT", "IWM"]),
    ],
)
def test_weekly_alerts_wait_for_each_symbols_last_bar_of_the_week(
    sessions: Sessions, tmp_path: Path, last: dt.date, order: list[str]
) -> None:
    """The bars of a week's last session come a symbol at a time: no symbol's week closes
    before its own last bar (it would fire with the close of a day before, under the id of
    the right alert), and the weekly alerts are those of one batch, with the same closes."""
    rules_path = tmp_path / "weekly.toml"
    rules_path.write_text(WEEKLY)
    bars = history().filter(pl.col("session") <= last)
    expected, got, _ = symbol_by_symbol(sessions, rules_path, bars, last, order)
    assert len(expected) >= 2
    assert got == expected


def test_a_symbol_without_a_bar_on_the_last_day_gets_its_week_with_the_next_session(
    sessions: Sessions, tmp_path: Path
) -> None:
    """QQQ has no bar on Friday 2024-07-19 (no trade that day): its week closes once Monday's
    bars come, with Thursday's close, and its weekly alerts are emitted then, as one batch of
    the same bars has them."""
    from monitor.core.model import FeedBatch

    rules_path = tmp_path / "weekly.toml"
    rules_path.write_text(WEEKLY)
    friday, monday = dt.date(2024, 7, 19), dt.date(2024, 7, 22)
    bars = history().filter(
        (pl.col("session") <= monday)
        & ~((pl.col("symbol") == "QQQ") & (pl.col("session") == friday))
    )
    expected = sorted(
        encode_alert(a)
        for a in replay(build_engine(load_rules(rules_path), sessions), bars)  # type: ignore[arg-type]
        if a.session == str(friday) and a.symbol == "QQQ"
    )
    engine = build_engine(load_rules(rules_path), sessions)  # type: ignore[arg-type]
    got = list(replay(engine, bars.filter(pl.col("session") <= friday)))
    assert not [a for a in got if a.session == str(friday) and a.symbol == "QQQ"]
    batch = FeedBatch.empty("t")
    batch.daily_bars = bars.filter(pl.col("session") == monday)
    engine.ingest(batch)
    got += engine.advance(sessions.close_of(monday) + dt.timedelta(seconds=1)).alerts
    assert expected
    assert (
        sorted(encode_alert(a) for a in got if a.session == str(friday) and a.symbol == "QQQ")
        == expected
    )
