"""`replay --report FILE.html`: one self-contained HTML page for a replay.

First, per rule over all its symbols, what followed its alerts beside what followed any period
(`monitor.replay.Summary`, as `--format summary` prints it). Per symbol with alerts, its closes
over the whole replay (inline SVG, the line downsampled to ~1,600 points, min and max of each
bucket kept, so spikes survive) with every alert marked in a lane per rule under the chart (past
MAX_MARKERS alerts in a chart, one marker per lane and run of sessions, saying how many); then
what followed per rule, symbol and variant (the first section's figures, symbol by symbol), and
the list of alerts (the first MAX_LISTED). No script, no external file: it opens offline and can
be mailed.

The alerts come as `ReportAlerts` rows, a few short fields each, never as decoded payloads: a
replay of a universe makes hundreds of thousands, each payload listing every earlier episode.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, NamedTuple

import polars as pl

from monitor.core.model import empty
from monitor.core.payload import LINE_ORDER, WORDS_SCHEMA, alert_words
from monitor.core.rules.context import RuleContext, pct, unit
from monitor.core.rules.spec import kind_of

if TYPE_CHECKING:
    from monitor.core.step import Step
    from monitor.replay import RuleSummary

POINTS = 1600
MAX_CHARTS = 60
MAX_LISTED = 2000
MAX_MARKERS = 1000  # a chart's alerts marked one by one; past it, grouped:
LANE_MARKERS = 250  # at most so many markers per lane (4 px apart: a marker is 8 wide)
COLORS = {
    "streak": "#2da44e", "surge": "#e16f24", "squeeze": "#bf3989", "rotation": "#1b7c83",
    "drawdown": "#8250df", "breadth": "#0969da", "movers": "#9a6700", "fade": "#cf222e",
}  # fmt: skip
W, LEFT, RIGHT, TOP, PLOT_H, LANE_H, AXIS_H = 1100, 8, 70, 10, 260, 26, 26


def downsample(values: Sequence[float], target: int = POINTS) -> list[int]:
    """Indices of `values` to draw: all when few, else the first, the last and the min and max
    of each of `target // 2` buckets, in order."""
    n = len(values)
    if n <= target:
        return list(range(n))
    buckets = max(1, target // 2)
    keep = {0, n - 1}
    for b in range(buckets):
        segment = range(b * n // buckets, (b + 1) * n // buckets)
        if segment:
            keep.add(min(segment, key=values.__getitem__))
            keep.add(max(segment, key=values.__getitem__))
    return sorted(keep)


_KEYS_AND_TITLE = ["title", "period", "order"]  # (not shown: the sort keys and the title)


class ReportAlerts:
    """A replay's alerts as the report shows them, a row of a few short fields each (WORDS_SCHEMA,
    without `title`), in the alerts' order: taken from each step's firing frames (in a replay,
    the same as its alerts: see `Step`), whose payloads are never built nor decoded. A replay
    of a universe makes hundreds of thousands, each payload up to 30 KB (its `prior_dates`):
    as Alerts they took 15 GB."""

    def __init__(self, ctx: RuleContext) -> None:
        self._ctx = ctx
        self._parts: list[pl.DataFrame] = []

    def add(self, step: Step) -> None:
        """Take in a step's alerts."""
        for rule, fired in step.firings:
            if fired.height:
                self._parts.append(alert_words(fired, rule, self._ctx).drop("title"))

    def frame(self) -> pl.DataFrame:
        """Every alert taken in, in order (by `ts`, period, rule, rank or symbol, and id, as
        replay prints them: `LINE_ORDER`)."""
        if not self._parts:
            return empty(WORDS_SCHEMA).drop(_KEYS_AND_TITLE)
        return pl.concat(self._parts).sort(LINE_ORDER).drop(_KEYS_AND_TITLE[1:])


class Mark(NamedTuple):
    """An alert as a chart marks it."""

    session: str  # YYYY-MM-DD
    rule: str
    kind: str
    variant: str  # "" for a rule without variants
    text: str

    @property
    def lane(self) -> str:
        """The chart lane: the rule, and the variant when the rule has several."""
        return f"{self.rule} · {self.variant}" if self.variant else self.rule


