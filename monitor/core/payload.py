"""Firings to alert payloads: deterministic ids, words for people, the history block."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from hashlib import blake2b as _blake
from zoneinfo import ZoneInfo

import msgspec
import polars as pl

from monitor.core.model import ALERT_SCHEMA, ISO_UTC, Alert, empty
from monitor.core.rules import FAMILIES
from monitor.core.rules.context import KEYS, RuleContext, pct_expr, text_expr, unit
from monitor.core.rules.spec import Rule, kind_of
from monitor.core.sessions import NEW_YORK

# Columns of a firing frame that are bookkeeping, not metrics for the payload.
_INTERNAL = {
    *KEYS,
    "fire",
    "history_start",
    "prior_occurrences",
    "prior_dates",
    "pos",
    "ts_key",
    "skipped",
    "coverage",  # (breadth's and movers': what `blocked` says, not a metric of the alert)
    "peak_fades",  # (fade's: the same)
}
_STAT = re.compile(r"^(fwd|n|mean|median|up|min|max)_\d+$")


def alert_id(rule_id: str, symbol: str, timeframe: str, ts: dt.datetime, variant: str) -> str:
    """The same event always gets the same id: a hash of rule, symbol, timeframe and bar close
    (`_ids` builds the same key for a whole frame)."""
    return _digest(f"{rule_id}|{symbol}|{timeframe}|{ts.isoformat()}|{variant}")


def _digest(key: str) -> str:
    return _digest_bytes(key.encode())


def _digest_bytes(key: bytes) -> str:
    return _hash(key).hexdigest()


_hash = functools.partial(_blake, digest_size=12)


LINE_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.String(),
    "period": pl.Int64(),
    "rule": pl.String(),
    "order": pl.Int64(),
    "symbol": pl.String(),
    "id": pl.String(),
    "json": pl.String(),
}
# The order of alert lines, wherever they come out (the daemon's console, its Redis stream
# and recent alerts, replay's jsonl and table): by time, then `period` (minute rules' before
# daily ones', before weekly ones': the daemon fires the close's last minute before the
# session, whose bar it builds later), then rule, then `order` (a movers rule's rank: #1
# first; 0 for the other rules), then symbol and id.
LINE_ORDER = ["ts", "period", "rule", "order", "symbol", "id"]
PERIODS = {"1m": 0, "1d": 1, "1w": 2}
_lines_decoder = msgspec.json.Decoder(list[Alert])
PARALLEL_ROWS = 50_000


def alert_lines(fired: pl.DataFrame, rule: Rule, ctx: RuleContext) -> pl.DataFrame:
    """One alert per firing row, in the frame's order, as LINE_SCHEMA: the sort keys `ts`,
    `period`, `rule`, `order` (a movers rule's rank, else 0), `symbol` and `id` (LINE_ORDER),
    and `json`, the `market-monitor.alert/1` payload (what `encode_alert` of the same Alert
    gives, up to how a float's exponent is written).

    All of it is built by polars over the whole frame (text included: the families' `words`);
    only the id hash runs per row, in Python. A replay of the universe makes hundreds of
    thousands of alerts, and a Python object per alert used to cost most of its time. Past
    PARALLEL_ROWS the two halves are built side by side (polars releases the GIL; replay's
    jsonl builds chunks below it, two at a time: see LineChunks)."""
    if fired.is_empty():
        return empty(LINE_SCHEMA)
    variant = bool((fired.get_column("variant") != "").any())
    frame = _plain(fired)
    if frame.height < PARALLEL_ROWS:
        return _lines(frame, rule, ctx, variant)
    half = frame.height // 2
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="payload") as pool:
        parts = pool.map(
            lambda part: _lines(part, rule, ctx, variant),
            (frame.slice(0, half), frame.slice(half)),
        )
        return pl.concat(list(parts))


class LineChunks:
    """Alert lines of firing frames (each sorted by `ts`, with its rule), built and yielded in
    chunks of at most about ROWS firings in time order: all firings at one instant in one
    chunk, each chunk passed through `new` (an engine's: drops ids already emitted, sorts) in
    order. Two chunks are built at a time (polars releases the GIL; the ids' hashing of one
    overlaps the other's polars work). Iterated once only: `new` records the ids it passes."""

    ROWS = 40_000  # (below PARALLEL_ROWS: a chunk is one thread's work)

    def __init__(
        self,
        fired: list[tuple[Rule, pl.DataFrame]],
        ctx: RuleContext,
        new: Callable[[list[pl.DataFrame]], pl.DataFrame],
    ) -> None:
        self._fired = [(rule, frame) for rule, frame in fired if frame.height]
        self._ctx = ctx
        self._new = new
        self._used = False

    def __iter__(self) -> Iterator[pl.DataFrame]:
        if self._used:
            raise RuntimeError("the lines of a deferred step were already read")
        self._used = True
        if not self._fired:
            return
        instants = pl.concat([frame.get_column("ts") for _, frame in self._fired]).sort()
        # An even number of chunks of about equal size: the last two are built side by side,
        # not the last one alone.
        pairs = -(-len(instants) // (2 * self.ROWS))
        size = -(-len(instants) // (2 * pairs))
        every = list(range(size, len(instants), size))
        bounds = instants.gather(every).unique().to_list()
        spans = list(zip([None, *bounds], [*bounds, None], strict=True))
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="chunks") as pool:
            for parts in pool.map(lambda span: self._build(*span), spans):
                chunk = self._new(parts)
                if chunk.height:
                    yield chunk

    def _build(self, low: dt.datetime | None, high: dt.datetime | None) -> list[pl.DataFrame]:
        """The lines of every rule's firings in [low, high) (None: unbounded)."""
        parts = []
        for rule, frame in self._fired:
            ts = frame.get_column("ts")
            start = 0 if low is None else int(ts.search_sorted(low, "left"))
            end = len(ts) if high is None else int(ts.search_sorted(high, "left"))
            if end > start:
                parts.append(alert_lines(frame.slice(start, end - start), rule, self._ctx))
        return parts


_ISO = ISO_UTC  # `ts` of an alert


def _ids(frame: pl.DataFrame, rule: Rule) -> pl.Series:
    """The alert id of every row of a `_plain` frame: the key as `alert_id` makes it."""
    key = pl.concat_str(
        pl.lit(f"{rule.id}|"),
        "symbol",
        pl.lit(f"|{rule.timeframe}|"),
        "ts_key",
        pl.lit("|"),
        "variant",
    )
    keys = frame.select(key.cast(pl.Binary)).to_series().to_list()
    # (The same as `_digest_bytes` of each: a copy of an empty hash fed the key, a third
    # quicker than a new hash object per key, whose parameters are parsed every time.)
    empty, ids = _hash(), []
    for key_bytes in keys:
        digest = empty.copy()
        digest.update(key_bytes)
        ids.append(digest.hexdigest())
    return pl.Series("id", ids, pl.String)


def _lines(frame: pl.DataFrame, rule: Rule, ctx: RuleContext, variant: bool) -> pl.DataFrame:
    """`alert_lines` of a `_plain` frame (`variant`: whether metrics carry the variant).

    The metrics, and text fields that need escaping, go through polars' JSON writer; the rest
    is assembled around them from parts that need none: hex ids, ISO dates, words without
    quotes, backslashes or control characters, and numbers printed as that writer prints them
    (a float cast to text is written the same way). The history block is built so: it is most
    of an alert, and the writer took about three times as long over its nested lists (only each
    horizon's flat object goes through it). Every part goes into one `concat_str`."""
    family = FAMILIES[kind_of(rule)]
    names = [c for c in frame.columns if c not in _INTERNAL and not _STAT.match(c)]
    names += ["variant"] if variant else []
    if "short_week" in names:  # (last, after what later steps added: docs/alerts.md)
        names = [*(c for c in names if c != "short_week"), "short_week"]
    metrics = [pl.col(c) for c in names]
    title, text = family.words(rule, ctx)
    frame = frame.with_columns(_ids(frame, rule), title.alias("_title"), text.alias("_text"))
    if rule.horizons:
        frame = frame.with_columns(_picked(rule.horizons, rule.timeframe))
    # Text fields with nothing to escape (checked for the whole frame) are written quoted as
    # they are, else through the JSON writer: it would pass over every character of them.
    string = (
        _quoted if _plain_text(frame, ["symbol", "session", "ts", "_title", "_text"]) else _json
    )
    fields = text_expr(
        '"symbol":', *string("symbol"),
        f',"timeframe":{_text(rule.timeframe)},"session":', *string("session"),
        ',"ts":', *string("ts"),
        f',"severity":{_text(rule.severity or family.SEVERITY)},"title":', *string("_title"),
        ',"text":', *string("_text"),
        ',"metrics":', pl.struct(metrics).struct.json_encode(),
    )  # fmt: skip
    json = text_expr(
        f'{{"schema":{_text(ALERT_SCHEMA)},"id":"',
        pl.col("id"),
        f'","rule":{_text(rule.id)},"kind":{_text(kind_of(rule))},',
        fields,
        ',"history":',
        *_history(rule.horizons, frame),
        "}",
    )
    period, order = _order_keys(rule)
    return frame.select(
        "ts", period, pl.lit(rule.id).alias("rule"), order, "symbol", "id", json.alias("json")
    )


def _order_keys(rule: Rule) -> tuple[pl.Expr, pl.Expr]:
    """A firing row's sort keys of LINE_ORDER besides its time, rule, symbol and id: `period`
    (its timeframe's) and `order` (a movers rule's rank, else 0)."""
    order = pl.col("rank") if kind_of(rule) == "movers" else pl.lit(0)
    return (
        pl.lit(PERIODS[rule.timeframe], pl.Int64).alias("period"),
        order.cast(pl.Int64).alias("order"),
    )


WORDS_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.String(),
    "period": pl.Int64(),  # (with `order`: the sort keys of LINE_ORDER, as the lines')
    "rule": pl.String(),
    "order": pl.Int64(),
    "symbol": pl.String(),
    "id": pl.String(),
    "kind": pl.String(),
    "severity": pl.String(),
    "session": pl.String(),
    "variant": pl.String(),
    "title": pl.String(),
    "text": pl.String(),
}


def alert_words(fired: pl.DataFrame, rule: Rule, ctx: RuleContext) -> pl.DataFrame:
    """The short fields of each firing's alert, in the frame's order, as `alert_lines` writes
    them in its payload (WORDS_SCHEMA: `variant` is "" for a rule without variants), without
    the payload: most of one is its history, whose `prior_dates` lists every earlier episode
    (30 KB for an alert with a few thousand before it). For what shows many alerts in a few
    words each (replay's report)."""
    if fired.is_empty():
        return empty(WORDS_SCHEMA)
    family = FAMILIES[kind_of(rule)]
    frame = _plain(fired.drop("prior_dates", strict=False))
    title, text = family.words(rule, ctx)
    period, order = _order_keys(rule)
    return frame.select(
        "ts",
        period,
        pl.lit(rule.id).alias("rule"),
        order,
        "symbol",
        pl.lit(_ids(frame, rule)),
        pl.lit(kind_of(rule)).alias("kind"),
        pl.lit(rule.severity or family.SEVERITY).alias("severity"),
        "session",
        pl.col("variant").fill_null(""),
        title.alias("title"),
        text.alias("text"),
    )


def _quoted(column: str) -> list[pl.Expr | str]:
    """A text column as JSON strings, when nothing in it needs escaping."""
    return ['"', pl.col(column), '"']


def _json(column: str) -> list[pl.Expr | str]:
    """A text column as JSON strings (or null) by the JSON writer: `{"v":...}` less the key."""
    encoded = pl.struct(pl.col(column).alias("v")).struct.json_encode()
    return [encoded.str.slice(5).str.head(-1)]  # (views into the same text: no copy)


def _plain_text(frame: pl.DataFrame, columns: list[str]) -> bool:
    """Whether the text columns hold no null and nothing JSON escapes (a quote, a backslash, a
    control character): then each is its own JSON string body."""
    special = r'[\x00-\x1f"\\]'
    found = frame.select(
        pl.any_horizontal(
            pl.col(c).is_null() | pl.col(c).str.contains(special) for c in columns
        ).any()
    ).item()
    return not found


def _text(value: str) -> str:
    """A JSON string literal."""
    return msgspec.json.encode(value).decode()


def decode_lines(lines: pl.DataFrame) -> list[Alert]:
    """The Alerts of alert lines, in order (one decode for the lot)."""
    if lines.is_empty():
        return []
    return _lines_decoder.decode("[" + ",".join(lines.get_column("json").to_list()) + "]")


def _plain(fired: pl.DataFrame) -> pl.DataFrame:
    """Payload-ready columns: `ts` as ISO UTC with Z (and `ts_key`, the form alert ids are made
    from), dates as YYYY-MM-DD text, NaN and infinities as null. Dates and instants are
    formatted once per distinct value (a few hundred sessions for a frame of many thousand
    firings) and looked up."""
    exprs: list[pl.Expr] = []
    for name, dtype in fired.schema.items():
        col = pl.col(name)
        values = fired.get_column(name)
        if name == "ts":
            exprs += [
                _formatted(col, values, _ISO).alias("ts"),
                _formatted(col, values, "%Y-%m-%dT%H:%M:%S+00:00").alias("ts_key"),
            ]
        elif dtype == pl.Date:
            exprs.append(_formatted(col, values, "%Y-%m-%d").alias(name))
        elif dtype.is_float():
            exprs.append(pl.when(col.is_finite()).then(col).otherwise(None).alias(name))
        else:
            exprs.append(col)
    return fired.select(exprs)


def _formatted(expr: pl.Expr, values: pl.Series, form: str) -> pl.Expr:
    """`expr` (dates or instants, among `values`) as text in `form`: each distinct value is
    formatted once and looked up."""
    distinct = values.drop_nulls().unique()
    return expr.replace_strict(
        distinct, distinct.dt.strftime(form), default=None, return_dtype=pl.String
    )


def _history(horizons: Sequence[int], frame: pl.DataFrame) -> list[pl.Expr | str]:
    """The parts of the history block as JSON text: earlier episodes (`prior_occurrences`,
    `prior_dates`), what followed them (`forward`) and a line for people (`summary`: "4 earlier
    times since 1987; over the next 21 sessions, +6.1% on average (median +5.0%), 4 of 4 up.",
    digits and plain words only, so it needs no escaping). The line describes the middle one
    of the horizons with known outcomes (of two, the second: the longer)."""
    dates = pl.col("prior_dates").fill_null(pl.lit([], dtype=pl.List(pl.Date)))
    earlier = frame.get_column("prior_dates").explode()
    listed = pl.lit("")  # (no earlier episode anywhere: a lookup of no dates keeps the dtype)
    if earlier.null_count() < earlier.len():
        quoted = _formatted(pl.element(), earlier, '"%Y-%m-%d"')
        listed = dates.list.eval(quoted).list.join(",")
    return [
        '{"prior_occurrences":',
        pl.col("prior_occurrences").fill_null(0).cast(pl.String),
        ',"prior_dates":[',
        listed,
        '],"forward":',
        *_forward(horizons),
        ',"summary":"',
        _summary(dates, horizons),
        '"}',
    ]


def _forward(horizons: Sequence[int]) -> list[pl.Expr | str]:
    """The parts of the list of per-horizon outcomes (periods, count, mean, median,
    share_positive, min, max) as JSON text: each horizon's object is one struct through the
    JSON writer (a list of them was about three times as slow)."""
    items: list[pl.Expr | str] = []
    for h in horizons:
        if items:
            items.append(",")
        outcome = pl.struct(
            pl.lit(h).alias("periods"),
            pl.col(f"n_{h}").fill_null(0).cast(pl.Int64).alias("count"),
            pl.col(f"mean_{h}").alias("mean"),
            pl.col(f"median_{h}").alias("median"),
            pl.col(f"up_{h}").alias("share_positive"),
            pl.col(f"min_{h}").alias("min"),
            pl.col(f"max_{h}").alias("max"),
        )
        items.append(outcome.struct.json_encode())
    return ["[", *items, "]"]


def _picked(horizons: Sequence[int], timeframe: str) -> list[pl.Expr]:
    """The numbers the history line quotes, as columns `pick_span`, `pick_n`, `pick_up`,
    `pick_mean` and `pick_median`: those of the middle one of the horizons with known outcomes
    (of two, the second: the one at `known // 2`), null when none is known."""
    known = [pl.col(f"n_{h}").fill_null(0) > 0 for h in horizons]
    middle = pl.sum_horizontal(known) // 2
    picks: list[tuple[pl.Expr, int]] = []
    seen: pl.Expr = pl.lit(0)
    for h, is_known in zip(horizons, known, strict=True):
        picks.append((is_known & (seen == middle), h))
        seen = seen + is_known.cast(pl.Int64)

    def chain(value: Callable[[int], pl.Expr]) -> pl.Expr:  # at most one pick is true
        return pl.coalesce([pl.when(is_it).then(value(h)) for is_it, h in picks])

    return [
        chain(lambda h: pl.lit(_next(timeframe, h))).alias("pick_span"),
        chain(lambda h: pl.col(f"n_{h}")).alias("pick_n"),
        chain(lambda h: pl.col(f"up_{h}")).alias("pick_up"),
        chain(lambda h: pl.col(f"mean_{h}")).alias("pick_mean"),
        chain(lambda h: pl.col(f"median_{h}")).alias("pick_median"),
    ]


def _next(timeframe: str, h: int) -> str:
    """What "over the next ..." says of a horizon: '21 sessions', 'week' (of one)."""
    return unit(timeframe) if h == 1 else f"{h} {unit(timeframe, h)}"


def _summary(dates: pl.Expr, horizons: Sequence[int]) -> pl.Expr:
    """The history line over the `_picked` columns (the common head built once)."""
    count = pl.col("prior_occurrences").fill_null(0)  # (the length of `dates`)
    times = pl.when(count == 1).then(pl.lit("time")).otherwise(pl.lit("times"))
    head = text_expr(
        count.cast(pl.String),
        " earlier ",
        times,
        " since ",
        dates.list.first().dt.year().cast(pl.String),
    )
    first = pl.lit("First time in the loaded history.")
    unknown = pl.lit("; too recent to say what followed.")
    if not horizons:
        return pl.when(count == 0).then(first).otherwise(text_expr(head, unknown))
    n = pl.col("pick_n")
    ups = (pl.col("pick_up").fill_null(0.0) * n).round(0, mode="half_to_even").cast(pl.Int64)
    what = text_expr(
        "; over the next ", pl.col("pick_span"), ", ",
        pct_expr(pl.col("pick_mean"), signed=True), " on average (median ",
        pct_expr(pl.col("pick_median"), signed=True), "), ", ups.cast(pl.String), " of ",
        n.cast(pl.String), " up.",
    )  # fmt: skip
    tail = pl.when(n.is_not_null()).then(what).otherwise(unknown)
    return pl.when(count == 0).then(first).otherwise(text_expr(head, tail))


def feed_health_alert(kind: str, feed: str, at: dt.datetime, gap_s: float | None) -> Alert:
    """A `feed_stale` or `feed_recovered` alert for one feed (feed health, no history)."""
    gap = f" after {gap_s:.0f} s without data" if gap_s else ""
    if kind == "feed_stale":
        title = f"Feed {feed} is stale"
        text = f"No data from feed {feed}{gap} during regular hours; alerts from it may be late."
        severity = "warning"
    else:
        title = f"Feed {feed} recovered"
        text = f"Data from feed {feed} flows again{gap}."
        severity = "info"
    return Alert(
        id=alert_id(f"feed.{kind}", feed, "1m", at, ""),
        rule=f"feed.{kind.removeprefix('feed_')}",
        kind=kind,
        symbol=feed,
        timeframe="1m",
        session=at.astimezone(ZoneInfo(NEW_YORK)).date().isoformat(),
        ts=at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        severity=severity,  # type: ignore[arg-type]
        title=title,
        text=text,
        metrics={"gap_s": gap_s},
        history=None,
    )
