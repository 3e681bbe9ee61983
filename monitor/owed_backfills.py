"""The REST backfills a WebSocket feed owes, kept across a restart.

A feed that loses its connection owes the minutes from when its data stopped. It fetches them
after it subscribes again, in a task that can take a while (2,000 symbols over REST). A daemon
stopped or killed before those minutes are journaled would otherwise never fetch them: at its
start it backfills only from where its saved data ends, which is after the gap (the ticks that
came once the connection was back).

So each gap is noted when it opens, in the store's `backfills_owed.json`, and settled once its
backfill's bars are on disk (the engine loop acknowledges a marker the feed queues after them:
see `WebSocketFeed._backfill`). A delayed stream owes, while it runs, from the minute its
data ends in, moved on once a minute (`DelayMark`): a kill -9 leaves it owed. A backfill
that fails owes its window for the symbols that failed only (`monitor.feeds.owed.Owed`). The
file maps a feed's name to the earliest start of its open gaps (ISO 8601, every symbol from
then), or, once a backfill failed, to an object:
`{"since": ISO or absent, "windows": [{"start": ISO, "end": ISO, "symbols": [...]}]}`. At the
start a feed backfills every symbol from the earlier of `since` and where the data taken up
ends, and each failed window's symbols over that window only; a window older than the engine
keeps by then is given up (`backfill_given_up`). A file that cannot be read or written is
logged, and the daemon goes on (the gap is then fetched only while the daemon runs); so is an
entry that is not one of those shapes, and it is skipped. What a feed owed that is no longer
in the config, or has no `rest_url` now, is a warning at the start (those minutes will not be
fetched) and is forgotten; so are a failed window's symbols no longer among the feed's (a
restart with fewer), counted too (`backfill_given_up{reason="symbol_removed"}`, a symbol's
window each). They used to be fetched once more at that start, the bars of a symbol the config
had dropped handed to the engine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any, NamedTuple

from monitor.core.counters import Counters
from monitor.feeds.owed import SYMBOL_REMOVED, Owed
from monitor.store import Store, StoreError


class Owing(NamedTuple):
    """What a feed owed at the last stop: every symbol from `since` (None: nothing), and the
    windows of backfills that failed, their symbols only."""

    since: dt.datetime | None
    windows: list[Owed]


class OwedBackfills:
    """Per feed, the gaps and failed windows whose backfill is not on disk yet."""

    def __init__(self, store: Store, log: Any, counters: Counters | None = None) -> None:
        self._store = store
        self._log = log
        self._counters = counters
        self._gaps: dict[str, list[Owed]] = {}
        self._untaken: set[str] = set()  # (owed at the last stop, not taken by a feed yet)
        try:
            saved = store.load_owed_backfills()
        except StoreError as exc:
            log.warning("owed_backfills_unreadable", error=str(exc))
            saved = {}
        for feed, value in saved.items():
            try:
                owed = _parsed(value)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("owed_backfills_unreadable", error=f"{feed}: {exc}: {value!r}"[:300])
                continue
            if owed:
                self._gaps[feed] = owed
                self._untaken.add(feed)

    def since(self, feed: str) -> dt.datetime | None:
        """The earliest start `feed` owes (None: it owes nothing)."""
        gaps = self._gaps.get(feed)
        return min(gap.start for gap in gaps) if gaps else None

    def owe(self, feed: str, owed: Owed) -> None:
        """`feed` lacks `owed`: a gap opened (every symbol from its start on), or the window
        of a backfill that failed (its symbols)."""
        before = self._saved(feed)
        self._gaps.setdefault(feed, []).append(owed)
        if self._saved(feed) != before:
            self._save()

    def take(self, feed: str, symbols: Collection[str] | None = None) -> Owing:
        """What `feed` owed at the last stop, handed to the feed (which owes it again, the gap
        from the earliest of `since` and where the data taken up ends, and settles that);
        `symbols`: the feed's now, the failed windows' others dropped (`_drop_removed`)."""
        self._untaken.discard(feed)
        if symbols is not None:
            self._drop_removed(feed, set(symbols))
        gaps = self._gaps.pop(feed, [])
        opened = [gap.start for gap in gaps if gap.end is None]
        return Owing(min(opened) if opened else None, [gap for gap in gaps if gap.end])

    def _drop_removed(self, feed: str, symbols: set[str]) -> None:
        """The symbols of `feed`'s failed windows that are not among `symbols` (removed from
        the config since) will never be fetched: said once, counted (a symbol's window each),
        and dropped from the file."""
        gaps = self._gaps.get(feed, [])
        kept: list[Owed] = []
        removed: set[str] = set()
        since: dt.datetime | None = None
        for gap in gaps:
            names = gap.symbols
            if names is None or set(names) <= symbols:
                kept.append(gap)
                continue
            gone = [name for name in names if name not in symbols]
            removed.update(gone)
            since = gap.start if since is None else min(since, gap.start)
            if self._counters is not None:
                self._counters.inc("backfill_given_up", len(gone), feed=feed, reason=SYMBOL_REMOVED)
            if len(gone) < len(names):
                kept.append(Owed(gap.start, gap.end, tuple(n for n in names if n in symbols)))
        if since is None:
            return
        self._log.warning(
            "backfill_owed_dropped",
            feed=feed,
            since=since.isoformat(),
            symbols=", ".join(sorted(removed)),
            why="no longer among the feed's symbols in the config: their failed windows' "
            "minutes will not be fetched",
        )
        if kept:
            self._gaps[feed] = kept
        else:
            del self._gaps[feed]
        self._save()

    def forget_untaken(self) -> None:
        """Once the feeds are built: what no feed took (a feed renamed or removed, or without
        a `rest_url` now) will never be fetched; said once, and dropped from the file."""
        for feed in sorted(self._untaken):
            since = min(gap.start for gap in self._gaps.pop(feed))
            self._log.warning(
                "backfill_owed_dropped",
                feed=feed,
                since=since.isoformat(),
                why="no feed of this name with a rest_url in the config: its minutes from then "
                "until it came back will not be fetched",
            )
        if self._untaken:
            self._untaken.clear()
            self._save()

    def settle(self, feed: str, gaps: list[Owed]) -> None:
        """The backfill of `feed`'s `gaps` (as owed) is on disk, or given up."""
        owed = self._gaps.get(feed)
        if not owed:
            return
        before = self._saved(feed)
        for gap in gaps:
            if gap in owed:
                owed.remove(gap)
        if not owed:
            del self._gaps[feed]
        if self._saved(feed) != before:
            self._save()

    def _saved(self, feed: str) -> str | dict[str, object] | None:
        """What the file says `feed` owes: the earliest start of its open gaps while no
        backfill failed (the file as it always was), else the object of both."""
        gaps = self._gaps.get(feed)
        if not gaps:
            return None
        opened = [gap.start for gap in gaps if gap.end is None]
        windows = sorted({gap for gap in gaps if gap.end is not None}, key=_order)
        if not windows:
            return min(opened).isoformat()
        saved: dict[str, object] = {"since": min(opened).isoformat()} if opened else {}
        saved["windows"] = [
            {"start": w.start.isoformat(), "end": w.end.isoformat(), "symbols": list(w.symbols)}
            for w in windows
            if w.end is not None and w.symbols is not None
        ]
        return saved

    def _save(self) -> None:
        owed = {feed: saved for feed in self._gaps if (saved := self._saved(feed)) is not None}
        try:
            self._store.save_owed_backfills(owed)
        except StoreError as exc:
            self._log.warning("owed_backfills_unwritable", error=str(exc))


def _order(window: Owed) -> tuple[dt.datetime, dt.datetime, tuple[str, ...]]:
    return window.start, window.end or window.start, window.symbols or ()


def _parsed(value: str | dict[str, object]) -> list[Owed]:
    """The entries a feed's value in the file holds; ValueError (or TypeError, KeyError)
    for one that is not of its shapes."""
    if isinstance(value, str):
        return [Owed(_time(value))]
    since = value.get("since")
    owed = [Owed(_time(since))] if since is not None else []
    windows = value.get("windows", [])
    if not isinstance(windows, list):
        raise ValueError("windows: not a list")
    for window in windows:
        symbols = window["symbols"]
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise ValueError("symbols: not a list of names")
        start, end = _time(window["start"]), _time(window["end"])
        if start < end and symbols:
            owed.append(Owed(start, end, tuple(symbols)))
    return owed


def _time(value: object) -> dt.datetime:
    """An ISO 8601 time with its offset, in UTC; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("not a time")
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError("not a time with an offset")
    return when.astimezone(dt.UTC)
