"""`market-monitor replay` and `market-monitor demo`: rules and bars in, alerts out.

`replay` reads the rules and the data files named on the command line (daily bars, and minute
bars or ticks: `monitor.intraday_read`), warns of rules that cannot fire on that data and of
holes in it, drives the engine over the history (monitor/replay.py; with minutes or ticks,
monitor/replay_days.py) and prints every alert as JSON lines, a table or a per-rule summary,
with an HTML report if asked. `demo` is the same over the data shipped in monitor/demo. `load_rules`
reads and validates a rules file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import importlib
import os
import sys
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from monitor.errors import EX_CANTCREAT, ConfigError, DataError
from monitor.intraday_read import IntradayRead as IntradayRead  # (re-exported)
from monitor.intraday_read import read_intraday as read_intraday  # (re-exported)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import polars as pl

    from monitor.core.engine import Engine
    from monitor.core.model import Rejection
    from monitor.core.rules.spec import Rule


def load_rules(path: str | Path) -> object:
    """Read and validate a rules file; ConfigError names the file and field path."""
    from monitor.core.rules.spec import RuleError, parse_rules

    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rules: {exc.strerror}") from None
    try:
        return parse_rules(text)
    except RuleError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def replay(args: argparse.Namespace) -> int:
    """`market-monitor replay`: read the data files, then `run_replay`."""
    from monitor import datacache
    from monitor.calendar import warm_up
    from monitor.datafiles import parse_data_arg, read_many

    if args.start is not None and args.end is not None and args.start > args.end:
        print(f"market-monitor: --from {args.start} is after --to {args.end}", file=sys.stderr)
        return 2  # (argparse's status for a usage error)
    problem = _unwritable(args.report) if args.report else None
    if problem is not None:  # (said now, not after minutes of replay)
        print(f"market-monitor: cannot write the report {args.report}: {problem}", file=sys.stderr)
        return EX_CANTCREAT
    rules = load_rules(args.rules)  # (a bad rules file said before the data is read)
    specs = [parse_data_arg(a) for a in args.data]
    daily_specs, intraday = read_intraday(specs, end=args.end)
    # Without a cached session table, exchange-calendars (half a second to import) is needed:
    # import it while polars reads, and the engine's modules (the rule families, numpy among
    # them: 0.1 s) too; not sooner, where they would hold the interpreter's lock from the
    # reading of the rules and the look at the files, which only this thread does.
    warm = [warm_up(), _importing("monitor.replay")]
    loaded = read_many(daily_specs, adjusted=args.adjusted, end=args.end, cache=args.cache)
    for note in loaded.notes:
        print(f"market-monitor: {note}", file=sys.stderr)
    counts = Counter(loaded.counts) + Counter(intraday.counts if intraday else {})
    rejections = [*loaded.rejections, *(intraday.rejections if intraday else [])]
    for thread in warm:
        if thread is not None:
            thread.join()
    try:
        return run_replay(
            rules_path=args.rules,
            rules=rules,
            bars=loaded.bars,
            intraday=(intraday.minutes, intraday.ticks) if intraday else None,
            close_only=loaded.close_only,
            counts=dict(counts),
            rejections=rejections,
            unlisted=intraday.unlisted if intraday else 0,
            short_interest=args.short_interest,
            start=args.start,
            end=args.end,
            fmt=args.format,
            batch_sessions=args.batch_sessions,
            report=args.report,
        )
    finally:
        datacache.flush()  # (a cache entry written while the rules ran)


def _unwritable(path: str) -> str | None:
    """Why a file cannot be written at `path` (None: it can, as far as can be told before)."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        return "Is a directory"
    if not folder.is_dir():
        return "No such file or directory"
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        return "Permission denied"
    return None


def _symbols(bars: pl.DataFrame) -> set[str]:
    """The symbols of `bars`: one per run of equal symbols (a symbol's bars are together,
    as replay reads them; any order gives the same set), not a hash of millions of strings."""
    symbol = bars.get_column("symbol")
    return set(symbol.filter(symbol.ne_missing(symbol.shift())).to_list())


def _without_volume(rules: list[Rule], bars: pl.DataFrame) -> list[str]:
    """The squeeze rules (abnormal volume is part of the condition) none of whose symbols in
    `bars` has a volume: a file of closes only, say."""
    from monitor.core.firing import rule_frame
    from monitor.core.rules.spec import SqueezeRule

    idle = []
    for rule in rules:
        if isinstance(rule, SqueezeRule):
            volume = rule_frame(bars, rule).get_column("volume")
            if volume.len() and not (volume > 0).any():
                idle.append(rule.id)
    return idle


