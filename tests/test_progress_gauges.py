"""The `rule_progress` gauges of /metrics follow the engine's progress: from the start, at each
evaluation and after a reload, a rule past the cap and whatever left taking their series."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from monitor.core.counters import Counters
from monitor.core.progress import Progress
from monitor.progress_gauges import ProgressGauges
from monitor.status import parse_metrics
from tests.cli_here import cli_here
from tests.conftest import RULES, RUT
from tests.security.daemon import http_get
from tests.test_service import daemon_running, write_config


def rows(rule: str, *symbols: str, progress: float = 0.5) -> list[Progress]:
    """A rule's progress rows, one per symbol."""
    return [
        Progress(rule=rule, kind="streak", symbol=s, variant="", session="2024-07-12",
                 value=1.0, threshold=2.0, unit="periods", progress=progress, holds=False)
        for s in symbols
    ]  # fmt: skip


def series(counters: Counters) -> dict[tuple[str, str], float]:
    """The rule_progress series on the /metrics page, (rule, symbol) -> value."""
    page = parse_metrics(counters.render()).samples.get("rule_progress", [])
    return {(labels["rule"], labels["symbol"]): value for labels, value in page}


def test_the_gauges_are_the_progress_they_were_last_given_and_nothing_else() -> None:
    """A rule's series follow its rows: a symbol it no longer has loses its series, a rule
    that grows past the cap loses all of them (they froze at their last value), a rule that
    goes takes them along; rows given again unchanged leave the gauges as they are."""
    counters = Counters()
    gauges = ProgressGauges(counters, cap=2)
    progress = {"a": rows("a", "X", "Y"), "b": rows("b", "X")}
    gauges.refresh(progress)
    assert series(counters) == {("a", "X"): 0.5, ("a", "Y"): 0.5, ("b", "X"): 0.5}
    progress = {"a": rows("a", "X", progress=0.75), "b": rows("b", "X", "Y", "Z")}
    gauges.refresh(progress)
    assert series(counters) == {("a", "X"): 0.75}
    counters.set("rule_progress", 0.1, rule="a", symbol="X", variant="")
    gauges.refresh(progress)  # (the same rows: nothing to do)
    assert series(counters) == {("a", "X"): 0.1}
    gauges.refresh({"b": progress["b"]})
    assert series(counters) == {}


@pytest.mark.integration
async def test_the_gauges_are_there_from_the_start_and_follow_a_reload(tmp_path: Path) -> None:
    """With ^RUT backfilled to 2024-07-12, /metrics gives streak.daily at 0.6 (3 of 5) as soon
    as the daemon runs (there were none until the next bar); a reload that asks for 6 makes it
    0.5 (3 of 6) and one that removes surge.5d takes its series."""
    prefix = f"mm-gauges-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.read_text())
    conf = write_config(tmp_path, prefix, rules=rules)
    backfilled = cli_here(
        "backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-12"
    )
    assert backfilled.returncode == 0, backfilled.stderr

    async def gauges(port: int) -> dict[tuple[str, str], float]:
        page = parse_metrics(await asyncio.to_thread(http_get, port, "/metrics"))
        return {(s["rule"], s["symbol"]): v for s, v in page.samples.get("rule_progress", [])}

    async with daemon_running(conf) as daemon:
        port = int(daemon.counters.get("http_port"))
        first = await gauges(port)
        assert first[("streak.daily", "^RUT")] == 0.6
        assert ("surge.5d", "^RUT") in first
        daily = "count = 5\nmin_return = 0.01\n\n# A 5-session"  # (streak.daily's count)
        six = RULES.read_text().replace(daily, daily.replace("5", "6", 1), 1)
        no_surge = six.replace('id = "surge.5d"', 'id = "surge.5d"\nenabled = false', 1)
        for done, text in enumerate((six, no_surge), start=1):
            rules.write_text(text)
            daemon.rules_reload.request()
            async with asyncio.timeout(10):
                while daemon.counters.get("rules_reloads", result="ok") < done:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            now = await gauges(port)
            assert now[("streak.daily", "^RUT")] == 0.5
        assert ("surge.5d", "^RUT") not in now
        assert set(now) == set(first) - {("surge.5d", "^RUT")}
