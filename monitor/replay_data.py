"""Replay feeds' data: history files split at each feed's `start` into bars the engine knows
before the daemon starts (joined to the stored history) and bars the feed streams."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import polars as pl

from monitor.calendar import nyse_sessions
from monitor.config import Config, resolve
from monitor.core.sessions import NEW_YORK, new_york_date
from monitor.errors import ConfigError


class ReplayData(msgspec.Struct):
    """`history` with the replay feeds' earlier bars; per feed name the daily `bars` and
    `minutes` to stream; `start_at`, the simulated clock's start (None without replay feeds)."""

    history: pl.DataFrame
    start_at: dt.datetime | None
    bars: dict[str, pl.DataFrame]
    minutes: dict[str, pl.DataFrame]
    rejected: dict[str, list[str]] = msgspec.field(default_factory=dict)  # (see FeedFiles)


class FeedFiles(msgspec.Struct):
    """One replay feed's files as read: its `start` (None: after the last daily bar), its
    daily bars (up to `end`), its minute bars (from `start` to `end`; None without minute
    files) and what the reading of the daily files says of the rows it rejected or fixed
    (lines for people; none when there were none)."""

    name: str
    start: dt.date | None
    daily: pl.DataFrame | None
    minutes: pl.DataFrame | None
    rejected: list[str] = msgspec.field(default_factory=list)


# The New York date of a minute bar (at any hour: a file may hold what the book would not take).
_NEW_YORK_DAY = new_york_date(pl.col("start"))


def read_replay_feeds(config: Config) -> Iterator[FeedFiles]:
    """Each replay feed's `data` files in turn, read as the daemon streams them (one feed's
    bars at a time in memory). ConfigError naming the field (exit 78) for a `start` or `end`
    that is not a date, a `start` after `end`, and a feed that would stream nothing (see
    `_streams_nothing`); DataError naming the file for one that cannot be read (exit 65): `run`
    and `config check` both fail here. A `start` before the data is taken: it streams from the
    data's second session (see `split_replay_data`)."""
    from monitor.datafiles import read_many
    from monitor.minutefiles import is_minute_file, read_minutes
    from monitor.replay_command import rejected_lines

    for i, feed in enumerate(config.feeds):
        if feed.kind != "replay":
            continue
        start, end = _date(i, "start", feed.start), _date(i, "end", feed.end)
        if start is not None and end is not None and start > end:
            raise ConfigError(f"feeds[{i}].start: {start} is after end ({end})")
        specs = [_resolve_spec(config, d) for d in feed.data]
        minute_specs = [s for s in specs if is_minute_file(s.path)]
        daily_specs = [s for s in specs if s not in minute_specs]
        minutes, last = None, list[object]()  # (the last session of each kind of file)
        if minute_specs:
            minutes = pl.concat([read_minutes(s) for s in minute_specs])
            day = _NEW_YORK_DAY
            if end is not None:
                minutes = minutes.filter(day <= end)
            last.append(minutes.select(day.max()).item())
            if start is not None:
                minutes = minutes.filter(day >= start)
        daily, rejected = None, []
        if daily_specs:
            loaded = read_many(daily_specs, end=end)
            daily, rejected = loaded.bars, rejected_lines(loaded.counts, loaded.rejections)
            last.append(daily.get_column("session").max())
        latest = max((d for d in last if isinstance(d, dt.date)), default=None)
        problem = _streams_nothing(start, end, latest)
        if problem is not None:
            raise ConfigError(f"feeds[{i}].{problem}")
        yield FeedFiles(feed.label(i), start, daily, minutes, rejected)


def _streams_nothing(
    start: dt.date | None, end: dt.date | None, last: dt.date | None
) -> str | None:
    """Why a replay feed whose data's last session up to `end` is `last` (None: it has none)
    would stream nothing from `start` (`field: message`), or None when it streams something,
    or means not to (no `start`: every daily bar is history)."""
    nothing = "the feed would stream nothing"
    if last is None:  # (an empty file is a DataError: here `end` is before every bar)
        return f"end: the data has no session up to {end}: {nothing}" if end else f"data: {nothing}"
    if start is None or start <= last:
        return None
    if end is None:
        return f"start: {start} is after the data's last session ({last}): {nothing}"
    return (
        f"start: the data has no session from {start} to end ({end}), the last is {last}: {nothing}"
    )


def _date(i: int, field: str, text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        raise ConfigError(f"feeds[{i}].{field}: not a YYYY-MM-DD date: {text!r}") from None


def split_replay_data(config: Config, history: pl.DataFrame) -> ReplayData:
    """Replay feeds: bars before `start` join the history; the rest is streamed. A `start` at or
    before the data's first session streams it from its second: the first is the history the
    simulated clock starts from (at its close; the daemon's calendar and clock start from the
    history, and no rule fires on a symbol's first bar, which has no return)."""
    out = ReplayData(history, None, {}, {})
    start_at: dt.datetime | None = None
    for feed in read_replay_feeds(config):
        if feed.rejected:
            out.rejected[feed.name] = feed.rejected
        loaded = feed.daily if feed.daily is not None else history.clear()
        start, first = feed.start, loaded.get_column("session").min()
        minutes = feed.minutes
        if start is None:
            start = loaded.get_column("session").max() or dt.date.max  # type: ignore[assignment]
        elif isinstance(first, dt.date) and start <= first:
            start = first + dt.timedelta(days=1)
            if minutes is not None:  # (nor do that session's minute bars stream)
                day = _NEW_YORK_DAY
                minutes = minutes.filter(day >= start)
        assert isinstance(start, dt.date)
        if minutes is not None:
            out.minutes[feed.name] = minutes
            first_minute = minutes.get_column("start").min()
            if isinstance(first_minute, dt.datetime) and start_at is None:
                start_at = first_minute - dt.timedelta(seconds=1)
        before = loaded.filter(pl.col("session") < start)
        out.bars[feed.name] = loaded.filter(pl.col("session") >= start)
        history = pl.concat([history, before]).unique(
            ["symbol", "session"], keep="last", maintain_order=True
        )
        last = before.get_column("session").max()
        if isinstance(last, dt.date):
            # (the close of the history's last session: of the last row's day, or of the
            # session before it when that row is a holiday's or a weekend's, which the engine
            # rejects; it left the daemon without its simulated clock, and it failed to start)
            sessions = nyse_sessions(last - dt.timedelta(days=10))  # (New Year's Day: December)
            midnight = dt.time(tzinfo=ZoneInfo(NEW_YORK))
            after = dt.datetime.combine(last + dt.timedelta(days=1), midnight)
            session = sessions.last_closed(after.astimezone(dt.UTC))
            candidate = sessions.close_of(session) if session is not None else None
            if candidate is not None and (start_at is None or candidate > start_at):
                start_at = candidate
    out.history = history
    out.start_at = start_at
    return out


def _resolve_spec(config: Config, arg: str) -> Any:
    """`[SYMBOL=]PATH` with PATH relative to the config file."""
    from monitor.datafiles import DataSpec, parse_data_arg

    parsed = parse_data_arg(arg)
    return DataSpec(path=str(resolve(config, parsed.path)), symbol=parsed.symbol)