def _thin_periods(engine: Engine, rules: list[Rule], start: dt.date | None) -> list[str]:
    """For each breadth and movers rule, the periods (from `start`) it did not evaluate for
    want of bars: fewer than its `min_coverage` of the symbols of the periods before (a hole
    in the data). Without this line a rule that stays silent there would look like a rule
    whose condition never held."""
    import polars as pl

    from monitor.core import metrics
    from monitor.core.firing import rule_frame
    from monitor.core.rules.context import unit
    from monitor.core.rules.spec import BreadthRule, MoversRule

    lines = []
    for rule in rules:
        if not isinstance(rule, BreadthRule | MoversRule) or rule.timeframe == "1m":
            continue
        # (the stored bars, not the rules' frames: only who has a bar in a period counts)
        bars = rule_frame(
            engine.daily if rule.timeframe == "1d" else engine.weekly(engine.now), rule
        )
        coverage = metrics.coverage(bars)
        thin = coverage.filter(pl.col("coverage") < rule.min_coverage)
        if start is not None:
            thin = thin.filter(pl.col("session") >= start)
        if thin.height:
            first: dt.date = thin.get_column("session").min()  # type: ignore[assignment]
            lines.append(
                f"rule {rule.id} did not evaluate {thin.height} {unit(rule.timeframe, thin.height)}"
                f" (the first {first}): bars of fewer than {rule.min_coverage:.0%} of the symbols"
                " of the periods before (min_coverage)"
            )
    return lines


def _importing(module: str) -> threading.Thread:
    """A thread importing `module` (started)."""
    thread = threading.Thread(target=importlib.import_module, args=(module,), daemon=True)
    thread.start()
    return thread


