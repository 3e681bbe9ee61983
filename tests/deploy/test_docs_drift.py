"""The documentation and deploy files say what the code does: the alert metrics per kind, the
feed-health payload, every notifier key and metric name, the example config's comments, the
usage-error exit codes, the demo's alert count, the systemd drop-in for a Redis without a
password and the container files' ports and paths."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import msgspec
import pytest

from tests.cli_here import cli_here
from tests.conftest import DATA, DEMO, ROOT, RUT
from tests.deploy.test_systemd import BINARY, DAEMON_UNIT, NOTIFY_UNIT, UNITS
from tests.test_commands import cli

ALERTS_DOC = ROOT / "docs" / "alerts.md"
NOTIFY_DOC = ROOT / "docs" / "notify.md"
README = ROOT / "README.md"
CONTAINER = ROOT / "deploy" / "container"
DROP_IN = UNITS / "no-redis-password.conf"
# Thresholds low enough that every kind fires over the shipped history, weekly rules included.
EVERY_KIND = """
[[rules]]
id = "s.w"
kind = "streak"
symbols = ["^RUT"]
timeframe = "1w"
count = 3
[[rules]]
id = "s.d"
kind = "streak"
symbols = ["^RUT"]
count = 3
[[rules]]
id = "su"
kind = "surge"
symbols = ["^RUT", "IWM"]
min_return = 0.03
[[rules]]
id = "sq"
kind = "squeeze"
universe = true
min_return = 0.05
volume_ratio = 1.5
unknown_short_interest = "fire"
[[rules]]
id = "ro"
kind = "rotation"
min_spread = 0.01
[[rules]]
id = "dd"
kind = "drawdown"
symbols = ["^RUT"]
max_below_high = 0.02
min_below_high = 0.10
[[rules]]
id = "br"
kind = "breadth"
universe = true
min_share = 0.5
min_symbols = 3
[[rules]]
id = "mv"
kind = "movers"
universe = true
top = 3
[[rules]]
id = "fa"
kind = "fade"
symbols = ["^RUT"]
rise = 0.03
drop = 0.02
"""


def weekly_copies(rules: str) -> str:
    """Each daily rule of `rules` again as a weekly one (id suffixed `.1w`)."""
    tables = rules.split("[[rules]]")[1:]
    daily = [t for t in tables if "timeframe" not in t]
    return "".join(
        "[[rules]]" + re.sub(r'id = "([^"]+)"', r'id = "\1.1w"\ntimeframe = "1w"', t) for t in daily
    )


def doc_table(text: str, header: str) -> dict[str, str]:
    """First cell -> second cell of the markdown table whose header row starts with `header`."""
    block = text.split(header, 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ") for line in block.splitlines()[1:] if line.startswith("| `")]
    return {row[0].removeprefix("| "): row[1].rstrip(" |") for row in rows}


def names_in(cell: str) -> list[str]:
    """The `code` spans of a table cell, in order."""
    return re.findall(r"`([^`]+)`", cell)


def test_the_alert_metrics_table_lists_what_each_kind_emits(tmp_path: Path) -> None:
    """A replay of every kind over the shipped data gives each kind exactly the metrics, in the
    order, that docs/alerts.md lists for it, with `short_week` added on weekly rules."""
    rules = tmp_path / "rules.toml"
    rules.write_text(EVERY_KIND + weekly_copies(EVERY_KIND))
    data = [
        f"^RUT={DEMO / 'rut_index_daily_1987_2026.csv'}",
        f"IWM={DATA / 'iwm_daily_adj_2023_2024.csv'}",
        f"QQQ={DATA / 'qqq_daily_adj_2023_2024.csv'}",
        str(DEMO / "smallcaps_ohlcv_2024-06-28_2024-08-02.csv"),
    ]
    argv = ["replay", "--no-cache", "--rules", str(rules), "--from", "2024-01-01"]
    res = cli(*argv, *(a for d in data for a in ("--data", d)))
    assert res.returncode == 0, res.stderr
    emitted: dict[tuple[str, str], list[str]] = {}
    for line in res.stdout.splitlines():
        alert = json.loads(line)
        emitted.setdefault((alert["kind"], alert["timeframe"]), list(alert["metrics"]))
    table = doc_table(ALERTS_DOC.read_text(), "| kind | metrics |")
    documented = {kind.strip("`"): names_in(cell) for kind, cell in table.items()}
    assert {k: v for (k, tf), v in emitted.items() if tf == "1d"} == {
        k: v for k, v in documented.items() if not k.startswith("feed_")
    }
    weekly = {k: v for (k, tf), v in emitted.items() if tf == "1w"}
    assert {"streak", "surge", "drawdown"} <= set(weekly)  # (surge's largest_since, a variant)
    assert weekly == {k: [*documented[k], "short_week"] for k in weekly}


def test_the_readme_documents_every_field_of_a_progress_row() -> None:
    """The README's table of a progress row names every field /api/state gives one (`session`,
    `stale`, `blocked` and the rest were nowhere), and as units exactly those the rules
    produce (the views handled a `ratio` nothing produced)."""
    from monitor.core.progress import Progress, measure
    from monitor.core.rules import spec

    table = doc_table(README.read_text(), "| field | what it is |")
    documented = [name for cell in table for name in names_in(cell)]
    assert documented == [f.name for f in msgspec.structs.fields(Progress)]
    rules = [cls(id="r") for cls in spec.Rule.__args__]  # type: ignore[attr-defined]
    produced = {measure(rule)[2] for rule in rules}
    assert {u.strip('"') for u in names_in(table["`unit`"])} == produced


@pytest.mark.integration
async def test_every_metric_the_daemon_exports_is_in_the_readme(tmp_path: Path) -> None:
    """Each metric on the /metrics page of a running daemon (its history loaded, its feed
    subscribed) is in the README's "Logs and metrics", which says it lists them: rule_progress,
    its cap, and seven others were not."""
    from monitor.status import parse_metrics
    from tests.test_service import daemon_running, write_config

    conf = write_config(tmp_path, f"mm-metrics-{uuid.uuid4().hex[:8]}")
    res = cli_here("backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-12")
    assert res.returncode == 0, res.stderr
    async with daemon_running(conf) as daemon:
        names = set(parse_metrics(daemon.counters.render()).samples)
    text = README.read_text()
    section = text.split("### Logs and metrics", 1)[1].split("\n### ", 1)[0]
    assert "rule_progress" in names and len(names) > 20
    assert sorted(n for n in names if not re.search(rf"`{n}[`{{]", section)) == []
    assert "at most 50 rows" in section


def test_the_feed_health_alert_is_as_documented() -> None:
    """A feed_stale alert has the rule, kind, timeframe, severity, metrics, history and `ts`
    form that the Feed health table of docs/alerts.md gives, and its symbol is the feed's name."""
    from monitor.core.payload import feed_health_alert

    at = dt.datetime(2024, 7, 16, 14, 35, 12, 345678, tzinfo=dt.UTC)
    alert = msgspec.to_builtins(feed_health_alert("feed_stale", "alpaca", at, 61.25))
    table = doc_table(ALERTS_DOC.read_text(), "| field | value |")
    assert alert["rule"] in names_in(table["`rule`"])
    assert alert["kind"] in names_in(table["`kind`"])
    assert [alert["timeframe"]] == names_in(table["`timeframe`"])
    assert f"`{alert['severity']}` for `feed_stale`" in table["`severity`"]
    assert f'`{{"{next(iter(alert["metrics"]))}": ...}}`' in table["`metrics`"]
    assert (alert["history"], alert["symbol"], alert["session"]) == (None, "alpaca", "2024-07-16")
    assert f"`{alert['ts']}`" in table["`ts`"]
    example = ALERTS_DOC.read_text().split("```json\n")[-1].split("```")[0]
    assert json.loads(example) == alert


