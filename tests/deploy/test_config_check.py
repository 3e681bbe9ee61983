"""`config check` and `status`: what an operator runs before and after starting the daemon."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from monitor import config as cfg
from monitor.config_check import config_check, to_toml
from monitor.core.rules.spec import NO_SHORT_INTEREST
from monitor.errors import EX_CONFIG
from monitor.status import parse_metrics, status
from tests.cli_here import cli_here
from tests.conftest import DATA, DEMO, ROOT, RUT
from tests.test_health import daemon_of

PASSWORD = "s3cret-Correct-Horse-7719"
RULES = ROOT / "config" / "rules.toml"


def write(tmp: Path, body: str) -> Path:
    """A daemon config in tmp with this body."""
    path = tmp / "monitor.toml"
    path.write_text(body)
    path.chmod(0o600)
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str], **extra: str) -> tuple[int, str, str]:
    """Run `config check --config path`; exit code, stdout, stderr."""
    code = config_check(argparse.Namespace(config=str(path), **extra))
    out, err = capsys.readouterr()
    return code, out, err


def test_config_check_prints_the_effective_config_and_never_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis password from the environment and one in the Redis URL, and an MQTT password from
    a file: config check exits 0, prints the effective values (overrides applied) and masks all
    three."""
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text(PASSWORD + "\n")
    secret_file.chmod(0o600)
    monkeypatch.setenv("MM_TEST_REDIS_PASSWORD", PASSWORD)
    monkeypatch.setenv("MARKET_MONITOR__HTTP__PORT", "9555")
    conf = write(
        tmp_path,
        f"""
[[feeds]]
kind = "mqtt"
url = "mqtt://127.0.0.1:1883"
topics = ["market/#"]
username = "monitor"
password_file = "{secret_file}"
[redis]
url = "redis://monitor:{PASSWORD}@127.0.0.1:6379/0"
password_env = "MM_TEST_REDIS_PASSWORD"
[rules]
file = "{RULES}"
""",
    )
    for fmt in ("toml", "json"):
        code, out, err = check(conf, capsys, format=fmt)
        assert code == 0, err
        assert PASSWORD not in out + err
    code, out, err = check(conf, capsys)
    assert 'url = "redis://monitor:***@127.0.0.1:6379/0"' in out
    assert '\n[http]\nhost = "127.0.0.1"\nport = 9555\n' in out
    assert "#   redis.password = ***  (environment MM_TEST_REDIS_PASSWORD)" in out
    assert f"#   feeds[0].password = ***  (file {secret_file})" in out
    assert err == (  # (the shipped rules' squeeze needs a short-interest file: none here)
        f"market-monitor: warning: rule squeeze.daily cannot fire: {NO_SHORT_INTEREST}\n"
    )


def test_config_check_names_the_field_of_a_bad_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value exits 78 with a message naming its field path."""
    conf = write(tmp_path, f'[engine]\nqueue_size = 0\n[rules]\nfile = "{RULES}"\n')
    assert check(conf, capsys) == (
        EX_CONFIG,
        "",
        f"market-monitor: config error: {conf}: engine.queue_size: Expected `int` >= 1\n",
    )


def test_config_check_names_the_field_of_a_missing_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset password variable and an unreadable password file each exit 78 naming the
    field that asked for them."""
    monkeypatch.delenv("MM_TEST_UNSET_PASSWORD", raising=False)
    conf = write(
        tmp_path, f'[redis]\npassword_env = "MM_TEST_UNSET_PASSWORD"\n[rules]\nfile = "{RULES}"\n'
    )
    assert check(conf, capsys) == (
        EX_CONFIG,
        "",
        "market-monitor: config error: redis.password_env: "
        "environment variable MM_TEST_UNSET_PASSWORD is not set\n",
    )
    missing = tmp_path / "nope"
    conf = write(
        tmp_path,
        f'[[feeds]]\nkind = "mqtt"\nurl = "mqtt://127.0.0.1:1883"\ntopics = ["market/#"]\n'
        f'password_file = "{missing}"\n[rules]\nfile = "{RULES}"\n',
    )
    assert check(conf, capsys) == (
        EX_CONFIG,
        "",
        f"market-monitor: config error: feeds[0].password_file: cannot read {missing}: "
        "No such file or directory\n",
    )


