"""SIGHUP to the running daemon (a child process, as systemd runs it): the rules file is read
again; a bad one is refused and the rules in force stay; a good one is in force from the next
step, its new rules firing on new bars only."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from monitor.cli import main
from tests.conftest import RULES, RUT
from tests.daemon_process import DaemonProcess
from tests.test_daemon_faults import publish, rut_bars, stream_alerts
from tests.test_service import replay_alerts, write_config

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


async def test_sighup_reloads_the_rules_file(tmp_path: Path) -> None:
    """Started with `surge.5d` switched off; a SIGHUP with a broken file is refused (logged,
    counted, the daemon runs on); a SIGHUP with the shipped file switches it on; then the
    bars of 2024-07-10..16 give exactly the alerts replay gives for the shipped rules,
    surge.5d's among them, and nothing of the history before."""
    prefix = f"mm-hup-{uuid.uuid4().hex[:8]}"
    shipped = RULES.read_text()
    rules = tmp_path / "rules.toml"
    rules.write_text(shipped.replace('id = "surge.5d"', 'id = "surge.5d"\nenabled = false', 1))
    conf = write_config(tmp_path, prefix, rules=rules)
    to = ["--to", "2024-07-09"]
    assert main(["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", *to]) == 0
    expected = replay_alerts(dt.date(2024, 7, 10), dt.date(2024, 7, 16))
    assert "surge.5d" in {a.rule for a in expected}

    daemon = DaemonProcess(conf)
    try:
        ready = json.loads(await asyncio.to_thread(daemon.wait_for, "service_ready"))
        port = int(ready["port"])
        await asyncio.to_thread(daemon.wait_for, "feed_subscribed")
        state = json.loads(get(port, "/api/state"))
        assert "surge.5d" not in {r["id"] for r in state["rules"]}

        rules.write_text(shipped.replace('kind = "surge"', 'kind = "surges"', 1))
        daemon.signal(signal.SIGHUP)
        failed = json.loads(await asyncio.to_thread(daemon.wait_for, "rules_reload_failed"))
        assert "surges" in failed["error"] and str(rules) in failed["error"]
        assert "streak.daily" in failed["kept"]
        assert daemon.proc.poll() is None
        assert 'market_monitor_rules_reloads{result="failed"} 1' in get(port, "/metrics")

        rules.write_text(shipped)
        daemon.signal(signal.SIGHUP)
        done = json.loads(await asyncio.to_thread(daemon.wait_for, "rules_reloaded"))
        assert done["added"] == ["surge.5d"]
        assert done["removed"] == [] and done["changed"] == []
        state = json.loads(get(port, "/api/state"))
        assert "surge.5d" in {r["id"] for r in state["rules"]}
        assert 'market_monitor_rules_reloads{result="ok"} 1' in get(port, "/metrics")

        await publish(f"{prefix}/bars", rut_bars("2024-07-10", "2024-07-16"))
        url, stream = "redis://127.0.0.1:6379/0", f"{prefix}:alerts"
        got = await stream_alerts(url, stream, len(expected))
        await asyncio.sleep(1.0)  # (nothing more comes: no firing of the history)
        assert await stream_alerts(url, stream, len(expected), timeout_s=0) == got
        assert got == expected
        daemon.signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 30) == 0
    finally:
        daemon.close()
        client = aioredis.Redis()
        await client.delete(f"{prefix}:alerts")
        await client.aclose()


def test_an_unreadable_short_interest_file_at_the_daily_reread_keeps_the_figures(
    tmp_path: Path,
) -> None:
    """The daily re-read of `[rules] short_interest` finds the file half written: one warning,
    the figures in use stay, the daemon goes on. A SIGHUP then is refused the same way."""
    from structlog.testing import capture_logs

    from monitor import config as cfg
    from monitor.service import Daemon
    from tests.conftest import SHORT_INTEREST

    figures = tmp_path / "short_interest.csv"
    figures.write_bytes(SHORT_INTEREST.read_bytes())
    conf = write_config(tmp_path, f"mm-si-{uuid.uuid4().hex[:8]}")
    setting = f'[rules]\nshort_interest = "{figures}"\n'
    conf.write_text(conf.read_text().replace("[rules]\n", setting))
    daemon = Daemon(cfg.load(conf))
    before = daemon.engine.ctx
    assert before.short_interest is not None
    figures.write_text("symbol,short_inte")  # (cut short while being written)
    with capture_logs() as logs:
        daemon.reload_short_interest()
        daemon.rules_reload.due = True
        assert daemon.rules_reload.take() is None
    assert daemon.engine.ctx is before
    events = [(e["event"], e["log_level"]) for e in logs]
    assert ("short_interest_reload_failed", "warning") in events
    assert ("rules_reload_failed", "error") in events
    failed = next(e for e in logs if e["event"] == "rules_reload_failed")
    assert str(figures) in failed["error"]
    assert daemon.counters.get("rules_reloads", result="failed") == 1


