"""`replay --format table`: a minute alert says its minute, movers of one session come in rank
order, and the columns stay aligned whatever the length of the rule ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main
from tests.conftest import DATA, RUT

SPY = DATA / "spy_1min_2024-03-08_2024-03-11.csv"


def heads(out: str) -> list[str]:
    """The first line of each alert's block in a table."""
    return [line for line in out.splitlines() if line[:1].isdigit() and "  " in line]


def table_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: str, *data: str
) -> list[str]:
    """`replay --format table` of `rules` over `data` (`--data` arguments): the blocks' heads."""
    (tmp_path / "rules.toml").write_text(rules)
    argv = ["replay", "--rules", str(tmp_path / "rules.toml"), "--format", "table"]
    assert main([*argv, *(a for d in data for a in ("--data", d))]) == 0
    return heads(capsys.readouterr().out)


def test_a_minute_alert_says_its_minute_in_new_york_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1m surge rule over SPY's minutes prints each alert with its minute (New York time),
    as its jsonl ts says it in UTC, across the clock change of 2024-03-10. (Each said only
    2024-03-08: five blocks alike.)"""
    rules = (
        '[[rules]]\nid = "s1m"\nkind = "surge"\nsymbols = ["SPY"]\ntimeframe = "1m"\n'
        "window = 5\nmin_return = 0.0015\n"
    )
    said = table_replay(tmp_path, capsys, rules, f"SPY={SPY}")
    minutes = ["03-08 09:43", "03-08 11:38", "03-08 12:30", "03-08 14:04", "03-08 14:23"]
    minutes += ["03-11 10:20", "03-11 10:33"]
    assert said == [f"2024-{m}  WARNING  s1m                  SPY" for m in minutes]


def test_movers_of_one_session_come_in_rank_order(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's top movers of 2024-07-16 come #2 HOV, then #3 HIPO. (They came in symbol
    order: HIPO #3 before HOV #2.)"""
    assert main(["demo", "--format", "table"]) == 0
    out = capsys.readouterr().out
    movers = [line for line in out.splitlines() if "gainer over 5 sessions" in line]
    assert movers[1:] == [
        "    HOV is the #2 gainer over 5 sessions: +34.8%.",
        "    HIPO is the #3 gainer over 5 sessions: +27.3%.",
    ]


def test_columns_stay_aligned_with_a_long_rule_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule id longer than 20 characters widens the rule column of every row, so the
    symbols stay in one column. (A long id pushed its row's symbol out of line.)"""
    rules = "".join(
        f'[[rules]]\nid = "{rule_id}"\nkind = "surge"\nsymbols = ["^RUT"]\nwindow = 5\n'
        "min_return = 0.11\n"
        for rule_id in ("s", "surge.russell_2000.five_sessions")
    )
    said = table_replay(tmp_path, capsys, rules, f"^RUT={RUT}")
    july = [line for line in said if line.startswith("2024-07-16")]
    assert july == [
        "2024-07-16  WARNING  s                                ^RUT",
        "2024-07-16  WARNING  surge.russell_2000.five_sessions ^RUT",
    ]