class Marker(NamedTuple):
    """What a chart draws for one alert, or for `alerts` alerts of a lane close together."""

    at: int  # the (first) alert's session, as a position among the chart's sessions
    mark: Mark  # the (first) alert
    alerts: int
    tip: str


def markers(marks: Sequence[Mark], index: dict[str, int], n: int) -> tuple[list[Marker], int]:
    """The markers of a chart of `n` sessions (`index`: session -> position) for `marks`, and
    the sessions each spans: one per alert (1) up to MAX_MARKERS alerts; past it, in each lane
    one for the alerts of each run of `step` sessions (at most LANE_MARKERS a lane), at the
    first of them, saying how many and from when to when. The markers overlap past about that
    many in a lane anyway; one per alert, 120,000 alerts made a 40 MB page. Alerts of sessions
    not in `index` are left out."""
    placed = [(index[m.session], m) for m in marks if m.session in index]
    if len(placed) <= MAX_MARKERS:
        return [Marker(at, m, 1, f"{m.session} · {m.rule}: {m.text}") for at, m in placed], 1
    step = math.ceil(n / LANE_MARKERS)
    groups: dict[tuple[str, int], list[tuple[int, Mark]]] = {}
    for at, m in placed:
        groups.setdefault((m.lane, at // step), []).append((at, m))
    out = []
    for members in groups.values():
        (at, first), (_, last) = min(members), max(members)
        if len(members) == 1:
            tip = f"{first.session} · {first.rule}: {first.text}"
        else:
            tip = f"{first.session} to {last.session} · {first.lane}: {len(members):,} alerts"
        out.append(Marker(at, first, len(members), tip))
    return sorted(out, key=lambda k: (k.at, k.mark.lane)), step


def chart(
    symbol: str, sessions: Sequence[dt.date], closes: Sequence[float], drawn: Sequence[Marker]
) -> str:
    """An SVG of `closes` (log scale when they span more than 4x) with the alerts of `symbol`
    (`markers`, over `sessions`) as markers in their rule's lane, plus a tick on the line."""
    n = len(closes)
    lanes = sorted({d.mark.lane for d in drawn})
    height = TOP + PLOT_H + AXIS_H + LANE_H * len(lanes) + 6
    lo, hi = min(closes), max(closes)
    log = lo > 0 and hi / lo > 4
    f = math.log if log else float
    y0, y1 = f(lo), f(hi)
    pad = (y1 - y0) * 0.04 or 1.0
    y0, y1 = y0 - pad, y1 + pad

    def x(i: int) -> float:
        return LEFT + (i * (W - LEFT - RIGHT) / (n - 1) if n > 1 else 0.0)

    def y(v: float) -> float:
        return TOP + (y1 - f(v)) * PLOT_H / (y1 - y0)

    out = [
        f'<svg viewBox="0 0 {W} {height}" role="img" aria-label="{escape(symbol)}: closes '
        f'and {_count(sum(d.alerts for d in drawn), "alert")}" data-symbol="{escape(symbol)}">'
    ]
    for v in _ticks(lo, hi, log):
        out.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{W - RIGHT + 6}" y="{y(v) + 4:.1f}">{_price(v)}</text>'
        )
    axis_y = TOP + PLOT_H
    for i, year in _years(sessions):
        out.append(
            f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{axis_y}" y2="{axis_y + 4}" class="axis"/>'
            f'<text x="{x(i):.1f}" y="{axis_y + 16}" text-anchor="middle">{year}</text>'
        )
    points = " ".join(f"{x(i):.1f},{y(closes[i]):.1f}" for i in downsample(closes))
    out.append(f'<polyline points="{points}" class="line"/>')
    lane_y = {name: axis_y + AXIS_H + LANE_H * k + LANE_H / 2 for k, name in enumerate(lanes)}
    for name, ly in lane_y.items():
        out.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{ly}" y2="{ly}" class="lane"/>'
            f'<text x="{LEFT}" y="{ly - 8}" class="lane-name">{escape(name)}</text>'
        )
    for at, m, alerts, tip in drawn:
        color = COLORS.get(m.kind, "#57606a")
        many = f' data-alerts="{alerts}"' if alerts > 1 else ""
        out.append(
            f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{y(closes[at]) - 7:.1f}" '
            f'y2="{y(closes[at]) + 7:.1f}" stroke="{color}" class="alert-tick"/>'
            f'<circle cx="{x(at):.1f}" cy="{lane_y[m.lane]}" r="4" fill="{color}" '
            f'class="alert-marker" data-rule="{escape(m.rule)}" data-session="{m.session}"'
            f"{many}><title>{escape(tip)}</title></circle>"
        )
    out.append("</svg>")
    return "".join(out)


