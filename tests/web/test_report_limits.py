"""`replay --report` with many alerts, one alert, or a `--from`: what the page says adds up."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from monitor.cli import load_rules, main
from monitor.core.sessions import Sessions
from monitor.replay import build_engine, replay, replay_steps
from monitor.web.report import (
    LANE_MARKERS,
    MAX_LISTED,
    MAX_MARKERS,
    Mark,
    ReportAlerts,
    markers,
)
from tests.conftest import RULES, RUT
from tests.core.test_two_paths import history

EVERY_UP_DAY = '[[rules]]\nid = "streak.one"\nkind = "streak"\nuniverse = true\ncount = 1\n'
BIG_UP_DAY = EVERY_UP_DAY + "min_return = 0.05\n"


def report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: str, csv: str, *args: str
) -> str:
    """The report of a replay of `rules` over `csv` (a file with a symbol column)."""
    (tmp_path / "rules.toml").write_text(rules)
    (tmp_path / "bars.csv").write_text(csv)
    out = tmp_path / "report.html"
    argv = ["replay", "--rules", str(tmp_path / "rules.toml"), "--data", str(tmp_path / "bars.csv")]
    assert main([*argv, "--format", "summary", "--report", str(out), *args]) == 0
    capsys.readouterr()
    return out.read_text()


def zigzag(sessions: Sessions, symbols: list[str], n: int) -> str:
    """`n` sessions from 2000 of each of `symbols`, closing 100, 102, 100, ...: up 2% every
    other session, so a streak of one (more than 1% up) fires n / 2 times on each."""
    between = sessions.between(dt.date(2000, 1, 3), dt.date(2030, 1, 1))
    days = between.get_column("session").head(n).to_list()
    rows = [f"{s},{d},{100 + 2 * (i % 2)}" for s in symbols for i, d in enumerate(days)]
    return "symbol,date,close\n" + "\n".join(rows) + "\n"


def test_report_rows_are_the_alerts_replay_prints(sessions: Sessions) -> None:
    """The report's rows, taken from the firings without building a payload, are the alerts a
    replay prints: same ids, order, sessions, severities, rules, symbols, variants and text."""
    rules = load_rules(RULES)
    engine = build_engine(rules, sessions)  # type: ignore[arg-type]
    shown = ReportAlerts(engine.ctx)
    for step in replay_steps(engine, history(), deferred=True):
        shown.add(step)
    printed = list(replay(build_engine(rules, sessions), history()))  # type: ignore[arg-type]
    assert len(printed) > 20 and len({a.kind for a in printed}) >= 5
    assert any(a.metrics.get("variant") for a in printed)
    rows = shown.frame().select("id", "session", "severity", "rule", "kind", "symbol", "variant")
    assert rows.rows() == [
        (a.id, a.session, a.severity, a.rule, a.kind, a.symbol, a.metrics.get("variant", ""))
        for a in printed
    ]
    assert shown.frame().get_column("text").to_list() == [a.text for a in printed]


def test_markers_past_the_limit_are_grouped_per_lane_and_count_every_alert() -> None:
    """A chart of 3,000 alerts in two lanes over 6,000 sessions draws a marker per lane and
    run of 24 sessions with alerts (at most LANE_MARKERS a lane), each at its first alert
    saying how many; every alert is in one. A chart of MAX_MARKERS alerts or fewer has a
    marker per alert with its text."""
    days = [dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(6000)]
    index = {d.isoformat(): i for i, d in enumerate(days)}
    marks = [Mark(days[i].isoformat(), "s", "streak", "", f"up {i}") for i in range(0, 6000, 4)]
    marks += [Mark(days[i].isoformat(), "d", "drawdown", "near_high", "x") for i in range(1500)]
    drawn, step = markers(marks, index, len(days))
    assert step == 24 and len(drawn) == LANE_MARKERS + 63
    assert sum(d.alerts for d in drawn) == len(marks) == 3000
    assert [(d.at, d.alerts, d.tip) for d in drawn[:2]] == [
        (0, 24, "2000-01-01 to 2000-01-24 · d · near_high: 24 alerts"),
        (0, 6, "2000-01-01 to 2000-01-21 · s: 6 alerts"),
    ]
    assert drawn[-1].tip == f"{days[5976]} to {days[5996]} · s: 6 alerts"  # (the last run)
    few, step = markers(marks[:MAX_MARKERS], index, len(days))
    assert step == 1 and len(few) == MAX_MARKERS and {d.alerts for d in few} == {1}
    assert [d.tip for d in few[:2]] == ["2000-01-01 · s: up 0", "2000-01-05 · s: up 4"]


def test_a_report_of_thousands_of_alerts_lists_the_first_and_groups_the_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sessions: Sessions
) -> None:
    """A replay with more alerts than the report lists or draws one by one says so: its title
    and counts with thousands separators, the list as the first MAX_LISTED of them all, the
    chart's markers grouped (each alert in one) and its header saying how."""
    html = report(tmp_path, capsys, EVERY_UP_DAY, zigzag(sessions, ["Z"], 4300))
    assert "<title>Replay report: 2,150 alerts</title>" in html
    assert '<p class="muted">2,150 alerts from the rules in ' in html
    assert (
        f"<summary>The first {MAX_LISTED:,} of 2,150 alerts (replay prints them all)</summary>"
        in html
    )
    listed = html[html.index("<details>") :]
    assert listed.count("<tr><td") == MAX_LISTED
    assert '<tr><td class="num">2000-01-04</td><td>notice</td><td>streak.one</td>' in listed
    drawn = re.findall(r'class="alert-marker" [^>]*?(?:data-alerts="(\d+)")?>', html)
    assert [int(n or 1) for n in drawn] == [9] * 238 + [8]  # (18 sessions: 9 up, 9 down)
    assert (
        "4,300 closes · 2,150 alerts, drawn as 239 markers: in each lane, one for the alerts of"
        " each 18 sessions, at the first of them (hover for how many)</small>"
    ) in html
    assert (
        "except in a chart of more than 1,000 alerts, whose header says how they are grouped"
        in html
    )
    assert len(html) < 500_000


