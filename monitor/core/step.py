"""What the engine hands out: a `Step` (what one `Engine.advance` produced) and an `EngineState`
(what must survive a restart).

Why apart from `monitor.core.engine`: these are the engine's results, which the pipeline, replay
and the store hold and pass on; neither needs the engine to be read, and the engine reads better
without them. `monitor.core.engine` re-exports both, where the rest of the code imports them.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Iterator

import msgspec
import polars as pl

from monitor.core.model import Alert, Rejection, empty
from monitor.core.payload import LINE_SCHEMA, decode_lines
from monitor.core.rules.spec import Rule


class Step:
    """What one `advance` produced. `lines` holds the new alerts as payload lines (LINE_SCHEMA,
    in order); `alerts` decodes them into Alert structs on first use.

    From `advance(now, deferred=True)` the payloads are not built yet: `line_chunks()` builds
    and yields them in order, a chunk of about `LineChunks.ROWS` at a time (or `lines` builds
    them all at once), and either does so once only.

    `firings` holds each rule's firing frame (`monitor.core.firing.firings`: a row per firing
    in time order, with its metrics and history; a minute rule's, one per minute evaluated
    apart: see `Engine._add_minutes`), what the lines are made of. Its rows are the
    alerts before their ids are checked against those already emitted, which only drops an
    alert of a step that re-evaluates periods seen before (a correction, a restored engine):
    in a replay, the same as the alerts."""

    def __init__(
        self,
        lines: pl.DataFrame | Iterable[pl.DataFrame],
        minute_bars: pl.DataFrame,
        daily_bars: pl.DataFrame,
        rejections: list[Rejection],
        firings: list[tuple[Rule, pl.DataFrame]] | None = None,
    ) -> None:
        self._lines = lines
        self.minute_bars = minute_bars
        self.daily_bars = daily_bars
        self.rejections = rejections
        self.firings = firings or []

    @functools.cached_property
    def lines(self) -> pl.DataFrame:
        """All the new alerts' lines, in order."""
        if isinstance(self._lines, pl.DataFrame):
            return self._lines
        chunks = list(self._lines)
        return pl.concat(chunks) if chunks else empty(LINE_SCHEMA)

    def line_chunks(self) -> Iterator[pl.DataFrame]:
        """The new alerts' lines in order, in chunks (one when they were built eagerly)."""
        if isinstance(self._lines, pl.DataFrame):
            if self._lines.height:
                yield self._lines
            return
        yield from self._lines

    @functools.cached_property
    def alerts(self) -> list[Alert]:
        """The new alerts, in order (a list the caller may extend)."""
        return decode_lines(self.lines)


class EngineState(msgspec.Struct):
    """What must survive a restart: emitted alert ids and how far evaluation got."""

    fired: list[str]
    watermarks: dict[str, dt.datetime]