def test_config_check_reads_the_rules_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rules file that is not there fails the check (exit 78, field rules.file), as it would
    fail the daemon's start."""
    conf = write(tmp_path, '[rules]\nfile = "missing-rules.toml"\n')
    code, out, err = check(conf, capsys)
    assert (code, out) == (EX_CONFIG, "")
    assert err == (
        "market-monitor: config error: rules.file: cannot read "
        f"{tmp_path / 'missing-rules.toml'}: No such file or directory\n"
    )


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ('[names]\n"^RUT" = "Russell\\u001b]0;PWNED\\u0007"\n', 'names."^RUT"'),
        ('[names]\n"^RUT\\u009b2J" = "Russell"\n', "names"),
        ('[[rules]]\nid = "b"\nkind = "breadth"\nuniverse = true\nlabel = "\\u001b[41mL"\n',
         'rules[0] (id "b").label'),
        ('[[rules]]\nid = "s"\nkind = "streak"\nsymbols = ["IWM"]\n'
         'description = "up\\u001b[2J"\n', 'rules[0] (id "s").description'),
    ],
)  # fmt: skip
def test_config_check_refuses_control_characters_in_words_for_people(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: str, field: str
) -> None:
    """A display name (or the symbol it names), a breadth label or a description with a
    control character (ESC, a C1 CSI) fails the check (exit 78), naming the field and the
    character: it would reach terminals, chats and mail in alert texts and the live view."""
    (tmp_path / "rules.toml").write_text(rules)
    conf = write(tmp_path, f'[rules]\nfile = "{tmp_path / "rules.toml"}"\n')
    code, out, err = check(conf, capsys)
    assert (code, out) == (EX_CONFIG, "")
    prefix = f"market-monitor: config error: rules.file {tmp_path / 'rules.toml'}: {field}: "
    assert err.startswith(prefix + "control character U+00"), err