def test_one_alert_is_one_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A report of one alert says "1 alert" in its title, its first line, the chart's header
    and the list; a symbol left out of the charts is "1 more symbol"."""
    csv = "symbol,date,close\nX,2024-07-01,10\nX,2024-07-02,10\nX,2024-07-03,11\n"
    html = report(tmp_path, capsys, BIG_UP_DAY, csv)
    assert "<title>Replay report: 1 alert</title>" in html
    assert '<p class="muted">1 alert from the rules in ' in html
    assert "3 closes · 1 alert</small>" in html and 'closes and 1 alert"' in html
    assert "<summary>1 alert</summary>" in html
    assert "1 symbol, 2024-07-01 to 2024-07-03." in html
    many = ["symbol,date,close"] + [
        f"S{k:02d},2024-07-0{d},{10 + (d == 3)}" for k in range(61) for d in (1, 2, 3)
    ]
    html = report(tmp_path, capsys, BIG_UP_DAY, "\n".join(many) + "\n")
    assert "1 more symbol with alerts is not charted." in html
    assert "the other 1 with alerts are left out here" in html


def outcomes(html: str, table: str) -> dict[str, tuple[str, list[list[str]]]]:
    """The `rules` or `fwd` table of what followed as rule (and variant) -> its alerts, and
    per horizon: horizon, n, mean, median, up, worst, best (rules without alerts left out)."""
    found = re.search(rf'<table class="{table}">.*?</table>', html, flags=re.S)
    assert found is not None
    out: dict[str, tuple[str, list[list[str]]]] = {}
    key = ""
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", found[0]):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
        if cells and 'class="rule"' in tr:
            if table == "rules":  # "drawdown.high drawdown, 1d, below_high", alerts, symbols
                rule, _, words = cells[0].partition(" ")
                variant = words.split(", ")[2] if words.count(", ") == 2 else ""
                alerts, cells = cells[1], cells[3:]
            else:  # "drawdown.high · below_high", symbol, alerts
                rule, _, variant = cells[0].partition(" · ")
                alerts, cells = cells[2], cells[3:]
            key = f"{rule} {variant}".strip() if alerts != "no alerts" else ""
            if key:
                out[key] = (alerts, [])
        if key and cells:
            out[key][1].append(cells[:7])
    return out


def test_what_followed_per_symbol_agrees_with_per_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --from 2024-01-01, the table per rule and symbol says what the table per rule
    says of ^RUT alone: the alerts of the replay and what followed them (it used to take the
    history of each last alert, episodes before --from included: "1 alert, n 4")."""
    out = tmp_path / "from.html"
    argv = ["replay", "--rules", str(RULES), "--data", f"^RUT={RUT}", "--from", "2024-01-01"]
    assert main([*argv, "--to", "2024-12-31", "--format", "summary", "--report", str(out)]) == 0
    capsys.readouterr()
    html = out.read_text()
    per_rule, per_symbol = outcomes(html, "rules"), outcomes(html, "fwd")
    assert per_rule["streak.daily"] == ("1", [
        ["5 sessions", "1", "-0.9%", "-0.9%", "0%", "-0.9%", "-0.9%"],
        ["21 sessions", "1", "-7.9%", "-7.9%", "0%", "-7.9%", "-7.9%"],
        ["63 sessions", "1", "-0.7%", "-0.7%", "0%", "-0.7%", "-0.7%"],
    ])  # fmt: skip
    assert len(per_rule) >= 4 and any(key.endswith("_high") for key in per_rule)
    assert per_symbol == per_rule