def test_a_squeeze_rule_without_a_short_interest_file_is_warned_of(tmp_path: Path) -> None:
    """The daemon started with the shipped rules and no `[rules] short_interest` logs that the
    squeeze rule cannot fire and how to mend it; given the file, it does not."""
    from structlog.testing import capture_logs

    from monitor import config as cfg
    from monitor.core.rules.spec import NO_SHORT_INTEREST
    from monitor.service import Daemon
    from tests.conftest import SHORT_INTEREST

    conf = write_config(tmp_path, f"mm-nosi-{uuid.uuid4().hex[:8]}")
    with capture_logs() as logs:
        Daemon(cfg.load(conf))
    warned = [e for e in logs if e["event"] == "rule_cannot_fire"]
    assert [(e["rule"], e["reason"], e["log_level"]) for e in warned] == [
        ("squeeze.daily", NO_SHORT_INTEREST, "warning")
    ]
    setting = f'[rules]\nshort_interest = "{SHORT_INTEREST}"\n'
    conf.write_text(conf.read_text().replace("[rules]\n", setting))
    with capture_logs() as logs:
        Daemon(cfg.load(conf))
    assert [e for e in logs if e["event"] == "rule_cannot_fire"] == []


def test_short_interest_rows_left_out_are_logged_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows of `[rules] short_interest` the rules cannot use (the published file's negative
    figures) are left out: the daemon starts with the rest and logs how many and where, and
    `config check` passes with the same line as a warning."""
    import argparse

    from structlog.testing import capture_logs

    from monitor import config as cfg
    from monitor.config_check import config_check
    from monitor.service import Daemon
    from tests.conftest import SHORT_INTEREST
    from tests.test_cli import NEGATIVE_FIGURES

    figures = tmp_path / "short_interest.csv"
    figures.write_text(SHORT_INTEREST.read_text() + NEGATIVE_FIGURES)
    conf = write_config(tmp_path, f"mm-si-{uuid.uuid4().hex[:8]}")
    conf.write_text(
        conf.read_text().replace("[rules]\n", f'[rules]\nshort_interest = "{figures}"\n')
    )
    with capture_logs() as logs:
        daemon = Daemon(cfg.load(conf))
    warned = [e for e in logs if e["event"] == "short_interest_rows_rejected"]
    assert [(e["log_level"], e["rows"]) for e in warned] == [("warning", 2)]
    assert (
        f"{figures}:" in warned[0]["detail"] and "VLRS (bad_short_interest)" in warned[0]["detail"]
    )
    known = daemon.engine.ctx.short_interest
    assert known is not None
    assert {"GME", "AMC"} <= set(known.get_column("symbol").to_list())
    assert not {"SFUN", "VLRS"} & set(known.get_column("symbol").to_list())
    assert config_check(argparse.Namespace(config=str(conf))) == 0
    err = capsys.readouterr().err
    assert f"market-monitor: warning: rules.short_interest {figures}: 2 rows left out" in err


@pytest.mark.parametrize("saved", ["", "# market-monitor rules\n", '[names]\n"^RUT" = "R"\n'])
def test_a_rules_file_without_rules_is_refused_on_reload(tmp_path: Path, saved: str) -> None:
    """A SIGHUP finding a rules file with no [[rules]] table (empty, or cut short by a save not
    finished) is refused with a hint, and every rule stays in force; a file whose rules are all
    `enabled = false` says it means to stop them, and is taken."""
    from structlog.testing import capture_logs

    from monitor import config as cfg
    from monitor.service import Daemon

    rules = tmp_path / "rules.toml"
    shipped = RULES.read_text()
    rules.write_text(shipped)
    daemon = Daemon(cfg.load(write_config(tmp_path, f"mm-empty-{uuid.uuid4().hex[:8]}", rules)))
    before = [r.id for r in daemon.rules.enabled]
    rules.write_text(saved)
    with capture_logs() as logs:
        daemon.rules_reload.due = True
        assert daemon.rules_reload.take() is None
    assert [(e["event"], e["log_level"]) for e in logs] == [("rules_reload_failed", "error")]
    assert logs[0]["error"] == f"rules.file {rules}: no rules: the file has no [[rules]] table"
    assert logs[0]["kept"] == before
    assert "set enabled = false on each" in logs[0]["hint"]
    assert [r.id for r in daemon.rules.enabled] == before
    assert daemon.counters.get("rules_reloads", result="failed") == 1

    rules.write_text(shipped.replace("\nkind = ", "\nenabled = false\nkind = "))
    with capture_logs() as logs:
        daemon.rules_reload.due = True
        change = daemon.rules_reload.take()
        assert change is not None
        change()
    done = next(e for e in logs if e["event"] == "rules_reloaded")
    assert (done["rules"], done["removed"]) == (0, sorted(before))
    assert daemon.rules.enabled == []
    assert daemon.counters.get("rules_reloads", result="ok") == 1


def test_the_daemon_warns_of_squeeze_rules_its_short_interest_file_does_not_cover(
    tmp_path: Path,
) -> None:
    """Given the short-interest extract (no figure for TSLA), the daemon logs at its start a
    warning naming the squeeze rule whose symbols lack figures, with `config check`'s line;
    after a rules reload that adds one which cannot fire at all, it names that one too."""
    from structlog.testing import capture_logs

    from monitor import config as cfg
    from monitor.service import Daemon
    from tests.conftest import SHORT_INTEREST

    rules = tmp_path / "rules.toml"
    named = '[[rules]]\nid = "sq.named"\nkind = "squeeze"\nsymbols = ["GME", "TSLA"]\n'
    rules.write_text(named)
    conf = write_config(tmp_path, f"mm-sicov-{uuid.uuid4().hex[:8]}", rules=rules)
    setting = f'[rules]\nshort_interest = "{SHORT_INTEREST}"\n'
    conf.write_text(conf.read_text().replace("[rules]\n", setting))
    skip = 'and its unknown_short_interest is "skip"'
    with capture_logs() as logs:
        daemon = Daemon(cfg.load(conf))
    warned = [e for e in logs if e["event"] == "rule_short_interest_missing"]
    assert [(e["rule"], e["detail"], e["log_level"]) for e in warned] == [
        (
            "sq.named",
            "rule sq.named: the short-interest file has no figure for TSLA (1 of its 2"
            f" symbols), {skip}: it never fires for it",
            "warning",
        )
    ]
    rules.write_text(named + '[[rules]]\nid = "sq.tsla"\nkind = "squeeze"\nsymbols = ["TSLA"]\n')
    with capture_logs() as logs:
        daemon.rules_reload.due = True
        change = daemon.rules_reload.take()
    assert change is not None
    warned = [e for e in logs if e["event"] == "rule_short_interest_missing"]
    assert [(e["rule"], e["detail"]) for e in warned] == [
        (
            "sq.named",
            "rule sq.named: the short-interest file has no figure for TSLA (1 of its 2"
            f" symbols), {skip}: it never fires for it",
        ),
        (
            "sq.tsla",
            "rule sq.tsla cannot fire: the short-interest file has no figure for any of its"
            f" symbols (TSLA), {skip}",
        ),
    ]


def test_the_daemon_gives_a_universe_squeeze_the_share_of_its_history_covered(
    tmp_path: Path,
) -> None:
    """Without `[engine] universe`, a universe squeeze rule watches the symbols of the
    daemon's bar history: the squeeze extract's 14, all with figures, and ^RUT, without; the
    daemon logs the share covered and names ^RUT."""
    from structlog.testing import capture_logs

    from monitor import config as cfg
    from monitor.service import Daemon
    from tests.conftest import SHORT_INTEREST, SQUEEZE

    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nid = "sq.uni"\nkind = "squeeze"\nuniverse = true\n')
    conf = write_config(tmp_path, f"mm-siuni-{uuid.uuid4().hex[:8]}", rules=rules)
    setting = f'[rules]\nshort_interest = "{SHORT_INTEREST}"\n'
    conf.write_text(conf.read_text().replace("[rules]\n", setting))
    data = ["--data", str(SQUEEZE), "--data", f"^RUT={RUT}", "--to", "2021-06-30"]
    assert main(["backfill", "--config", str(conf), *data]) == 0
    with capture_logs() as logs:
        Daemon(cfg.load(conf))
    warned = [e for e in logs if e["event"] == "rule_short_interest_missing"]
    assert [(e["rule"], e["detail"]) for e in warned] == [
        (
            "sq.uni",
            "rule sq.uni: the short-interest file has figures for 14 of the 15 symbols of the bar"
            ' history it watches (93%), and its unknown_short_interest is "skip": it never fires'
            " for the others (^RUT)",
        )
    ]
