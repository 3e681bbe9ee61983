"""The REST backfills a WebSocket feed owes, kept across a restart.

A feed that loses its connection owes the minutes from when its data stopped. It fetches them
after it subscribes again, in a task that can take a while (2,000 symbols over REST). A daemon
stopped or killed before those minutes are journaled would otherwise never fetch them: at its
start it backfills only from where its saved data ends, which is after the gap (the ticks that
came once the connection was back).

So each gap is noted when it opens, in the store's `backfills_owed.json` (feed name -> the
earliest start owed, ISO 8601), and settled once its backfill's bars are on disk (the engine
loop acknowledges a marker the feed queues after them: see `WebSocketFeed._backfill`). A
backfill that fails stays owed. At the start a feed backfills from the earlier of what it owes
and where the data taken up ends. A file that cannot be read or written is logged, and the
daemon goes on (the gap is then fetched only while the daemon runs). What a feed owed that is
no longer in the config, or has no `rest_url` now, is a warning at the start (those minutes
will not be fetched) and is forgotten.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from monitor.store import Store, StoreError


class OwedBackfills:
    """Per feed, the starts of the gaps whose backfill is not on disk yet."""

    def __init__(self, store: Store, log: Any) -> None:
        self._store = store
        self._log = log
        self._gaps: dict[str, list[dt.datetime]] = {}
        self._untaken: set[str] = set()  # (owed at the last stop, not taken by a feed yet)
        try:
            saved = store.load_owed_backfills()
        except StoreError as exc:
            log.warning("owed_backfills_unreadable", error=str(exc))
            saved = {}
        for feed, since in saved.items():
            try:
                when = dt.datetime.fromisoformat(since)
            except ValueError:
                log.warning("owed_backfills_unreadable", error=f"{feed}: not a time: {since!r}")
                continue
            if when.tzinfo is not None:
                self._gaps[feed] = [when.astimezone(dt.UTC)]
                self._untaken.add(feed)

    def since(self, feed: str) -> dt.datetime | None:
        """The earliest start `feed` owes (None: it owes nothing)."""
        gaps = self._gaps.get(feed)
        return min(gaps) if gaps else None

    def owe(self, feed: str, since: dt.datetime) -> None:
        """`feed` lost data from `since` on."""
        before = self.since(feed)
        self._gaps.setdefault(feed, []).append(since)
        if before is None or since < before:
            self._save()

    def take(self, feed: str) -> dt.datetime | None:
        """What `feed` owed at the last stop, handed to the feed (which owes it again, from
        the earliest of it and where the data taken up ends, and settles that)."""
        self._untaken.discard(feed)
        gaps = self._gaps.pop(feed, [])
        return min(gaps) if gaps else None

    def forget_untaken(self) -> None:
        """Once the feeds are built: what no feed took (a feed renamed or removed, or without
        a `rest_url` now) will never be fetched; said once, and dropped from the file."""
        for feed in sorted(self._untaken):
            since = min(self._gaps.pop(feed))
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

    def settle(self, feed: str, gaps: list[dt.datetime]) -> None:
        """The backfill of `feed`'s `gaps` (their starts, as owed) is on disk."""
        owed = self._gaps.get(feed)
        if not owed:
            return
        before = min(owed)
        for gap in gaps:
            if gap in owed:
                owed.remove(gap)
        if not owed:
            del self._gaps[feed]
        if self.since(feed) != before:
            self._save()

    def _save(self) -> None:
        owed = {feed: min(gaps).isoformat() for feed, gaps in self._gaps.items() if gaps}
        try:
            self._store.save_owed_backfills(owed)
        except StoreError as exc:
            self._log.warning("owed_backfills_unwritable", error=str(exc))