def forward_table(followed: Sequence[RuleSummary]) -> str:
    """What followed the alerts per rule, symbol and variant (`Summary.by_symbol`)."""
    rows: list[str] = []
    for s in followed:
        if not s.outcomes:
            continue
        label = f"{s.rule.id} · {s.variant}" if s.variant else s.rule.id
        span = len(s.outcomes)
        for j, o in enumerate(s.outcomes):
            head = (
                f'<td rowspan="{span}" class="rule">{escape(label)}</td>'
                f'<td rowspan="{span}">{escape(s.symbol)}</td>'
                f'<td rowspan="{span}" class="num">{s.alerts:,}</td>'
                if j == 0
                else ""
            )
            rows.append(
                f'<tr class="{"first" if j == 0 else ""}">{head}'
                f'<td class="num">{o.periods} {unit(s.rule.timeframe, o.periods)}</td>'
                f'<td class="num">{o.known:,}</td>'
                f"{_pct_cell(o.mean)}{_pct_cell(o.median)}"
                f'<td class="num">{_share(o.up)}</td>'
                f"{_pct_cell(o.worst)}{_pct_cell(o.best)}</tr>"
            )
    if not rows:
        return '<p class="muted">No alert has forward returns yet.</p>'
    return (
        '<table class="fwd"><thead><tr><th>Rule</th><th>Symbol</th><th>Alerts</th>'
        "<th>Horizon</th><th>n</th><th>Mean</th><th>Median</th><th>Up</th><th>Worst</th>"
        "<th>Best</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def rules_table(summaries: Sequence[RuleSummary]) -> str:
    """The section of what followed, per rule over all its symbols, its alerts and any period
    (`monitor.replay.Summary`)."""
    rows: list[str] = []
    for s in summaries:
        variant = f", {escape(s.variant)}" if s.variant else ""
        label = (
            f"{escape(s.rule.id)} <small>{escape(kind_of(s.rule))}, {s.rule.timeframe}"
            f"{variant}</small>"
        )
        if not s.alerts or not s.outcomes:
            said = "no alerts" if not s.alerts else f"{s.alerts:,} alerts, no horizons"
            rows.append(
                f'<tr class="first"><td class="rule">{label}</td>'
                f'<td colspan="12" class="muted">{said}</td></tr>'
            )
            continue
        span = len(s.outcomes)
        head = (
            f'<td rowspan="{span}" class="rule">{label}</td>'
            f'<td rowspan="{span}" class="num">{s.alerts:,}</td>'
            f'<td rowspan="{span}" class="num">{s.symbols:,}</td>'
        )
        for j, o in enumerate(s.outcomes):
            rows.append(
                f'<tr class="{"first" if j == 0 else ""}">{head if j == 0 else ""}'
                f'<td class="num">{o.periods} {unit(s.rule.timeframe, o.periods)}</td>'
                f'<td class="num">{o.known:,}</td>{_pct_cell(o.mean)}{_pct_cell(o.median)}'
                f'<td class="num">{_share(o.up)}</td>{_pct_cell(o.worst)}{_pct_cell(o.best)}'
                f'<td class="num any">{o.any_known:,}</td>{_pct_cell(o.any_mean)}'
                f'<td class="num">{_share(o.any_up)}</td></tr>'
            )
    return (
        "<section><h2>What followed, per rule</h2>"
        '<p class="muted">Over all its symbols: the return from each alert\'s close to the close'
        " that many periods later (n: the alerts whose horizon the history covers), beside the"
        " same from every period of the series the rule watches, alert or not: what the alerts"
        ' are to beat.</p><div class="scroll"><table class="rules"><thead><tr><th>Rule</th>'
        "<th>Alerts</th><th>Symbols</th><th>Horizon</th><th>n</th><th>Mean</th><th>Median</th>"
        '<th>Up</th><th>Worst</th><th>Best</th><th class="any">Any period: n</th><th>Mean</th>'
        "<th>Up</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div></section>"
    )


def report_html(
    bars: pl.DataFrame,
    alerts: pl.DataFrame,
    *,
    rules_path: str,
    start: dt.date | None = None,
    summaries: Sequence[RuleSummary] = (),
    followed: Sequence[RuleSummary] = (),
) -> str:
    """The whole report page for a replay of `bars` that gave `alerts` (`ReportAlerts.frame`)
    and, per rule, the `summaries` of what followed them, over all its symbols and on each
    (`followed`: `Summary.by_symbol`)."""
    if start is not None:
        bars = bars.filter(pl.col("session") >= start)
    per_symbol = dict(alerts.group_by("symbol").len().iter_rows())
    symbols = bars.get_column("symbol").unique().to_list()
    charted = sorted((s for s in symbols if s in per_symbol), key=lambda s: (-per_symbol[s], s))
    if not charted:
        charted = sorted(symbols)[:4]
    left_out = charted[MAX_CHARTS:]
    charted = charted[:MAX_CHARTS]
    marks: dict[str, list[Mark]] = {}
    picked = alerts.filter(pl.col("symbol").is_in(charted))
    columns = ("symbol", "session", "rule", "kind", "variant", "text")
    for symbol, *fields in picked.select(columns).iter_rows():
        marks.setdefault(symbol, []).append(Mark(*fields))
    charts: list[str] = []
    grouped = False
    for symbol in charted:
        part = bars.filter(pl.col("symbol") == symbol).sort("session")
        sessions = part.get_column("session").to_list()
        closes = part.get_column("close").to_list()
        if len(closes) < 2:
            continue
        mine = marks.get(symbol, [])
        kinds = sorted({m.kind for m in mine})
        legend = "".join(
            f'<span><i style="background:{COLORS.get(k, "#57606a")}"></i>{escape(k)}</span>'
            for k in kinds
        )
        index = {d.isoformat(): i for i, d in enumerate(sessions)}
        drawn, step = markers(mine, index, len(sessions))
        thinned = ""
        if step > 1:
            grouped = True
            thinned = (
                f", drawn as {_count(len(drawn), 'marker')}: in each lane, one for the alerts"
                f" of each {step:,} sessions, at the first of them (hover for how many)"
            )
        charts.append(
            f'<section class="chart"><h2>{escape(symbol)} <small>{sessions[0]} to '
            f"{sessions[-1]} · {len(closes):,} closes · {_count(len(mine), 'alert')}{thinned}"
            f'</small></h2><div class="legend">{legend}</div>'
            f"{chart(symbol, sessions, closes, drawn)}</section>"
        )
    note = ""
    if left_out:
        more = _count(len(left_out), "more symbol")
        note = f'<p class="muted">{more} with alerts {_is(len(left_out))} not charted.</p>'
    first = str(bars.get_column("session").min()) if bars.height else "–"
    last = str(bars.get_column("session").max()) if bars.height else "–"
    listed = "".join(
        f'<tr><td class="num">{session}</td><td>{escape(severity)}</td>'
        f"<td>{escape(rule)}</td><td>{escape(symbol)}</td><td>{escape(text)}</td></tr>"
        for session, severity, rule, symbol, text in alerts.head(MAX_LISTED)
        .select("session", "severity", "rule", "symbol", "text")
        .iter_rows()
    )
    total = _count(alerts.height, "alert")
    if alerts.height > MAX_LISTED:
        head = f"The first {MAX_LISTED:,} of {total} (replay prints them all)"
    else:
        head = f"All {total}" if alerts.height > 1 else total
    shown = [s for s in followed if s.symbol in charted] if left_out else followed
    return PAGE.format(
        title=escape(f"Replay report: {total}"),
        summary=escape(
            f"{total} from the rules in {rules_path}, over {bars.height:,} bars of "
            f"{_count(len(symbols), 'symbol')}, {first} to {last}."
        ),
        thinned=(
            f", except in a chart of more than {MAX_MARKERS:,} alerts, whose header says how"
            " they are grouped"
            if grouped
            else ""
        ),
        charts="".join(charts) + note,
        rules=rules_table(summaries) if summaries else "",
        forward=forward_table(shown),
        forward_left_out=(
            f" Symbols as charted: the other {len(left_out):,} with alerts are left out here"
            " (the table per rule counts them)."
            if left_out
            else ""
        ),
        listed_head=head,
        listed=listed,
    )


def _count(n: int, word: str) -> str:
    """`1 alert`, `2 alerts`, `120,051 alerts` (`word`'s last word takes the plural)."""
    return f"{n:,} {word}{'s' if n != 1 else ''}"


def _is(n: int) -> str:
    return "is" if n == 1 else "are"


def _pct_cell(value: float | None) -> str:
    if value is None:
        return '<td class="num muted">–</td>'
    shown = pct(value, signed=True)  # (as the summary and the alerts' text write it)
    cls = "" if shown == "+0.0%" else "pos" if value > 0 else "neg" if value < 0 else ""
    return f'<td class="num {cls}">{shown}</td>'


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _price(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Grid values: 1-2-5 steps on a log scale, round steps on a linear one."""
    if log:
        out = []
        for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
            out += [m * 10**exp for m in (1, 2, 5) if lo <= m * 10**exp <= hi]
        return out
    raw = (hi - lo) / 5 or abs(hi) or 1.0
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def _years(sessions: Sequence[dt.date]) -> list[tuple[int, int]]:
    """(index, year) of the first session of every labelled year (at most ~14 labels)."""
    firsts: list[tuple[int, int]] = []
    for i, d in enumerate(sessions):
        if i == 0 or d.year != sessions[i - 1].year:
            firsts.append((i, d.year))
    every = next(k for k in (1, 2, 5, 10, 20, 50) if len(firsts) / k <= 14)
    return [(i, y) for i, y in firsts if y % every == 0]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ margin: 0 auto; max-width: 1200px; padding: 16px; color: #1f2328; background: #fff;
  font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} h2 {{ font-size: 16px; margin: 0 0 6px; }}
small, .muted {{ color: #656d76; font-weight: 400; }}
.num {{ font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }}
section {{ margin: 18px 0; }}
.chart {{ border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 12px; }}
svg {{ display: block; width: 100%; height: auto; }}
svg text {{ font: 11px ui-monospace, Menlo, Consolas, monospace; fill: #656d76; }}
svg .grid {{ stroke: #eaeef2; }} svg .axis {{ stroke: #8c959f; }}
svg .line {{ fill: none; stroke: #0969da; stroke-width: 1.2; stroke-linejoin: round; }}
svg .lane {{ stroke: #eaeef2; }}
svg .lane-name {{ fill: #57606a; font-size: 10px; paint-order: stroke; stroke: #fff;
  stroke-width: 3px; }}
svg .alert-tick {{ stroke-width: 1.5; opacity: .8; }}
svg .alert-marker {{ stroke: #fff; stroke-width: 1; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: #656d76; }}
.legend i {{ display: inline-block; width: 9px; height: 9px; border-radius: 50%;
  margin-right: 5px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
th, td {{ padding: 4px 8px; border-bottom: 1px solid #eaeef2; text-align: left;
  vertical-align: top; }}
th {{ background: #f6f8fa; position: sticky; top: 0; }}
tr.first td {{ border-top: 1px solid #d0d7de; }} td.rule {{ font-weight: 600; }}
td.rule small {{ font-weight: 400; color: #656d76; }}
.any {{ border-left: 1px solid #d0d7de; }}
.pos {{ color: #1a7f37; }} .neg {{ color: #cf222e; }}
.scroll {{ overflow-x: auto; }}
details summary {{ cursor: pointer; font-weight: 600; }}
</style></head><body>
<h1>{title}</h1>
<p class="muted">{summary} Markers: one per alert, in a lane per rule under each chart
(hover for the text); the price line is downsampled for size, the markers are not{thinned}.</p>
{rules}
{charts}
<section><h2>What followed, per rule and symbol</h2>
<p class="muted">The alerts of this replay, symbol by symbol: the return from each alert's
close to the close that many periods later (n: the alerts whose horizon the history covers), as
per rule above, whose alerts and n a rule's rows add up to. An alert's own history (in its
payload) differs: it counts the episodes before it, those before --from too, and not
itself.{forward_left_out}</p>
<div class="scroll">{forward}</div></section>
<section><details><summary>{listed_head}</summary><div class="scroll"><table>
<thead><tr><th>Session</th><th>Severity</th><th>Rule</th><th>Symbol</th><th>Text</th></tr></thead>
<tbody>{listed}</tbody></table></div></details></section>
</body></html>
"""