def run_replay(
    *,
    rules_path: str | Path,
    bars: object,
    counts: dict[str, int],
    short_interest: str | None,
    rejections: Sequence[Rejection] = (),
    unlisted: int = 0,
    start: dt.date | None,
    fmt: str,
    end: dt.date | None = None,
    batch_sessions: int | None = None,
    report: str | None = None,
    intraday: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    now: dt.datetime | None = None,
    close_only: pl.Series | None = None,
    rules: object = None,
) -> int:
    """Run the rules over `bars` (daily) and `intraday` (minute bars and ticks, when given)
    and print the alerts from `start` on as `fmt`; say on stderr what cannot fire, the holes
    in the data and the rows rejected or fixed. `now`: the wall clock (None: read it); a
    session under way then is not taken. `close_only`: per row of `bars`, whether it is a
    close only (a wide file's), which a session built of minutes outranks. `unlisted`: rows
    rejected by the readers beyond `rejections` (see `IntradayRead`). `end`: the `--to` the
    data was read up to, if any (named when `start` is past the data). `rules`: the rules
    file read already (`load_rules`; None: read here)."""
    import msgspec
    import polars as pl

    from monitor.calendar import nyse_sessions
    from monitor.core.rules.spec import RulesFile, cannot_fire, rule_warnings
    from monitor.replay import (
        Summary,
        build_engine,
        emit_after_for,
        gaps,
        gaps_line,
        replay_steps,
    )
    from monitor.replay_days import IntradayData, closed_sessions, intraday_step
    from monitor.replay_table import table
    from monitor.short_interest_io import read_short_interest

    rules = load_rules(rules_path) if rules is None else rules
    assert isinstance(rules, RulesFile)
    assert isinstance(bars, pl.DataFrame)
    for line in rule_warnings(rules):
        print(f"market-monitor: warning: {rules_path}: {line}", file=sys.stderr)
    day = IntradayData(*intraday) if intraday is not None else None
    if day is not None and day.is_empty():
        day = None
    if bars.is_empty() and day is None:
        said = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        why = f"rows rejected or fixed: {said}; " if said else ""
        raise DataError("--data", f"no bars to replay ({why}check the files and --to)")
    ends = [] if day is None else [day.first_day(), day.last_day()]
    if not bars.is_empty():
        sessions_read = bars.get_column("session")
        ends += [sessions_read.min(), sessions_read.max()]  # type: ignore[list-item]
    first: dt.date = min(ends)
    last: dt.date = max(ends)
    if start is not None and start > last:
        upto = f" up to --to {end}" if end is not None else ""
        print(
            f"market-monitor: --from {start} is after the data's last session{upto} ({last}):"
            " no alerts to print",
            file=sys.stderr,
        )
    known = _symbols(bars) | (day.symbols() if day is not None else set())
    si, figured = None, None
    if short_interest:
        read = read_short_interest(short_interest)
        si, figured = read.figures, read.figured()
        for line in [*read.said(), read.coverage(known)]:
            print(f"market-monitor: short-interest file: {line}", file=sys.stderr)
    # (a minute rule needs minute bars or ticks)
    given, minutes = short_interest is not None, day is not None
    unfired = cannot_fire(
        rules.enabled, known, minute_bars=minutes, short_interest=given, figured=figured
    )
    for rule_id, why in unfired.items():
        print(f"market-monitor: rule {rule_id} cannot fire: {why}", file=sys.stderr)
    # (a symbol of minutes or ticks has volume in them: the daily files' others are looked at)
    daily_only = bars if day is None else bars.filter(~pl.col("symbol").is_in(day.symbols()))
    for rule_id in _without_volume(rules.enabled, daily_only):
        print(
            f"market-monitor: rule {rule_id} cannot fire: no volume in the data for its symbols",
            file=sys.stderr,
        )
    # (the calendar from the first figure's settlement, when earlier: it counts from there)
    calendar_start = first
    if si is not None and si.get_column("short_interest_date").null_count() < si.height:
        settled: dt.date = si.get_column("short_interest_date").min()  # type: ignore[assignment]
        calendar_start = min(first, settled)
    sessions = nyse_sessions(calendar_start, last)
    now = now or dt.datetime.now(dt.UTC)
    if close_only is not None:  # (kept beside its rows through `closed_sessions`)
        bars = bars.with_columns(close_only.alias("_close_only"))
    bars, under_way = closed_sessions(bars, sessions, now)
    if close_only is not None:
        close_only = bars.get_column("_close_only")
        bars = bars.drop("_close_only")
    if under_way:
        counts = {**counts, "session_not_closed": len(under_way)}
        rejections = [*rejections, *under_way]
    # The holes in the data (a line on stderr) are found while the rules run: on a universe's
    # history a tenth of a second of one core, when the rules leave the other one idle.
    holes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gaps")
    found = holes.submit(gaps, bars if day is None else bars.clear(), sessions)
    holes.shutdown(wait=False)
    # With minutes or ticks, this engine runs the rules of sessions and weeks, and another
    # the `1m` rules (see intraday_step).
    daily_rules = rules
    if day is not None:
        daily_rules = msgspec.structs.replace(
            rules, rules=[r for r in rules.rules if r.timeframe != "1m"]
        )
    engine = build_engine(
        daily_rules,
        sessions,
        short_interest=si,
        emit_after=emit_after_for(sessions, start),
        rule_threads=2,
    )
    out = sys.stdout
    alerts = []
    tally = Summary(engine, rules.enabled) if fmt == "summary" or report else None
    if tally is not None:  # (a summary needs every alert's outcome: one batch, see Summary)
        batch_sessions = None
    shown = None
    if report:
        from monitor.web.report import ReportAlerts

        shown = ReportAlerts(engine.ctx)
    # jsonl: payloads are built a chunk at a time, each written while the next is built.
    # A summary builds none, nor does a report: they are made of the firings.
    deferred = fmt != "table"
    refused: list[Rejection] = []  # what the engine rejected (days that are no session, ...)
    minute_engine = None
    if day is not None:
        minute_rules = msgspec.structs.replace(
            rules, rules=[r for r in rules.rules if r.timeframe == "1m"]
        )
        minute_engine = build_engine(
            minute_rules, sessions, short_interest=si, emit_after=emit_after_for(sessions, start)
        )
        minute_engine.baseline = engine.baseline  # (the summary's, when one is made)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer:
        written: Future[None] | None = None
        if minute_engine is None or day is None:
            steps = replay_steps(
                engine, bars, batch_sessions=batch_sessions, deferred=deferred, rejected=refused
            )
        else:
            if close_only is None:
                close_only = pl.repeat(False, bars.height, eager=True)
            step = intraday_step(
                engine, minute_engine, bars, close_only, day, rejected=refused, now=now
            )
            steps = iter([step])
        for step in steps:
            for chunk in step.line_chunks() if fmt == "jsonl" else ():
                if written is not None:
                    written.result()
                written = writer.submit(_write_lines, out, chunk.get_column("json"))
            if fmt == "table":
                alerts += step.alerts
            if tally is not None:
                tally.add(step)
            if shown is not None:
                shown.add(step)
        if written is not None:
            written.result()
    # (with minutes or ticks, the holes in the sessions built of them too)
    holed = found.result() if day is None else gaps(engine.daily, sessions)
    if holed:
        print(f"market-monitor: {gaps_line(holed)}", file=sys.stderr)
    if fmt == "table":
        out.write(table(alerts))
    elif fmt == "summary" and tally is not None:
        out.write(tally.text(len(known), first, last, start))
    out.flush()
    if report and tally is not None and shown is not None:
        from monitor.web.report import report_html

        html = report_html(
            bars if day is None else engine.daily,  # (with the session bars built)
            shown.frame(),
            rules_path=str(rules_path),
            start=start,
            summaries=tally.rules_summary(),
            followed=tally.by_symbol(),
        )
        try:
            Path(report).write_text(html, encoding="utf-8")
        except OSError as exc:
            print(
                f"market-monitor: cannot write the report {report}: {exc.strerror}",
                file=sys.stderr,
            )
            return EX_CANTCREAT
    for line in _thin_periods(engine, rules.enabled, start):
        print(f"market-monitor: {line}", file=sys.stderr)
    rejected = Counter(counts) + engine.counts  # (a reason both may give adds up)
    if minute_engine is not None:
        rejected += minute_engine.counts
    # (days that are no session, named by symbol and date: the engine's; of minute bars and
    # ticks outside regular hours, which a minute file's extended hours give by the hundred,
    # the count says enough)
    refused = [r for r in refused if r.reason != "outside_session"]
    for line in rejected_lines(rejected, [*rejections, *refused], unlisted):
        print(f"market-monitor: {line}", file=sys.stderr)
    return 0


