"""`replay --report`: the self-contained HTML report of a replay, opened in headless Chromium."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from monitor.web.report import downsample
from tests.conftest import RULES, RUT
from tests.test_commands import cli
from tests.web.chromium import Chromium, find_chromium


def test_downsample_keeps_the_ends_and_every_buckets_extremes() -> None:
    """A long series keeps its first and last points and the min and max of each bucket, in
    order; a short one is kept whole."""
    values = [0.0, 5.0, 1.0, -3.0, 2.0, 9.0, 4.0, 4.0, 1.0, 0.5]
    assert downsample(values, target=4) == [0, 1, 3, 5, 9]
    assert downsample(values[:3], target=4) == [0, 1, 2]


async def test_report_of_the_russell_since_1987_marks_every_alert(tmp_path: Path) -> None:
    """The report of ^RUT 1987-2026 opens offline in Chromium with one marker per alert that
    replay printed, and the forward-return table has a row group per rule."""
    executable = find_chromium()
    if executable is None:
        print("SKIP reason: no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    report = tmp_path / "rut.html"
    res = await asyncio.to_thread(
        cli, "replay", "--rules", str(RULES), "--data", f"^RUT={RUT}", "--report", str(report)
    )
    assert res.returncode == 0, res.stderr
    alerts = res.stdout.splitlines()
    assert len(alerts) > 100
    html = await asyncio.to_thread(report.read_text)
    assert "src=" not in html and "href=" not in html and "<script" not in html
    assert len(html) < 400_000
    async with Chromium(tmp_path, executable) as browser:
        page = await browser.page(report.as_uri(), width=1280, height=900)
        markers = await page.evaluate("document.querySelectorAll('svg .alert-marker').length")
        rules = await page.evaluate(
            "[...document.querySelectorAll('table.fwd td.rule')].map(td => td.textContent)"
        )
        per_rule = await page.evaluate(  # (a rule's first row: its name, then its cells)
            "[...document.querySelectorAll('table.rules tr.first')].map(tr =>"
            " [...tr.querySelectorAll('td')].map(td => td.textContent))"
        )
        await page.screenshot(tmp_path / "report.png")
        await page.close()
    assert markers == len(alerts)
    assert rules == [
        "drawdown.high · below_high", "drawdown.high · near_high", "fade.10d", "streak.daily",
        "streak.weekly", "surge.5d",
    ]  # fmt: skip
    # What followed, per rule: every rule of the file in its order (a drawdown's two opposite
    # signals apart), its horizons, and the baseline (any session of ^RUT, whatever the rule)
    # the same for every daily rule.
    ids = re.findall(r'^id = "([^"]+)"', RULES.read_text(), flags=re.M)
    assert list(dict.fromkeys(row[0].split()[0] for row in per_rule)) == ids
    drawdowns = [row[0] for row in per_rule if row[0].startswith("drawdown")]
    assert [d.split(", ")[-1] for d in drawdowns] == ["below_high", "near_high"]
    daily = [row[-3:] for row in per_rule if row[0].startswith(("streak.daily", "fade"))]
    assert len(daily) == 2 and daily[0] == daily[1] and daily[0][0] == f"{9686 - 5:,}"
    assert [row[1] for row in per_rule if row[0].startswith("squeeze")] == ["no alerts"]
    print(f"screenshot: {tmp_path / 'report.png'}")


def test_a_return_that_rounds_to_zero_reads_as_in_the_summary() -> None:
    """-0.009% is "+0.0%" in the report as in the summary and the alerts' text (it was
    "-0.0%", in red), and the rounding is the alerts' (half to even)."""
    from monitor.web.report import _pct_cell

    assert _pct_cell(-0.00009) == '<td class="num ">+0.0%</td>'
    assert _pct_cell(-0.05) == '<td class="num neg">-5.0%</td>'
    assert _pct_cell(0.115) == '<td class="num pos">+11.5%</td>'