def test_the_notifier_docs_give_every_key_and_format() -> None:
    """Every key of every notifier section, and every receiver key and `format` value, is named
    in docs/notify.md: a key the code takes and the docs leave out is a key nobody finds."""
    from typing import get_args

    from monitor.notify.config import Format, NotifyConfig, ReceiverConfig

    text = NOTIFY_DOC.read_text()
    missing = []
    for section in msgspec.structs.fields(NotifyConfig):
        if section.name in ("receivers", "route", "base_dir"):
            continue
        block = re.search(rf"^- `\[{section.name}\]`: (.*?)(?=^- |^\n)", text, re.M | re.S)
        assert block is not None, section.name
        for field in msgspec.structs.fields(section.type):
            if f"`{field.name}`" not in block[1]:
                missing.append(f"{section.name}.{field.name}")
    receivers = text.split("## Receivers", 1)[1].split("\n## ", 1)[0]
    for field in msgspec.structs.fields(ReceiverConfig):
        if f"`{field.encode_name}`" not in receivers:
            missing.append(f"receivers.{field.name}")
    missing += [f"format {v}" for v in get_args(Format) if f"`{v}`" not in receivers]
    assert missing == []


def test_the_notifier_metrics_are_documented_by_their_exported_names() -> None:
    """Each metric the notifier declares is listed in docs/notify.md by its name on /metrics,
    `market_monitor_` included, and no unprefixed `notify_*` name is left in the docs."""
    from monitor.core.counters import Counters
    from monitor.notify.config import parse
    from monitor.notify.service import Notifier

    class Described(Counters):
        """Counters that remember which metrics were declared."""

        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def describe(self, name: str, text: str) -> None:
            self.names.append(name)
            super().describe(name, text)

    config = parse({"receivers": [{"name": "a", "url": "json://127.0.0.1:9/x"}],
                    "route": {"receivers": ["a"]}})  # fmt: skip
    counters = Described()
    Notifier(config, counters=counters)
    text = NOTIFY_DOC.read_text()
    assert len(counters.names) >= 10
    assert [n for n in counters.names if f"`market_monitor_{n}" not in text] == []
    docs = [NOTIFY_DOC, ROOT / "docs" / "reliability.md", README]
    bare = [n for d in docs for n in counters.names if re.search(rf"`{n}[`{{]", d.read_text())]
    assert bare == []