def rejected_lines(
    counts: Mapping[str, int], rejections: Sequence[Rejection], unlisted: int = 0
) -> list[str]:
    """What a command says on stderr of the rows its files' reading rejected or fixed: the
    counts by reason, then where the first rejected rows are (no lines: none; `unlisted`:
    rows rejected beyond `rejections`, counted in "and N more")."""
    lines = []
    if counts:
        summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        lines.append(f"rows rejected or fixed: {summary}")
    if rejections:
        lines.append(first_rejected(rejections, unlisted=unlisted))
    return lines


_NAMED = {"not_a_session", "session_cut_short"}  # (reasons whose `raw` says the symbol, or
# is the same for every symbol)


def first_rejected(rejections: Sequence[Rejection], shown: int = 5, unlisted: int = 0) -> str:
    """The first rows the files' reading rejected, where they are, whose and why: `the first
    rows rejected: bad.csv:5 ABC (bad_price), bad.csv:9 ABC (duplicate), and 3 more`."""
    from monitor.datalayout import shown_symbol

    listed = ", ".join(
        f"{r.raw}{f' {shown_symbol(r.symbol)}' if r.symbol and r.reason not in _NAMED else ''}"
        f" ({r.reason})"
        for r in rejections[:shown]
    )
    rest = len(rejections) - min(shown, len(rejections)) + unlisted
    more = f", and {rest} more" if rest else ""
    kept = (
        "; of rows with the same symbol and date, the first is kept"
        if any(r.reason == "duplicate" for r in rejections)
        else ""
    )
    return f"the first rows rejected: {listed}{more}{kept}"


def _write_lines(out: TextIO, lines: Any) -> None:
    """JSON lines (a polars String column) to `out`: straight from polars to the byte stream
    underneath when there is one (300 MB for a universe's replay), else as text."""
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write("".join(line + "\n" for line in lines.to_list()))
        return
    out.flush()
    try:
        lines.to_frame().write_csv(buffer, include_header=False, quote_style="never")
    except OSError as exc:  # polars says "Broken pipe (os error 32)", without an errno
        if exc.errno == errno.EPIPE or "os error 32" in str(exc):
            raise BrokenPipeError(errno.EPIPE, "broken pipe") from exc
        raise


def demo(args: argparse.Namespace) -> int:
    """`market-monitor demo`: the July 2024 small-cap rally, from the data in monitor/demo."""
    from monitor.datafiles import DataSpec, read_many

    shipped = resources.files("monitor") / "demo"
    specs = [
        DataSpec(path=str(shipped / "rut_index_daily_1987_2026.csv"), symbol="^RUT"),
        DataSpec(path=str(shipped / "iwm_daily_adj_2000_2024.csv"), symbol="IWM"),
        DataSpec(path=str(shipped / "qqq_daily_adj_1999_2024.csv"), symbol="QQQ"),
        DataSpec(path=str(shipped / "smallcaps_ohlcv_2024-06-28_2024-08-02.csv")),
    ]
    loaded = read_many(specs, end=dt.date(2024, 7, 31))
    if args.format == "table":
        print("market-monitor demo: the July 2024 small-cap rally, replayed through the shipped")
        print("rules (config/rules.toml) over real history: ^RUT since 1987, IWM since 2000,")
        print("QQQ since 1999 and three small caps. Alerts of July 2024, each with what history")
        print("says next.\n")
    return run_replay(
        rules_path=str(shipped / "rules.toml"),
        bars=loaded.bars,
        counts=loaded.counts,
        short_interest=None,
        start=dt.date(2024, 7, 1),
        fmt=args.format,
    )
