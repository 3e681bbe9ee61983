"""The daemon's commands as a user runs them: the Quickstart daemon, tail, feed-replay, HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import msgspec
import pytest
import redis

from monitor import config as cfg
from monitor.core.model import Alert, encode_alert
from monitor.service import Daemon, run
from tests.cli_here import cli_here
from tests.conftest import DATA, NO_SHORT_INTEREST_NOTE, ROOT, RULES, RUT
from tests.test_service import replay_alerts, subscribed, write_config

pytestmark = pytest.mark.integration


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m monitor ARGS` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_quickstart_daemon_prints_the_july_2024_rally(tmp_path: Path) -> None:
    """`run --config config/demo.toml` streams July 2024 through the daemon, prints the streak and
    surge of 2024-07-16 as they fire, and exits 0 when the replay is done. Its alerts reach
    the stream, with dedupe keys that expire within seconds (`dedupe_ttl_s = 5`), so that the
    next run of the demo publishes them again."""
    stream = f"mm-demo-{uuid.uuid4().hex[:8]}"
    res = cli(
        "run", "--config", "config/demo.toml",
        env={"MARKET_MONITOR__STORE__PATH": str(tmp_path / "store"),
             "MARKET_MONITOR__REDIS__STREAM": stream},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    client = redis.Redis()
    try:
        ids = [f[b"id"].decode() for _, f in client.xrange(stream)]
        assert len(ids) == res.stdout.count("\n    History:") > 5
        assert 0 < client.ttl(f"{stream}:published:{ids[-1]}") <= 5
    finally:
        client.delete(stream, *client.keys(f"{stream}:*"))
        client.close()
    assert (
        "[2024-07-16] NOTICE streak.daily ^RUT: Russell 2000 rose more than 1.0% in each of "
        "5 sessions (+11.5% in all), closing at 2,263.67.\n"
        "    History: 4 earlier times since 1998; over the next 21 sessions, +6.0% on average "
        "(median +5.7%), 4 of 4 up."
    ) in res.stdout
    assert "its largest 5-session gain since 2020-04-29" in res.stdout


def test_quickstart_daemon_without_redis_keeps_alerts_in_the_outbox(tmp_path: Path) -> None:
    """With no Redis listening, the demo still prints its alerts, warns once that they wait in
    the outbox, and exits 0; the outbox holds them for the next start."""
    from monitor.alerts.outbox import Outbox
    from tests.alerts.redis_server import free_port

    store = tmp_path / "store"
    res = cli(
        "run", "--config", "config/demo.toml",
        env={
            "MARKET_MONITOR__STORE__PATH": str(store),
            "MARKET_MONITOR__REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
            "MARKET_MONITOR__LOG__LEVEL": "warning",
        },
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "streak.daily ^RUT" in res.stdout
    assert res.stderr.count('"outbox_waiting"') == 1
    with Outbox(store / "outbox.sqlite") as outbox:
        assert outbox.depth() == res.stdout.count("\n    History:")


def test_tail_prints_the_stream_since_an_id() -> None:
    """`tail --since 0 --json --count N` prints the stream's alerts as JSON lines; without --json
    they are readable text."""
    stream = f"mm-tail-{uuid.uuid4().hex[:8]}"
    alerts = replay_alerts(dt.date(2024, 7, 16), dt.date(2024, 7, 16))
    client = redis.Redis()
    try:
        for a in alerts:
            client.xadd(stream, {"id": a.id, "alert": encode_alert(a)})
        env = {"MARKET_MONITOR__REDIS__STREAM": stream}
        conf = ROOT / "config" / "demo.toml"
        res = cli_here(
            "tail",
            "--config",
            str(conf),
            "--since",
            "0",
            "--json",
            "--count",
            str(len(alerts)),
            env=env,
        )
        assert res.returncode == 0, res.stderr
        assert [msgspec.json.decode(x, type=Alert) for x in res.stdout.splitlines()] == alerts
        res = cli_here("tail", "--config", str(conf), "--since", "0", "--count", "1", env=env)
        assert alerts[0].text in res.stdout
        assert alerts[0].history is not None
        assert f"History: {alerts[0].history.summary}" in res.stdout
    finally:
        client.delete(stream)
        client.close()


async def test_feed_replay_publishes_bars_the_daemon_turns_into_alerts(tmp_path: Path) -> None:
    """`feed-replay` publishes ^RUT bars to MQTT; the daemon's /metrics (its counters at 0 from
    the start) and /healthz report them and the stream gets replay's alerts."""
    prefix = f"mm-fr-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    assert (
        cli(
            "backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-09"
        ).returncode
        == 0
    )
    stop = asyncio.Event()
    ready: list[Daemon] = []
    task = asyncio.create_task(
        run(cfg.load(conf), stop=stop, install_signals=False, on_ready=ready.append)
    )
    try:
        daemon = await subscribed(ready)
        port = int(daemon.counters.get("http_port"))
        before = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        for zero in (
            "ticks_in", "alerts_published", "redis_errors", "daily_sessions_missing",
            "alerts_deduplicated", "redis_check_failures", "price_reference_resets",
        ):  # fmt: skip
            assert f"market_monitor_{zero} 0\n" in before  # (a series before its first event)
        for per_feed in (
            "feed_reconnects", "feed_queue_full_waits", "feed_gap_seconds", "feed_paused",
            "broker_messages_dropped",
        ):  # fmt: skip
            assert re.search(rf'market_monitor_{per_feed}\{{feed="[^"]+"\}} 0\n', before)
        res = await asyncio.to_thread(
            cli, "feed-replay", "--data", f"^RUT={RUT}", "--from", "2024-07-10",
            "--to", "2024-07-16", "--topic", f"{prefix}/bars",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert "published 5 bars" in res.stderr
        async with asyncio.timeout(15):
            while daemon.counters.total("alerts_published") < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert 'market_monitor_bars_closed{timeframe="1d"} 5' in metrics
        assert 'market_monitor_alerts_fired{rule="streak.daily"} 1' in metrics
        assert "market_monitor_alerts_published 3" in metrics
        assert "market_monitor_outbox_depth 0" in metrics
        health = json.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz"))
        assert health["status"] == "healthy"
        assert health["reasons"] == []
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
        r = redis.Redis()
        r.delete(f"{prefix}:alerts")
        r.close()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def test_bad_daemon_config_exits_78_naming_the_field(tmp_path: Path) -> None:
    """A config with a wrong type or an unknown key exits 78 with the field path."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[redis]\nmaxlen = "many"\n')
    res = cli_here("run", "--config", str(bad))
    assert res.returncode == 78
    assert "redis.maxlen: Expected `int`, got `str`" in res.stderr
    bad.write_text('[[feeds]]\nkind = "mqtt"\nurl = "mqtt://x"\ntopic = "a"\n')
    res = cli_here("run", "--config", str(bad))
    assert res.returncode == 78
    assert "feeds[0]: Object contains unknown field `topic`; did you mean `topics`?" in res.stderr
    assert "Traceback" not in res.stderr


def test_config_check_warns_of_rules_naming_symbols_outside_the_universe(tmp_path: Path) -> None:
    """With `[engine] universe` set, `config check` still passes but warns of each rule naming
    a symbol the universe leaves out (its prices would be rejected): here QQQ, named only by the
    rotation; and of the universe rules that exclude both its symbols (they can never fire).
    Without a universe, nothing is said."""
    conf = write_config(tmp_path, "mm-check", engine='universe = ["^RUT", "IWM"]')
    res = cli_here("config", "check", "--config", str(conf))
    assert res.returncode == 0, res.stderr
    empty = "its universe is empty: every symbol of [engine] universe (IWM, ^RUT) is in exclude"
    never = "".join(
        f"market-monitor: warning: rule {rule} cannot fire: {empty}\n"
        for rule in ("squeeze.daily", "breadth.5d", "movers.5d")
    )
    assert res.stderr == (
        "market-monitor: warning: rule rotation.iwm_qqq names QQQ, outside [engine] universe: "
        f"it never sees its prices\n{never}{NO_SHORT_INTEREST_NOTE}"
    )
    res = cli_here("config", "check", "--config", str(write_config(tmp_path, "mm-check")))
    assert res.returncode == 0 and res.stderr == NO_SHORT_INTEREST_NOTE, res.stderr
    # A switched-off rule never sees prices anyway: nothing to warn of.
    rules = tmp_path / "rules.toml"
    rules.write_text(
        RULES.read_text().replace(
            'id = "rotation.iwm_qqq"', 'id = "rotation.iwm_qqq"\nenabled = false'
        )
    )
    conf = write_config(tmp_path, "mm-check", engine='universe = ["^RUT", "IWM"]')
    conf.write_text(conf.read_text().replace(str(RULES), str(rules)))
    res = cli_here("config", "check", "--config", str(conf))
    assert res.returncode == 0 and res.stderr == never + NO_SHORT_INTEREST_NOTE, res.stderr


def test_a_read_only_store_stops_the_daemon_with_a_clear_error(tmp_path: Path) -> None:
    """When the outbox cannot be written the daemon refuses to run (rather than lose alerts):
    a one-line error naming the file, exit 74, no traceback."""
    store = tmp_path / "store"
    store.mkdir()
    outbox = store / "outbox.sqlite"
    outbox.write_bytes(b"")
    subprocess.run(["chattr", "+i", str(outbox)], check=False)
    try:
        if os.access(outbox, os.W_OK) and os.geteuid() != 0:
            outbox.chmod(0o400)
        res = cli(
            "run", "--config", "config/demo.toml",
            env={"MARKET_MONITOR__STORE__PATH": str(store)},
        )  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(outbox)], check=False)
    if res.returncode == 0:
        pytest.skip("this filesystem lets root write an immutable file (no chattr support)")
    assert res.returncode == 74, res.stderr[-2000:]
    assert "outbox.sqlite" in res.stderr
    assert "Traceback" not in res.stderr


def spy_minutes_config(tmp_path: Path) -> Path:
    """A daemon whose replay feed streams the SPY minute bars of 2024-03-08 and 2024-03-11."""
    conf = tmp_path / "minutes.toml"
    conf.write_text(
        f"""
[store]
path = "{tmp_path / "store"}"
[[feeds]]
kind = "replay"
name = "spy"
data = ["SPY={ROOT / "tests" / "data" / "spy_1min_2024-03-08_2024-03-11.csv"}"]
speed = 1000000
exit_when_done = true
[redis]
url = "redis://127.0.0.1:6379/0"
stream = "mm-minutes-{uuid.uuid4().hex[:8]}"
[rules]
file = "{ROOT / "config" / "rules.toml"}"
[http]
port = 0
"""
    )
    return conf


async def test_a_replay_feed_of_minute_bars_builds_the_session_bars(tmp_path: Path) -> None:
    """Minute bars streamed by a replay feed close, minute by minute, into session bars equal
    to the aggregate of each session's 390 regular-hours minutes; extended-hours minutes are
    counted as rejected (outside the session), not silently dropped."""
    import polars as pl

    from monitor.datafiles import DataSpec
    from monitor.minutefiles import read_minutes

    ready: list[Daemon] = []
    code = await run(
        cfg.load(spy_minutes_config(tmp_path)), install_signals=False, on_ready=ready.append
    )
    assert code == 0
    daemon = ready[0]
    minutes = read_minutes(
        DataSpec(path=str(DATA / "spy_1min_2024-03-08_2024-03-11.csv"), symbol="SPY")
    )
    ny = pl.col("start").dt.convert_time_zone("America/New_York")
    regular = minutes.filter(
        (ny.dt.hour().cast(pl.Int32) * 60 + ny.dt.minute()).is_between(9 * 60 + 30, 16 * 60 - 1)
    ).with_columns(ny.dt.date().alias("session"))
    want = (
        regular.sort("start")
        .group_by("session", maintain_order=True)
        .agg(
            pl.col("open").first(), pl.col("high").max(), pl.col("low").min(),
            pl.col("close").last(), pl.col("volume").sum(),
        )
        .rows()
    )  # fmt: skip
    got = daemon.engine.daily.filter(pl.col("symbol") == "SPY").drop("symbol").rows()
    assert got == want
    assert len(want) == 2
    assert daemon.counters.get("rejections", reason="outside_session") == minutes.height - 780


def test_feed_replay_publishes_minute_bars_paced_by_speed() -> None:
    """`feed-replay` of a minute file publishes one message per minute bar, in time order."""
    import paho.mqtt.client as mqtt

    topic = f"mm-fr1m-{uuid.uuid4().hex[:8]}/bars"
    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, m: got.append(m.payload)
    sub.connect("127.0.0.1", 1883)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    try:
        import time

        time.sleep(0.3)
        res = cli(
            "feed-replay", "--data", f"SPY={DATA / 'spy_1min_2024-03-08_2024-03-11.csv'}",
            "--from", "2024-03-08", "--to", "2024-03-08", "--topic", topic, "--speed", "100000",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 10
        while len(got) < 794 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert "published 794 bars" in res.stderr
    first = msgspec.json.decode(got[0])
    assert first == {
        "symbol": "SPY", "timeframe": "1m", "start": 1709888400000, "open": 515.75,
        "high": 515.85, "low": 515.7, "close": 515.7, "volume": 2658.0,
    }  # fmt: skip
    starts = [msgspec.json.decode(m)["start"] for m in got]
    assert len(starts) == 794 and starts == sorted(starts)


def test_backfill_names_sessions_missing_in_the_store(tmp_path: Path) -> None:
    """A backfill leaving a hole in the store's history (^RUT without 2024-07-11) says so on
    stderr, as replay does; backfilling the missing bar fills it, and the line goes."""
    conf = write_config(tmp_path, "mm-backfill-gaps")
    holed = tmp_path / "rut.csv"
    lines = RUT.read_text().splitlines(keepends=True)
    holed.write_text("".join(ln for ln in lines if not ln.startswith("2024-07-11")))
    res = cli_here(
        "backfill", "--config", str(conf), "--data", f"^RUT={holed}", "--to", "2024-07-31"
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == (
        "market-monitor: the store: 1 session missing inside the history of 1 symbol (^RUT 1 "
        "from 2024-07-11): a window or streak does not reach across them\n"
    )
    res = cli_here("backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-31")
    assert (res.returncode, res.stderr) == (0, "")
    assert res.stdout.startswith("backfilled 9,295 bars of 1 symbol into ")


def test_backfill_keeps_weekend_and_holiday_rows_out_of_the_store(tmp_path: Path) -> None:
    """Rows dated on a Saturday and on July 4th are not stored (the daemon would load them as
    sessions): backfill counts them as `not_a_session` and names them, as replay does."""
    from monitor.store import Store

    conf = write_config(tmp_path, "mm-backfill-off-days")
    data = tmp_path / "x.csv"
    data.write_text(
        "date,close\n2024-07-03,10\n2024-07-04,10.2\n2024-07-05,10.4\n2024-07-06,10.5\n"
        "2024-07-08,10.6\n"
    )
    res = cli_here("backfill", "--config", str(conf), "--data", f"X={data}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("backfilled 3 bars of 1 symbol into ")
    assert res.stderr == (
        "market-monitor: rows rejected or fixed: not_a_session=2\n"
        "market-monitor: the first rows rejected: X 2024-07-04 (not_a_session), "
        "X 2024-07-06 (not_a_session)\n"
    )
    stored = Store(tmp_path / "store").load_bars().get_column("session").to_list()
    assert [d.isoformat() for d in stored] == ["2024-07-03", "2024-07-05", "2024-07-08"]
