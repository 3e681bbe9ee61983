"""Replay feeds' data: history files split at each feed's `start` into bars the engine knows
before the daemon starts (joined to the stored history) and bars the feed streams."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import polars as pl

from monitor.calendar import nyse_sessions
from monitor.config import Config, resolve
from monitor.core.sessions import NEW_YORK
from monitor.errors import ConfigError


class ReplayData(msgspec.Struct):
    """`history` with the replay feeds' earlier bars; per feed name the daily `bars` and
    `minutes` to stream; `start_at`, the simulated clock's start (None without replay feeds)."""

    history: pl.DataFrame
    start_at: dt.datetime | None
    bars: dict[str, pl.DataFrame]
    minutes: dict[str, pl.DataFrame]


def split_replay_data(config: Config, history: pl.DataFrame) -> ReplayData:
    """Replay feeds: bars before `start` join the history; the rest is streamed."""
    from monitor.datafiles import read_many
    from monitor.minutefiles import is_minute_file, read_minutes

    out = ReplayData(history, None, {}, {})
    start_at: dt.datetime | None = None
    for i, feed in enumerate(config.feeds):
        if feed.kind != "replay":
            continue
        try:
            start = dt.date.fromisoformat(feed.start) if feed.start else None
            end = dt.date.fromisoformat(feed.end) if feed.end else None
        except ValueError:
            raise ConfigError(f"feeds[{i}].start/end: not a YYYY-MM-DD date") from None
        specs = [_resolve_spec(config, d) for d in feed.data]
        minute_specs = [s for s in specs if is_minute_file(s.path)]
        daily_specs = [s for s in specs if s not in minute_specs]
        name = feed.label(i)
        if minute_specs:
            minutes = pl.concat([read_minutes(s) for s in minute_specs])
            day = pl.col("start").dt.convert_time_zone(NEW_YORK).dt.date()
            if start is not None:
                minutes = minutes.filter(day >= start)
            if end is not None:
                minutes = minutes.filter(day <= end)
            out.minutes[name] = minutes
            first_minute = minutes.get_column("start").min()
            if isinstance(first_minute, dt.datetime) and start_at is None:
                start_at = first_minute - dt.timedelta(seconds=1)
        loaded = read_many(daily_specs, end=end).bars if daily_specs else history.clear()
        if start is None:
            start = loaded.get_column("session").max() or dt.date.max  # type: ignore[assignment]
        assert isinstance(start, dt.date)
        before = loaded.filter(pl.col("session") < start)
        out.bars[name] = loaded.filter(pl.col("session") >= start)
        history = pl.concat([history, before]).unique(
            ["symbol", "session"], keep="last", maintain_order=True
        )
        last = before.get_column("session").max()
        if isinstance(last, dt.date):
            sessions = nyse_sessions(last)
            candidate = sessions.close_of(last) if sessions.is_session(last) else None
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