def test_a_description_may_run_over_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A description written over several lines (a TOML multi-line string) passes the check:
    newlines and tabs are the control characters a description may hold."""
    (tmp_path / "rules.toml").write_text(
        '[[rules]]\nid = "s"\nkind = "streak"\nsymbols = ["IWM"]\n'
        'description = """Five up days,\n\teach above 1%."""\n'
    )
    conf = write(tmp_path, f'[rules]\nfile = "{tmp_path / "rules.toml"}"\n')
    assert check(conf, capsys)[0] == 0


def test_config_check_warns_of_a_percent_written_for_a_fraction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`min_short_interest = 30` (the short-interest file's percent) passes, with a warning."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nid = "sq"\nkind = "squeeze"\nuniverse = true\nmin_short_interest = 30\n'
    )
    code, _, err = check(write(tmp_path, f'[rules]\nfile = "{rules}"\n'), capsys)
    assert code == 0
    assert err.startswith('market-monitor: warning: rules.file: rules[0] (id "sq").min_short_')
    assert "it is a fraction, 0.10 means 10%" in err and "did you mean 0.3?" in err


def test_config_check_warns_of_a_squeeze_rule_without_short_interest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A squeeze rule that skips symbols without a figure, in a config with no `[rules]
    short_interest`, cannot fire: the check passes, warning of it and how to mend it."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nid = "sq"\nkind = "squeeze"\nuniverse = true\n')
    code, _, err = check(write(tmp_path, f'[rules]\nfile = "{rules}"\n'), capsys)
    assert (code, err) == (
        0,
        f"market-monitor: warning: rule sq cannot fire: {NO_SHORT_INTEREST}\n",
    )


def test_config_check_warns_of_a_rule_that_can_never_fire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A breadth rule given two symbols, under the default `min_symbols` of 10, can fire on
    no data: the check passes, warning of it as `replay` does (it said nothing); and, with
    `[engine] universe`, a universe rule whose `exclude` takes every symbol. A universe rule
    without `[engine] universe` is not judged: its symbols are what the feeds send."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nid = "br"\nkind = "breadth"\nsymbols = ["IWM", "QQQ"]\n'
        '[[rules]]\nid = "all"\nkind = "breadth"\nuniverse = true\n'
        '[[rules]]\nid = "none"\nkind = "surge"\nuniverse = true\nexclude = ["IWM", "QQQ"]\n'
    )
    code, _, err = check(write(tmp_path, f'[rules]\nfile = "{rules}"\n'), capsys)
    assert (code, err) == (
        0,
        "market-monitor: warning: rule br cannot fire: its universe has 2 symbols, fewer than"
        " min_symbols (10)\n",
    )
    universe = f'[rules]\nfile = "{rules}"\n[engine]\nuniverse = ["IWM", "QQQ"]\n'
    code, _, err = check(write(tmp_path, universe), capsys)
    assert code == 0
    assert "rule all cannot fire: its universe has 2 symbols" in err
    assert "rule none cannot fire: its universe is empty" in err


def test_shipped_configs_pass_the_check(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """config/monitor.example.toml, config/demo.toml and the container's monitor.toml (its
    secret files pointed at a real file) pass the check."""
    for path in (ROOT / "config" / "monitor.example.toml", ROOT / "config" / "demo.toml"):
        code, _, err = check(path, capsys)
        assert code == 0, err
    container = ROOT / "deploy" / "container" / "monitor.toml"
    loaded = cfg.load(container)
    assert (loaded.redis.url, loaded.feeds[0].url) == (
        "redis://redis:6379/0",
        "mqtt://mosquitto:1883",
    )
    assert loaded.redis.password_file == "/run/secrets/redis-password"
    monkeypatch.setenv("MARKET_MONITOR__REDIS__PASSWORD_FILE", str(container))
    monkeypatch.setenv("MARKET_MONITOR__RULES__FILE", str(RULES))
    code, _, err = check(container, capsys)
    assert code == EX_CONFIG  # the MQTT secret file exists only inside the container
    assert "feeds[0].password_file: cannot read /run/secrets/mqtt-password" in err


def test_to_toml_round_trips_through_tomllib() -> None:
    """The printed configuration is TOML that reads back as the same data (None left out)."""
    import tomllib

    data = cfg.masked(cfg.load(ROOT / "config" / "demo.toml"))
    data["log"].pop("json")  # None: printed as a comment
    data["engine"].pop("minute_history")  # (None too)
    data["feeds"][0]["field_map"] = {"symbol": "S", "price": "p"}
    assert tomllib.loads(to_toml(data)) == data


def daemon_config(tmp: Path, *, feed: str) -> Path:
    """A daemon config on a free HTTP port with one feed."""
    return write(
        tmp,
        f"""
[store]
path = "{tmp / "store"}"
{feed}
[redis]
url = "redis://127.0.0.1:6379/0"
channel = "mm-status-{tmp.name}"
stream = "mm-status-{tmp.name}"
[rules]
file = "{RULES}"
[http]
port = 0
[shutdown]
grace_s = 2.0
""",
    )


async def status_of(conf: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Start the daemon in-process, run `status --url` against it, stop it."""
    try:
        async with daemon_of(conf) as daemon:
            await asyncio.sleep(0.5)
            port = int(daemon.counters.get("http_port"))
            args = argparse.Namespace(url=f"http://127.0.0.1:{port}", config=None)
            capsys.readouterr()
            code = await asyncio.to_thread(status, args)
            # The in-process daemon logs to the same stdout: keep the report's lines only.
            out = capsys.readouterr().out.splitlines()
            report = [line for line in out if line.startswith(("market-monitor at ", "  "))]
            return code, "\n".join(report) + "\n"
    finally:
        import redis.asyncio as aioredis

        client = aioredis.Redis()
        await client.delete(f"mm-status-{conf.parent.name}")
        await client.aclose()


@pytest.mark.integration
async def test_status_of_a_healthy_daemon_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A daemon streaming history with Redis up: `status` prints the summary and exits 0."""
    feed = f"""