def test_every_key_the_example_config_sets_says_what_it_does() -> None:
    """Each key set in config/monitor.example.toml has a comment on its line or the next, as
    the README promises (`extended_hours` and `snapshot_interval_s` once had none)."""
    lines = (ROOT / "config" / "monitor.example.toml").read_text().splitlines()
    bare = [
        line
        for i, line in enumerate(lines)
        if re.match(r"^[a-z_]+\s*=", line)
        and "#" not in line
        and not (i + 1 < len(lines) and lines[i + 1].lstrip().startswith("#"))
    ]
    assert bare == []


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["feed-replay", "--data", "x.csv", "--topic", "market/#"], 64),
        (["feed-replay", "--data", "x.csv", "--url", "mqtt://u:p@127.0.0.1:1883"], 64),
        (["feed-replay", "--data", "x.csv", "--password-env", "P"], 64),
        (["feed-replay", "--data", "x.csv", "--rate", "x"], 2),
        (["feed-replay", "--topic", "market/bars"], 2),
        (["replay", "--data", "x.csv", "--from", "2024-07-10", "--to", "2024-07-01"], 2),
        (["silence", "--config", "n.toml", "add", "--rule", "x", "--comment", "c"], 2),
    ],
)
def test_usage_errors_exit_with_the_documented_code(argv: list[str], code: int) -> None:
    """A command line argparse refuses exits 2; the options feed-replay refuses after parsing,
    before reading a file or connecting, exit 64, as the README says."""
    assert cli_here(*argv).returncode == code
    readme = " ".join(README.read_text().split())
    assert "Exit codes: 2 for a command line argparse refuses" in readme
    assert "64 for options it takes but feed-replay then refuses" in readme


