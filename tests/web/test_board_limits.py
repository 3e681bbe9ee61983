"""The board's data on a large universe and under abuse: /api/state's per-rule counts beside its
cut rows, /api/closes' limits, alert spans, and how the page writes counts and percentages."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from monitor.core.progress import Progress
from monitor.core.rules.context import pct
from monitor.core.rules.spec import DrawdownRule, Rule, StreakRule, SurgeRule
from monitor.http import HttpServer, json_route
from monitor.web import MAX_CHARTS, MAX_SYMBOLS, chart_symbols, closes_route, page_route, span
from monitor.web.state import MAX_ROWS, RULE_ROWS, StateView, nearest_first
from tests.notify.conftest import RUT_ALERT
from tests.web.chromium import Chromium, Page, find_chromium
from tests.web.test_watch import MEASURES

NOW = dt.datetime(2026, 2, 23, 21, 0, tzinfo=dt.UTC)
RULES: list[Rule] = [
    StreakRule(id="streak.wide", universe=True, count=3),
    SurgeRule(id="surge.wide", universe=True, description="every symbol has data"),
    DrawdownRule(id="drawdown.few", symbols=["IWM", "QQQ"], max_below_high=0.1),
    StreakRule(id="streak.none", symbols=["NOPE"]),
]


def row(rule: str, symbol: str, progress: float, variant: str = "") -> Progress:
    """One progress row: `progress` of the way (it holds at 1.0)."""
    return Progress(
        rule=rule, kind=rule.split(".")[0], symbol=symbol, variant=variant,
        session="2026-02-23", value=progress * 3, threshold=3.0, unit="periods",
        progress=progress, holds=progress >= 1.0,
    )  # fmt: skip


def universe() -> dict[str, list[Progress]]:
    """Progress as the engine keeps it (per rule, by symbol): 600 symbols nearer to firing on
    streak.wide (510 of them holding: more than /api/state carries) than any on surge.wide, and
    three symbols of drawdown.few in two variants each, furthest of all."""
    symbols = [f"S{i:04d}" for i in range(600)]
    variants = ("below_high", "near_high")
    return {
        "streak.wide": [row("streak.wide", s, 1.0 if i < 510 else 0.9)
                        for i, s in enumerate(symbols)],
        "surge.wide": [row("surge.wide", s, 0.5 - i / 10_000) for i, s in enumerate(symbols)],
        "drawdown.few": [row("drawdown.few", s, 0.1, v) for s in ("IWM", "QQQ", "SPY")
                         for v in variants],
    }  # fmt: skip


def document(progress: Mapping[str, Sequence[Progress]], view: StateView | None = None) -> Any:
    """/api/state of `progress` under RULES, as JSON would give it."""
    doc = (view or StateView()).document(NOW, RULES, progress, [RUT_ALERT])
    return msgspec.json.decode(msgspec.json.encode(doc))


def test_state_counts_every_rule_beside_the_rows_nearest_to_firing() -> None:
    """With more rows than /api/state carries, each rule still says how many symbols it has
    progress for, how many rows and how many hold; the rows are the 500 nearest to firing plus
    each rule's 5 nearest and its 5 nearest that do not hold, so no rule that has data comes out
    with none, nor with holders only (streak.wide's near misses at 0.9 under its 510)."""
    doc = document(universe())
    assert doc["rules"] == [
        {"id": "streak.wide", "kind": "streak", "timeframe": "1d", "description": "",
         "symbol_count": 600, "row_count": 600, "holding_count": 510, "stale_count": 0},
        {"id": "surge.wide", "kind": "surge", "timeframe": "1d",
         "description": "every symbol has data",
         "symbol_count": 600, "row_count": 600, "holding_count": 0, "stale_count": 0},
        {"id": "drawdown.few", "kind": "drawdown", "timeframe": "1d", "description": "",
         "symbol_count": 3, "row_count": 6, "holding_count": 0, "stale_count": 0},
        {"id": "streak.none", "kind": "streak", "timeframe": "1d", "description": "",
         "symbol_count": 0, "row_count": 0, "holding_count": 0, "stale_count": 0},
    ]  # fmt: skip
    rows = doc["progress"]
    per_rule = {r: sum(p["rule"] == r for p in rows) for r in ("streak.wide", "surge.wide")}
    assert per_rule == {"streak.wide": MAX_ROWS + RULE_ROWS, "surge.wide": RULE_ROWS}
    missing = [p["symbol"] for p in rows if p["rule"] == "streak.wide" and not p["holds"]]
    assert missing == ["S0510", "S0511", "S0512", "S0513", "S0514"]
    assert [p["symbol"] for p in rows if p["rule"] == "surge.wide"] == [
        "S0000", "S0001", "S0002", "S0003", "S0004",
    ]  # fmt: skip
    assert [(p["symbol"], p["variant"]) for p in rows if p["rule"] == "drawdown.few"] == [
        ("IWM", "below_high"), ("IWM", "near_high"), ("QQQ", "below_high"), ("QQQ", "near_high"),
        ("SPY", "below_high"),
    ]  # fmt: skip
    assert len(rows) == MAX_ROWS + 3 * RULE_ROWS
    progress = [p["progress"] for p in rows]
    assert progress == sorted(progress, reverse=True)
    assert [a["id"] for a in doc["alerts"]] == [RUT_ALERT.id]
    assert doc["now"] == "2026-02-23T21:00:00+00:00"


def test_state_cuts_as_a_sort_of_every_row_would() -> None:
    """Under the cut, the rows are those a sort of every row gives (`nearest_first`), in that
    order."""
    progress = universe()
    every = sorted((p for rows in progress.values() for p in rows), key=nearest_first)
    doc = StateView(max_rows=len(every)).document(NOW, RULES, progress, [])
    assert doc["progress"] == msgspec.to_builtins(every)


def test_state_counts_again_once_a_rule_has_new_rows() -> None:
    """A rule's counts and rows are kept between polls while the engine's rows are the same,
    and follow them once the engine gives the rule new ones."""
    view = StateView()
    progress = universe()
    assert document(progress, view)["rules"][0]["holding_count"] == 510
    progress["streak.wide"] = [row("streak.wide", "S0000", 1.0), row("streak.wide", "S0001", 0.2)]
    again = document(progress, view)
    assert [(r["row_count"], r["holding_count"]) for r in again["rules"][:1]] == [(2, 1)]
    assert [p["symbol"] for p in again["progress"] if p["rule"] == "streak.wide"] == [
        "S0000",
        "S0001",
    ]
    del progress["surge.wide"]
    assert document(progress, view)["rules"][1]["row_count"] == 0


def test_holders_come_first_then_near_misses_then_the_blocked() -> None:
    """Rows that hold come first, then those that do not by progress, those with only their
    measure to go (a real near miss: 3 of 4) before the blocked ones, however close these
    read; stale rows last."""
    near = row("streak.wide", "NEAR", 0.75)
    blocked = msgspec.structs.replace(row("surge.wide", "BLOCKED", 0.99), blocked="not up")
    old = msgspec.structs.replace(row("surge.wide", "OLD", 0.99), stale=True)
    progress = {"streak.wide": [near, row("streak.wide", "HOLDS", 1.0)],
                "surge.wide": [old, blocked, row("surge.wide", "FAR", 0.2)]}  # fmt: skip
    order = [p["symbol"] for p in document(progress)["progress"]]
    assert order == ["HOLDS", "NEAR", "FAR", "BLOCKED", "OLD"]


def test_charts_go_to_holders_and_near_misses_before_the_blocked() -> None:
    """The board charts the symbols of holding rows and real near misses before those of rows
    that read as close but are blocked (a squeeze without short interest)."""
    blocked = msgspec.structs.replace(row("surge.wide", "AAA", 0.99), blocked="not up")
    progress = {"streak.wide": [row("streak.wide", "ZZZ", 0.5), row("streak.wide", "MMM", 1.0)],
                "surge.wide": [blocked]}  # fmt: skip
    assert chart_symbols([], progress, RULES) == ["MMM", "ZZZ", "AAA", "IWM", "QQQ", "NOPE"]


def test_stale_rows_come_after_live_ones_and_are_not_counted_as_holding() -> None:
    """A symbol that missed the rule's latest session (a stale row, however far along it was)
    comes after every live row of every rule, is not among the rule's holders and is counted
    as stale."""
    stale = msgspec.structs.replace(
        row("streak.wide", "OLD", 1.0), session="2026-02-20", holds=False, stale=True
    )
    progress = {"streak.wide": [row("streak.wide", "NEW", 0.3), stale],
                "surge.wide": [row("surge.wide", "LOW", 0.1)]}  # fmt: skip
    doc = document(progress)
    assert [(p["symbol"], p["stale"]) for p in doc["progress"]] == [
        ("NEW", False), ("LOW", False), ("OLD", True),
    ]  # fmt: skip
    counts = [(r["id"], r["holding_count"], r["stale_count"]) for r in doc["rules"][:2]]
    assert counts == [("streak.wide", 0, 1), ("surge.wide", 0, 0)]


def test_closes_asks_for_each_symbol_once_and_refuses_too_many() -> None:
    """`?symbol=` names each symbol once, in the order first given (9,000 copies of ^RUT ask for
    one chart); more than MAX_SYMBOLS distinct symbols are a 400 whose JSON says so, and the
    charts are not made; `?sessions=` is ASCII digits or a 400; the board, which names none,
    gets its charts."""
    asked: list[tuple[Sequence[str] | None, int]] = []

    def produce(symbols: Sequence[str] | None, sessions: int) -> dict[str, Any]:
        asked.append((symbols, sessions))
        return {"symbols": []}

    route = closes_route(produce)
    assert route({"symbol": ",".join(["^RUT"] * 9_000), "sessions": "5000"})[0] == 200
    assert route({"symbol": "QQQ, IWM,QQQ,,^RUT,IWM"})[0] == 200
    assert route({})[0] == 200
    assert asked == [(["^RUT"], 5000), (["QQQ", "IWM", "^RUT"], 120), (None, 120)]
    many = ",".join(f"S{i}" for i in range(MAX_SYMBOLS + 1))
    assert route({"symbol": many}) == (
        400,
        "application/json",
        json.dumps(
            {"error": f"symbol names {MAX_SYMBOLS + 1} symbols; at most {MAX_SYMBOLS} "
             "in one request"}, separators=(",", ":"),
        ).encode(),
    )  # fmt: skip
    assert route({"sessions": "0"})[:2] == (400, "application/json")
    for other in ("\u0663", "+3", " 3", "3_0", "3.0"):  # (an Arabic-Indic 3 was taken for 3)
        assert route({"sessions": other})[:2] == (400, "application/json")
    assert len(asked) == 3
    assert route({"symbol": ",".join(f"S{i}" for i in range(MAX_SYMBOLS))})[0] == 200
    assert MAX_CHARTS * 4 <= MAX_SYMBOLS  # (what `chart_symbols` looks through)


def test_a_minute_alert_spans_its_session_on_the_daily_chart() -> None:
    """On the daily chart a streak spans its run (a weekly one five sessions a week), a surge
    its window, anything else its session; a minute streak of 4 lies in one session."""
    streak = msgspec.structs.replace(RUT_ALERT, metrics={"streak": 4})
    weekly = msgspec.structs.replace(streak, timeframe="1w")
    minute = msgspec.structs.replace(streak, timeframe="1m")
    cases = [
        (streak, StreakRule(id="s.1d"), 4),
        (weekly, StreakRule(id="s.1w", timeframe="1w"), 20),
        (minute, StreakRule(id="s.1m", timeframe="1m"), 1),
        (minute, SurgeRule(id="u.1m", timeframe="1m"), 1),
        (streak, SurgeRule(id="u.1d", window=7), 7),
        (streak, None, 1),
    ]  # fmt: skip
    assert [span(alert, rule) for alert, rule, _ in cases] == [want for *_, want in cases]


# ---------------------------------------------------------------------------- the page itself
PCT_VALUES = [
    -0.0004, 0.0004, 0.0, -0.0, 0.00049, 0.0005, 0.0015, -0.0015, 0.0025, -0.0025, 0.00051,
    -0.00051, 0.115, -0.073, 1.0, 12.3456, -0.99999, 0.1,
]  # fmt: skip


def state_document() -> dict[str, Any]:
    """/api/state of a large universe, as the daemon gives it."""
    doc: dict[str, Any] = document(universe())
    return doc


def closes_document() -> dict[str, Any]:
    """Two charts: one of a single close, one whose last session moved -0.04%."""
    return {
        "symbols": [
            {"symbol": "ONE", "sessions": ["2026-02-23"], "closes": [10.0], "alerts": []},
            {"symbol": "FLAT", "sessions": ["2026-02-20", "2026-02-23"],
             "closes": [100.0, 99.96], "alerts": []},
        ]
    }  # fmt: skip


@contextlib.asynccontextmanager
async def board_of(tmp_path: Path, state: Callable[[], dict[str, Any]]) -> AsyncIterator[Page]:
    """The board page in headless Chromium, served with `state()` as /api/state and fixed
    /api/closes (the test skips when no Chromium is installed)."""
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    closes = closes_document()
    routes = {"/": page_route, "/api/state": json_route(state)}
    query = {"/api/closes": lambda params: (200, "application/json", json.dumps(closes).encode())}
    async with (
        HttpServer("127.0.0.1", 0, routes, query) as server,
        Chromium(tmp_path, executable) as chromium,
    ):
        page = await chromium.page(f"http://127.0.0.1:{server.port}/")
        try:
            await page.wait_for("document.querySelectorAll('.chart').length === 2")
            yield page
        finally:
            await page.close()


@pytest.fixture
async def board(tmp_path: Path) -> AsyncIterator[Page]:
    """The board of a large universe (`state_document`)."""
    async with board_of(tmp_path, state_document) as page:
        yield page


def card_more(rule: str) -> str:
    """JS: the text under a rule's card."""
    return f"document.querySelector('.rule[data-rule=\"{rule}\"] .more').textContent"


@pytest.mark.integration
async def test_board_counts_each_rule_from_its_own_counts(board: Page) -> None:
    """On a universe larger than /api/state carries, each rule card says how many more symbols
    and how many hold from the rule's counts, shows its nearest rows (no "no data yet" for a
    rule that has data) and the holding chips say how many more hold than they show."""
    assert await board.evaluate(card_more("streak.wide")) == "+ 595 more symbols · 510 hold now"
    assert await board.evaluate(card_more("surge.wide")) == "+ 595 more symbols"
    assert await board.evaluate(card_more("drawdown.few")) == "+ 1 more (3 symbols in all)"
    assert await board.evaluate(card_more("streak.none")) == ""
    shown = "document.querySelectorAll('.rule[data-rule=\"surge.wide\"] .prow').length"
    assert await board.evaluate(shown) == RULE_ROWS
    empty = (
        "[...document.querySelectorAll('.rule .rows .empty')]"
        ".map(e => e.closest('.rule').dataset.rule)"
    )
    assert await board.evaluate(empty) == ["streak.none"]
    assert await board.evaluate("document.querySelectorAll('#holding .chip').length") == MAX_ROWS
    assert await board.evaluate("document.querySelector('#holding-more').textContent") == (
        "+ 10 more"
    )
    assert board.errors == []


@pytest.mark.integration
async def test_board_writes_percentages_as_the_alerts_do(board: Page) -> None:
    """The board's percentages read as alert texts write them (a -0.04% move is "+0.0%",
    halves round to even), none is "n/a" and neither is styled as a rise or a fall; a chart of
    one close says "in 1 session"."""
    got = await board.evaluate(f"JSON.stringify({json.dumps(PCT_VALUES)}.map(pct1))")
    assert json.loads(got) == [pct(x, signed=True) for x in PCT_VALUES]
    assert (
        await board.evaluate("[pct1(null), pct1(undefined), pct1(NaN), pct1(Infinity)]")
        == ["n/a"] * 4
    )
    heads = await board.evaluate(
        "[...document.querySelectorAll('.chart h3 .chg')].map(e => [e.className, e.textContent])"
    )
    assert heads == [
        ["chg num ", "n/a"],
        ["chg num muted", "+0.0% in 1 session"],
        ["chg num ", "+0.0%"],
        ["chg num muted", "+0.0% in 2 sessions"],
    ]
    assert board.errors == []


@pytest.mark.integration
async def test_board_shows_a_stale_row_with_its_date(tmp_path: Path) -> None:
    """A stale row (its symbol missed the rule's latest session) reads its session beside its
    measure, in grey, and is neither a holding chip nor hot."""
    old = msgspec.structs.replace(
        row("streak.wide", "OLD", 0.9), value=2.0, session="2026-02-20", stale=True
    )
    state = document({"streak.wide": [row("streak.wide", "NEW", 0.3), old]})
    async with board_of(tmp_path, lambda: state) as page:
        near = '#nearest .prow[data-symbol="OLD"]'
        assert await page.wait_for(f"document.querySelector('{near} .val')?.textContent") == (
            "2 of 3 · as of 2026-02-20"
        )
        assert await page.evaluate(f"document.querySelector('{near}').className") == "prow stale"
        assert await page.evaluate("document.querySelectorAll('#holding .chip').length") == 0
        assert page.errors == []


@pytest.mark.integration
async def test_board_says_what_blocks_a_row_and_keeps_near_misses_on_a_card(
    tmp_path: Path,
) -> None:
    """A blocked row reads what blocks it beside its measure, striped grey, and comes under
    "Nearest to firing" after the real near misses however close it reads; the card of a rule
    that many symbols hold shows three of them and its two nearest that do not."""
    blocked = msgspec.structs.replace(
        row("surge.wide", "BLOCKED", 0.99), value=1.0, blocked="not up"
    )
    holders = [row("streak.wide", f"S{i:04d}", 1.0) for i in range(10)]
    near = [row("streak.wide", "NEAR1", 0.75), row("streak.wide", "NEAR2", 0.5)]
    state = document({"streak.wide": [*holders, *near], "surge.wide": [blocked]})
    async with board_of(tmp_path, lambda: state) as page:
        symbols = "[...document.querySelectorAll('{} .prow')].map(e => e.dataset.symbol)"
        assert await page.wait_for(symbols.format("#nearest")) == ["NEAR1", "NEAR2", "BLOCKED"]
        card = symbols.format('.rule[data-rule="streak.wide"]')
        assert await page.evaluate(card) == ["S0000", "S0001", "S0002", "NEAR1", "NEAR2"]
        shown = '#nearest .prow[data-symbol="BLOCKED"]'
        assert await page.evaluate(f"document.querySelector('{shown} .val').textContent") == (
            "1 of 3 · not up"
        )
        assert await page.evaluate(f"document.querySelector('{shown}').className") == (
            "prow blocked"
        )
        assert page.errors == []


@pytest.mark.integration
async def test_board_turns_amber_when_degraded_or_behind_and_red_when_down(
    tmp_path: Path,
) -> None:
    """The header says "live" only while the daemon is healthy with current bars: amber with
    /healthz's reasons when degraded and with the newest bar's date when sessions behind, red
    when down, each as the next poll has it."""
    healthy = {"health": {"status": "healthy", "reasons": []}, "sessions_behind": 0}
    states = [document(universe()) | healthy]
    status = "(s => s.className + ' | ' + s.textContent)(document.querySelector('#status'))"
    async with board_of(tmp_path, lambda: states[-1]) as page:
        assert await page.wait_for(status) == "live | live · every 2 s"
        states.append(
            states[0]
            | {"health": {"status": "degraded", "reasons": ["feed broker stale"]},
               "sessions_behind": 600, "latest_bar": "2024-07-12T20:00:00+00:00"}
        )  # fmt: skip
        warn = "warn | degraded: feed broker stale · data from 2024-07-12, 600 sessions behind"
        assert await page.wait_for(f"{status} === {json.dumps(warn)} && {status}") == warn
        states.append(states[0] | {"health": {"status": "down", "reasons": ["engine stalled"]}})
        down = "down | down: engine stalled"
        assert await page.wait_for(f"{status} === {json.dumps(down)} && {status}") == down
        assert page.errors == []


@pytest.mark.integration
async def test_board_writes_a_share_without_a_sign_and_a_spread_in_points(board: Page) -> None:
    """The board reads breadth's share as a share and a rotation's spread in percentage points,
    as watch does (`MEASURES`)."""
    got = await board.evaluate(
        f"JSON.stringify({json.dumps([p for p, _ in MEASURES])}.map(p => measure(p).join(' ')))"
    )
    assert json.loads(got) == [want for _, want in MEASURES]
    assert board.errors == []


def test_state_lists_the_latest_movers_rank_first_under_newest_first() -> None:
    """/api/state's alerts are newest first by instant, but the alerts of one instant keep
    the order they fired in: a session's movers #1, #2, #3 (then a surge of that session),
    after them the day before's. (The whole list was reversed: #3 first, and `watch`'s 8
    latest of a top 10 showed #10 to #3.)"""
    old = msgspec.structs.replace(RUT_ALERT, id="old", ts="2024-07-15T20:00:00Z")
    now = [
        msgspec.structs.replace(RUT_ALERT, id=i, ts="2024-07-16T20:00:00Z")
        for i in ("mv#1", "mv#2", "mv#3", "surge")
    ]
    doc = StateView().document(NOW, RULES, {}, [old, *now])
    assert [a["id"] for a in doc["alerts"]] == ["mv#1", "mv#2", "mv#3", "surge", "old"]