[[feeds]]
kind = "replay"
name = "history"
data = ["^RUT={DEMO / "rut_index_daily_1987_2026.csv"}"]
start = "2024-07-01"
speed = 345600
"""
    code, out = await status_of(daemon_config(tmp_path, feed=feed), capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].endswith(": healthy")
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "uptime", "queue depth", "ticks in", "bars in", "rejections", "alerts", "outbox",
        "feed reconnects", "feed lag",
    ]  # fmt: skip


@pytest.mark.integration
async def test_status_of_a_daemon_without_its_broker_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A daemon whose MQTT broker is not there is degraded: `status` prints why and exits 1."""
    from tests.feeds.mosquitto_server import free_port

    feed = f"""
[[feeds]]
kind = "mqtt"
name = "nobroker"
url = "mqtt://127.0.0.1:{free_port()}"
topics = ["x/#"]
"""
    code, out = await status_of(daemon_config(tmp_path, feed=feed), capsys)
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0].endswith(": degraded")
    # (with why, as the connection attempt gave it; the feed's name said once)
    assert lines[1] == "  reason: feed nobroker disconnected: [Errno 111] Connection refused"


def test_status_with_nothing_listening_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Nobody on the port: `status` says the daemon is down and exits 2."""
    from tests.feeds.mosquitto_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert status(argparse.Namespace(url=url, config=None)) == 2
    assert capsys.readouterr().out.startswith(f"market-monitor at {url}: down (no answer: ")


def test_status_reads_the_prometheus_page() -> None:
    """Labelled samples are summed and split by label; other metrics are ignored."""
    page = (
        "# TYPE market_monitor_rejections counter\n"
        'market_monitor_rejections{reason="bad_price"} 2\n'
        'market_monitor_rejections{reason="dup \\"x\\""} 1\n'
        "market_monitor_ticks_in 12345\n"
        "process_cpu_seconds_total 3\n"
    )
    m = parse_metrics(page)
    assert m.total("rejections") == 3
    assert m.by("rejections", "reason") == {"bad_price": 2.0, 'dup "x"': 1.0}
    assert m.total("ticks_in") == 12345
    assert not m.has("process_cpu_seconds_total")


BAD_INPUT = [
    (
        '[[feeds]]\nkind = "replay"\ndata = ["IWM=missing/iwm.csv"]\n',
        65,
        "data error: {dir}/missing/iwm.csv: cannot read: [Errno 2] No such file or directory: "
        "'{dir}/missing/iwm.csv'",
    ),
    (
        f'[[feeds]]\nkind = "replay"\ndata = ["^RUT={DEMO / "rut_index_daily_1987_2026.csv"}"]\n'
        'start = "2024-7-1"\n',
        78,
        "config error: feeds[0].start: not a YYYY-MM-DD date: '2024-7-1'",
    ),
    (
        f'[[feeds]]\nkind = "replay"\ndata = ["^RUT={DEMO / "rut_index_daily_1987_2026.csv"}"]\n'
        'end = "July 31"\n',
        78,
        "config error: feeds[0].end: not a YYYY-MM-DD date: 'July 31'",
    ),
    (
        f'[[feeds]]\nkind = "replay"\ndata = ["^RUT={DEMO / "rut_index_daily_1987_2026.csv"}"]\n'
        'start = "2024-08-01"\nend = "2024-07-31"\n',
        78,
        "config error: feeds[0].start: 2024-08-01 is after end (2024-07-31)",
    ),
    (
        f'[[feeds]]\nkind = "replay"\ndata = ["^RUT={DEMO / "rut_index_daily_1987_2026.csv"}"]\n'
        'start = "2030-01-02"\n',
        78,
        "config error: feeds[0].start: 2030-01-02 is after the data's last session (2026-02-23):"
        " the feed would stream nothing",
    ),
    (
        f'[[feeds]]\nkind = "replay"\ndata = ["IWM={DATA / "iwm_daily_adj_2023_2024.csv"}"]\n'
        'start = "2025-01-02"\nend = "2025-12-31"\n',
        78,
        "config error: feeds[0].start: the data has no session from 2025-01-02 to end"
        " (2025-12-31), the last is 2024-12-31: the feed would stream nothing",
    ),
    (
        f'[[feeds]]\nkind = "replay"\ndata = ["IWM={DATA / "iwm_daily_adj_2023_2024.csv"}"]\n'
        'end = "2022-12-31"\n',
        78,
        "config error: feeds[0].end: the data has no session up to 2022-12-31: the feed would"
        " stream nothing",
    ),
    (
        '[rules]\nshort_interest = "si.csv"\n',
        65,
        "data error: {dir}/si.csv: cannot open: No such file or directory",
    ),
    (
        '[rules]\nshort_interest = "si-no-date.csv"\n',
        65,
        "data error: {dir}/si-no-date.csv: missing column 'short_interest_date'",
    ),
]


@pytest.mark.parametrize(
    ("section", "code", "line"),
    BAD_INPUT,
    ids=[
        "replay-data-missing",
        "replay-start",
        "replay-end",
        "replay-start-after-end",
        "replay-start-after-data",
        "replay-nothing-to-end",
        "replay-end-before-data",
        "si-missing",
        "si-no-column",
    ],
)
def test_config_check_refuses_the_data_files_run_refuses_with_the_same_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, code: int, line: str
) -> None:
    """A replay feed whose data file cannot be read (65), whose `start`/`end` is not a date, or
    with which it would stream nothing (a `start` after `end` or after the data's last session,
    an `end` before its first: 78), and a `[rules] short_interest` file that is missing or lacks
    a column (65), fail `config check` with the exit code and one line `run` gives for them (the
    check used to pass them all)."""
    (tmp_path / "si-no-date.csv").write_text("symbol,percent_of_float\nGME,140.0\n")
    rules = f'[rules]\nfile = "{RULES}"\n'
    body = section.replace("[rules]\n", rules) if "[rules]" in section else section + rules
    conf = write(tmp_path, f'[store]\npath = "{tmp_path / "store"}"\n{body}[http]\nport = 0\n')
    want = f"market-monitor: {line.format(dir=tmp_path)}\n"
    assert check(conf, capsys) == (code, "", want)
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr) == (code, want)


def test_config_check_and_run_say_which_rows_of_a_replay_feeds_data_they_reject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay feed's daily file with a row the reading rejects (a duplicate date): `config
    check` passes with a warning naming the feed, the count and the row, as `replay` says
    them; the daemon logs the same lines (`replay_rows_rejected`) instead of dropping the row
    in silence."""
    import json

    from tests.test_commands import cli

    lines = (DEMO / "rut_index_daily_1987_2026.csv").read_text().splitlines()
    data = tmp_path / "rut.csv"
    data.write_text("\n".join([*lines, lines[-1]]) + "\n")
    feed = f'[[feeds]]\nkind = "replay"\nname = "history"\ndata = ["^RUT={data}"]\n'
    feed += "exit_when_done = true\n"
    rules = f'[rules]\nfile = "{RULES}"\n'
    conf = write(
        tmp_path, f'[store]\npath = "{tmp_path / "store"}"\n{feed}{rules}[http]\nport = 0\n'
    )
    code, _, err = check(conf, capsys)
    row = f"{data}:{len(lines) + 1} ^RUT (duplicate)"
    assert code == 0
    assert (
        "market-monitor: warning: feed history: rows rejected or fixed: duplicate=1\n"
        f"market-monitor: warning: feed history: the first rows rejected: {row}; of rows with "
        "the same symbol and date, the first is kept\n"
    ) in err
    stream = f"mm-rows-{tmp_path.name}"
    env = {"MARKET_MONITOR__LOG__JSON": "true", "MARKET_MONITOR__REDIS__STREAM": stream}
    run = cli("run", "--config", str(conf), env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    logged = [json.loads(x) for x in run.stderr.splitlines() if x.startswith("{")]
    said = [e for e in logged if e["event"] == "replay_rows_rejected"]
    assert [(e["feed"], e["rows"][0]) for e in said] == [
        ("history", "rows rejected or fixed: duplicate=1")
    ]
    assert row in said[0]["rows"][1]


def test_config_check_refuses_a_setting_of_another_kind_of_feed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay feed with a `key_env` it never reads (a websocket feed's key, left in after a
    copy) is refused, naming the setting, not the variable that is not set (the check once
    failed on that; then it passed, and the setting did nothing)."""
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    body = (
        f'[rules]\nfile = "{RULES}"\n'
        f'[[feeds]]\nkind = "replay"\ndata = ["^RUT={RUT}"]\nkey_env = "NO_SUCH_KEY"\n'
        'start = "2024-07-01"\n'
    )
    path = write(tmp_path, body)
    code, _, err = check(path, capsys)
    assert (code, err) == (
        78,
        f"market-monitor: config error: {path}: feeds[0].key_env: a setting of websocket"
        " feeds, not of a replay feed: remove it\n",
    )


SQUEEZES = """
[[rules]]
id = "sq.named"
kind = "squeeze"
symbols = ["GME", "AMC", "TSLA"]
[[rules]]
id = "sq.none"
kind = "squeeze"
symbols = ["TSLA", "Gme.x"]
[[rules]]
id = "sq.fire"
kind = "squeeze"
symbols = ["TSLA"]
unknown_short_interest = "fire"
[[rules]]
id = "sq.all"
kind = "squeeze"
symbols = ["GME", "KOSS"]
[[rules]]
id = "sq.uni"
kind = "squeeze"
universe = true
exclude = ["IWM"]
"""


def test_config_check_names_the_squeeze_rules_its_short_interest_file_leaves_without_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the short-interest extract (figures of 14 symbols, GME and AMC among them, not
    TSLA), the check passes and warns of each squeeze rule that skips symbols without a
    figure: one with none covered cannot fire (replay's words), one with some names the
    others, a universe rule gets the share of `[engine] universe` covered; a rule that fires
    without figures, or has every one, is not said. An unreadable file is still exit 65."""
    from tests.conftest import SHORT_INTEREST

    rules = tmp_path / "rules.toml"
    rules.write_text(SQUEEZES)
    universe = '["GME", "AMC", "TSLA", "IWM", "KOSS", "AAPL", "Gme.x"]'
    body = (
        f'[store]\npath = "{tmp_path / "store"}"\n'
        f'[rules]\nfile = "{rules}"\nshort_interest = "{SHORT_INTEREST}"\n'
        f"[engine]\nuniverse = {universe}\n"
    )
    code, _, err = check(write(tmp_path, body), capsys)
    skip = 'and its unknown_short_interest is "skip"'
    assert (code, err.splitlines()) == (
        0,
        [
            "market-monitor: warning: rule sq.named: the short-interest file has no figure for"
            f" TSLA (1 of its 3 symbols), {skip}: it never fires for it",
            "market-monitor: warning: rule sq.none cannot fire: the short-interest file has no"
            f" figure for any of its symbols (Gme.x, TSLA), {skip}",
            "market-monitor: warning: rule sq.uni: the short-interest file has figures for 3"
            f" of the 6 symbols of [engine] universe it watches (50%), {skip}: it never fires"
            " for the others (AAPL, Gme.x, TSLA)",
        ],
    )
    missing = tmp_path / "gone.csv"
    code, _, err = check(write(tmp_path, body.replace(str(SHORT_INTEREST), str(missing))), capsys)
    assert code == 65 and str(missing) in err, err


def test_config_check_gives_a_universe_squeeze_the_share_of_the_stores_symbols_covered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without `[engine] universe`, a universe squeeze rule watches what the store's history
    holds: the squeeze extract's 14 symbols, all with figures, and ^RUT, without; the check
    says 14 of 15 are covered and names ^RUT. With no history yet it says nothing of it."""
    from monitor.cli import main
    from tests.conftest import RUT, SHORT_INTEREST, SQUEEZE

    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nid = "sq.uni"\nkind = "squeeze"\nuniverse = true\n')
    body = (
        f'[store]\npath = "{tmp_path / "store"}"\n'
        f'[rules]\nfile = "{rules}"\nshort_interest = "{SHORT_INTEREST}"\n'
    )
    conf = write(tmp_path, body)
    assert check(conf, capsys)[:3:2] == (0, "")
    data = ["--data", str(SQUEEZE), "--data", f"^RUT={RUT}", "--to", "2021-06-30"]
    assert main(["backfill", "--config", str(conf), *data]) == 0
    capsys.readouterr()
    code, _, err = check(conf, capsys)
    assert (code, err) == (
        0,
        "market-monitor: warning: rule sq.uni: the short-interest file has figures for 14 of"
        " the 15 symbols of the bar history it watches (93%), and its unknown_short_interest"
        ' is "skip": it never fires for the others (^RUT)\n',
    )