def test_the_readme_counts_the_alerts_the_demo_prints() -> None:
    """`market-monitor demo` (the same rules and data as the Quickstart's daemon) prints as
    many alerts as the Quickstart says the demo fires."""
    res = subprocess.run(
        [sys.executable, "-m", "monitor", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    found = re.search(r"^(\d+) alerts\.$", res.stdout, re.MULTILINE)
    assert found is not None, res.stdout[-500:] + res.stderr[-500:]
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert f"fire {found[1]} alerts" in " ".join(quickstart.split())


def effective(unit: Path, *drop_ins: Path) -> dict[str, list[str]]:
    """[Service] list settings after the unit and its drop-ins, an empty value resetting the
    list as systemd does (enough of systemd's rule for LoadCredential= and the environment)."""
    settings: dict[str, list[str]] = {}
    for path in (unit, *drop_ins):
        section = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line.strip("[]")
            elif line and not line.startswith(("#", ";")) and section == "Service":
                key, _, value = line.partition("=")
                if value.strip():
                    settings.setdefault(key.strip(), []).extend(value.split())
                else:
                    settings[key.strip()] = []
    return settings


def test_the_no_password_drop_in_resets_the_credential_and_its_variable() -> None:
    """With deploy/systemd/no-redis-password.conf as a drop-in, neither unit loads a
    credential any more and each unsets the variable pointing password_file at it, keeping the
    rest of its environment; the README and both units point to the drop-in."""
    for unit, prefix in (
        (DAEMON_UNIT, "MARKET_MONITOR__"),
        (NOTIFY_UNIT, "MARKET_MONITOR_NOTIFY__"),
    ):
        before, after = effective(unit), effective(unit, DROP_IN)
        assert before["LoadCredential"] != []
        assert after["LoadCredential"] == []
        assert f"{prefix}REDIS__PASSWORD_FILE" in after["UnsetEnvironment"]
        assert after["Environment"] == before["Environment"]
        assert "no-redis-password.conf" in unit.read_text()
    assert "deploy/systemd/no-redis-password.conf" in README.read_text()


def test_the_units_with_the_drop_in_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` reads both units with the drop-in installed as the README
    installs it and warns of nothing (an empty LoadCredential= is a reset, not bad syntax)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        print("skipped: systemd-analyze is not on PATH (apt-get install systemd)")
        pytest.skip("systemd-analyze is not on PATH")
    units = []
    for unit in (DAEMON_UNIT, NOTIFY_UNIT):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(f"ExecStart={BINARY}", "ExecStart=/bin/true"))
        folder = tmp_path / f"{unit.name}.d"
        folder.mkdir()
        shutil.copy2(DROP_IN, folder / "10-no-redis-password.conf")
        units.append(str(copy))
    bad = tmp_path / "market-monitor.service.d" / "20-check.conf"
    bad.write_text("[Service]\nNoSuchKey=1\n")  # (proves verify reads the drop-in folder)
    res = subprocess.run(
        [tool, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert [line for line in out.splitlines() if "market-monitor" in line] == [
        f"{bad}:2: Unknown key 'NoSuchKey' in section [Service], ignoring."
    ]


def test_the_container_healthchecks_ask_the_ports_the_configs_serve() -> None:
    """compose.yaml's healthchecks ask the ports the mounted monitor.toml and notify.toml
    serve; the secrets are read next to compose.yaml, where its header creates them; no file
    tells mosquitto_passwd to write into the read-only /run/secrets mount."""
    import yaml

    compose = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    for service, config in (("market-monitor", "monitor.toml"), ("notifier", "notify.toml")):
        port = tomllib.loads((CONTAINER / config).read_text())["http"]["port"]
        check = " ".join(compose["services"][service]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/" in check, (service, check)
    assert {s["file"] for s in compose["secrets"].values()} == {
        f"./secrets/{name}" for name in compose["secrets"]
    }
    header = (CONTAINER / "compose.yaml").read_text().split("services:", 1)[0]
    assert header.index("cd deploy/container") < header.index("mkdir -p secrets")
    for path in (README, CONTAINER / "compose.yaml", CONTAINER / "mosquitto.conf"):
        assert re.findall(r"mosquitto_passwd[^\n]*/run/secrets", path.read_text()) == []
    dockerfile = (CONTAINER / "Dockerfile").read_text()
    assert "points HEALTHCHECK_URL at its own port" not in dockerfile


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_secret() -> None:
    """.dockerignore lets through exactly the paths the Dockerfile copies (a path it forgot
    would fail the build) and so keeps the compose secrets, .venv and caches out of the
    build context."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    copied = re.findall(r"^COPY ([^\n]+) \S+$", (CONTAINER / "Dockerfile").read_text(), re.M)
    assert {path for line in copied for path in line.split()} == allowed
