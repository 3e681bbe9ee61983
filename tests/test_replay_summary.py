"""`replay --format summary`: per rule, its alerts and what followed them, made of the same
firings as the alerts and checked against them and against the prices themselves."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from pathlib import Path

import msgspec
import polars as pl
import pytest

from monitor.core.model import Alert
from monitor.core.rules.context import pct
from tests.conftest import RULES, RUT, SHORT_INTEREST, SQUEEZE
from tests.test_cli import run_cli

HEAD = re.compile(
    r"^(?P<rule>\S+) \((?P<kind>\w+), (?P<tf>\w+)(?:; (?P<variant>\w+))?\): (?:no alerts|"
    r"(?P<n>[\d,]+) alerts? on (?P<symbols>[\d,]+) symbols?, (?P<first>[\d-]+) to "
    r"(?P<last>[\d-]+))$"
)


class Block(msgspec.Struct):
    """One rule's block of the summary: its head line's numbers and its horizon rows."""

    alerts: int
    symbols: int
    first: str | None
    last: str | None
    rows: dict[str, list[str]]  # "21 sessions" -> [count, mean, median, up, worst, best]


def parse(text: str) -> dict[str, Block]:
    """The blocks by rule id, or `id (variant)` for a rule whose alerts have variants."""
    blocks: dict[str, Block] = {}
    current: Block | None = None
    for line in text.splitlines():
        head = HEAD.match(line)
        if head:
            n = int(head["n"].replace(",", "")) if head["n"] else 0
            symbols = int(head["symbols"].replace(",", "")) if head["symbols"] else 0
            current = Block(n, symbols, head["first"], head["last"], {})
            variant = f" ({head['variant']})" if head["variant"] else ""
            blocks[head["rule"] + variant] = current
        elif current is not None and line.startswith("    ") and "what followed" not in line:
            words = line.split()
            current.rows[" ".join(words[:2])] = words[2:]
    return blocks


def outcomes(after: list[float]) -> list[str]:
    """count, mean, median, share up, worst and best of forward returns, as the summary
    prints them."""
    up = round(100 * sum(r > 0 for r in after) / len(after))
    return [
        f"{len(after):,}",
        *(pct(x, signed=True) for x in (statistics.fmean(after), statistics.median(after))),
        f"{up}%",
        *(pct(x, signed=True) for x in (min(after), max(after))),
    ]


def universe_rules(tmp_path: Path) -> Path:
    """config/rules.toml with every rule over the whole universe."""
    text = RULES.read_text().replace('symbols = ["^RUT", "IWM"]', "universe = true")
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "options",
    [[], ["--batch-sessions", "7"], ["--from", "2021-01-04"]],
    ids=["one", "batches", "from"],
)
def test_summary_counts_the_alerts_jsonl_prints(tmp_path: Path, options: list[str]) -> None:
    """Every rule over the squeeze file with short interest: per rule, the summary's count of
    alerts, of symbols, and its first and last session are those of the jsonl alerts (fed as
    one batch, a week at a time, and printed from a date on); a rule without alerts says so."""
    args = [
        "replay", "--rules", str(universe_rules(tmp_path)), "--data", str(SQUEEZE),
        "--short-interest", str(SHORT_INTEREST), *options,
    ]  # fmt: skip
    jsonl = run_cli(*args)
    summary = run_cli(*args, "--format", "summary")
    assert jsonl.returncode == 0 and summary.returncode == 0, jsonl.stderr + summary.stderr
    alerts = [msgspec.json.decode(line, type=Alert) for line in jsonl.stdout.splitlines()]
    by_rule: dict[str, list[Alert]] = defaultdict(list)
    for a in alerts:
        variant = a.metrics.get("variant")
        by_rule[f"{a.rule} ({variant})" if variant else a.rule].append(a)
    blocks = parse(summary.stdout)
    ids = re.findall(r'^id = "([^"]+)"', RULES.read_text(), flags=re.M)
    # every rule, in the file's order (a rule's variants apart, each with its own alerts)
    assert list(dict.fromkeys(label.split(" ")[0] for label in blocks)) == ids
    head = summary.stdout.splitlines()[0]
    assert head.endswith(f": {len(alerts):,} alerts.")
    assert ("alerts from 2021-01-04" in head) == ("--from" in options)
    assert len(by_rule) >= 4  # (a test of several families, not of one)
    for rule, block in blocks.items():
        mine = by_rule.get(rule, [])
        assert block.alerts == len(mine), rule
        assert block.symbols == len({a.symbol for a in mine}), rule
        if mine:
            assert (block.first, block.last) == (mine[0].session, mine[-1].session), rule
        else:
            assert block.first is None and not block.rows
    assert summary.stderr == jsonl.stderr  # (the same rejected rows)


@pytest.mark.parametrize("start", [None, "2010-01-04"], ids=["all", "from"])
def test_summary_forward_returns_are_those_of_the_prices(start: str | None) -> None:
    """^RUT through config/rules.toml: for the daily streak and the surge, each horizon's row
    is the count, mean, median, share up, worst and best of the index's return from each
    alert's close to the close that many sessions later, then the count, mean and share up of
    the same from every session (from --from on, when given), all computed here from the file.
    The drawdown rule (two variants over the same closes) has the same baseline."""
    args = ["replay", "--rules", str(RULES), "--data", f"^RUT={RUT}"]
    args += ["--from", start] if start else []
    jsonl, summary = run_cli(*args), run_cli(*args, "--format", "summary")
    assert jsonl.returncode == 0 and summary.returncode == 0, jsonl.stderr + summary.stderr
    closes = pl.read_csv(RUT).select(pl.col("Date").cast(pl.String), "Close")
    position = {d: i for i, d in enumerate(closes["Date"])}
    close = closes["Close"].to_list()
    first = position[start] if start else 0
    alerts = [msgspec.json.decode(line, type=Alert) for line in jsonl.stdout.splitlines()]
    blocks = parse(summary.stdout)
    for rule in ("streak.daily", "surge.5d"):
        sessions = [position[a.session] for a in alerts if a.rule == rule]
        assert blocks[rule].alerts == len(sessions) >= (5 if start is None else 2)
        for h in (5, 21, 63):
            after = [close[i + h] / close[i] - 1 for i in sessions if i + h < len(close)]
            every = [close[i + h] / close[i] - 1 for i in range(first, len(close) - h)]
            base = outcomes(every)
            row = blocks[rule].rows[f"{h} sessions"]
            assert row == [*outcomes(after), base[0], base[1], base[3]], (rule, h)
            for variant in ("below_high", "near_high"):
                drawdown = blocks[f"drawdown.high ({variant})"]
                assert drawdown.rows[f"{h} sessions"][6:] == row[6:]
    assert parse(summary.stdout)["squeeze.daily"].alerts == 0
    assert "squeeze.daily (squeeze, 1d): no alerts" in summary.stdout
