"""A finite but absurd number (an interval of 1e300 s, a session expiry past MQTT's 4 bytes, a
client id past 65,535 bytes, a claim time Redis cannot take) is a config error naming its
field, from `config check` and `run` alike, not a crash at run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from monitor import config as cfg
from monitor.errors import ConfigError
from monitor.notify import config as ncfg
from tests.cli_here import cli_here
from tests.test_service import write_config

YEAR = "Expected `float` <= 31622400.0"


def refused(load: Callable[[Path, dict[str, str]], object], conf: Path) -> str:
    """The ConfigError `load(conf, {})` raises."""
    with pytest.raises(ConfigError) as caught:
        load(conf, {})
    return str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("[store]\n", "[store]\nsnapshot_interval_s = 1e300\n",
         f"store.snapshot_interval_s: {YEAR}"),
        ("[store]\n", "[store]\nintraday_interval_s = 1e14\n",
         f"store.intraday_interval_s: {YEAR}"),
        ("session_expiry_s = 60", "session_expiry_s = 5000000000\nmqtt_version = \"5\"",
         "feeds[0].session_expiry_s: Expected `int` <= 4294967295"),
        ("qos = 1\n", "qos = 1\nstale_after_s = 1e300\n", f"feeds[0].stale_after_s: {YEAR}"),
        ("qos = 1\n", "qos = 1\nmax_backlog_mb = 1e300\n",
         "feeds[0].max_backlog_mb: Expected `float` <= 1048576.0"),
        ("[redis]\n", "[redis]\nmaxlen = 100000000000000000000\n",
         "redis.maxlen: Expected `int` <= 9223372036854775807"),
        ("[redis]\n", "[redis]\ncheck_interval_s = 1e300\n", f"redis.check_interval_s: {YEAR}"),
        ("[engine]\n", "[engine]\ndedup_window_s = 1e300\n", f"engine.dedup_window_s: {YEAR}"),
        ("batch_max_age_ms = 20", "batch_max_age_ms = 1e9",
         "engine.batch_max_age_ms: Expected `float` <= 60000.0"),
        ("[engine]\n", "[engine]\ncatch_up_hold_s = 1e300\n",
         "engine.catch_up_hold_s: Expected `float` <= 3600.0"),
        ("[engine]\n", "[engine]\ncatch_up_hold_s = -1\n",
         "engine.catch_up_hold_s: Expected `float` >= 0.0"),
        ("[engine]\n", "[engine]\nqueue_size = 100000000000000000000\n",
         "engine.queue_size: Expected `int` <= 10000000"),
        ("[engine]\n", "[engine]\nmax_jump_confirm = 100000000000000000000\n",
         "engine.max_jump_confirm: Expected `int` <= 1000"),
        ("[http]\n", "[shutdown]\ngrace_s = 1e300\n[http]\n", f"shutdown.grace_s: {YEAR}"),
    ],
    ids=["snapshot", "intraday", "session-expiry", "stale", "backlog", "maxlen", "check",
         "dedup-window", "batch-age", "hold", "hold-negative", "queue", "jump-confirm", "grace"],
)  # fmt: skip
def test_an_absurd_number_in_the_daemons_config_is_refused_naming_it(
    tmp_path: Path, old: str, new: str, error: str
) -> None:
    """Each of the daemon's durations, sizes and counts past its bound (a year for durations)
    is refused at load, naming the field (1e300 s intervals crashed APScheduler, exit 1; a
    session expiry past 2^32 - 1 crash-looped the MQTT 5 feed with struct.error)."""
    conf = write_config(tmp_path, "mm-bounds")
    text = conf.read_text()
    assert old in text
    conf.write_text(text.replace(old, new, 1))
    assert refused(cfg.load, conf) == f"{conf}: {error}"


def test_run_with_an_interval_apscheduler_cannot_take_exits_78_not_1(tmp_path: Path) -> None:
    """`store.snapshot_interval_s = 1e300`: `config check` and `run` exit 78 with the same
    line naming the field (run exited 1 with an OverflowError traceback from APScheduler)."""
    conf = write_config(tmp_path, "mm-bounds-run")
    conf.write_text(conf.read_text().replace("[store]\n", "[store]\nsnapshot_interval_s = 1e300\n"))
    want = f"market-monitor: config error: {conf}: store.snapshot_interval_s: {YEAR}\n"
    check = cli_here("config", "check", "--config", str(conf))
    assert (check.returncode, check.stdout, check.stderr) == (78, "", want)
    run = cli_here("run", "--config", str(conf))
    assert (run.returncode, run.stderr) == (78, want)


def test_a_client_id_past_65535_bytes_is_refused_and_one_at_it_loads(tmp_path: Path) -> None:
    """An MQTT `client_id` of 65,536 bytes (UTF-8: 32,768 two-byte letters) is refused naming
    it (the feed crash-looped, never connecting); one of 65,535 bytes loads."""
    conf = write_config(tmp_path, "mm-bounds-id")
    text = conf.read_text()
    conf.write_text(
        text.replace('client_id = "mm-bounds-id-daemon"', f'client_id = "{"é" * 32768}"')
    )
    assert refused(cfg.load, conf) == (
        f"{conf}: feeds[0].client_id: past 65,535 bytes (UTF-8), the longest MQTT takes"
    )
    conf.write_text(
        text.replace('client_id = "mm-bounds-id-daemon"', f'client_id = "{"a" * 65535}"')
    )
    assert len(cfg.load(conf, {}).feeds[0].client_id) == 65535


@pytest.mark.parametrize(
    ("section", "line", "error"),
    [
        ("redis", "claim_idle_s = 1e300", f"redis.claim_idle_s: {YEAR}"),
        ("redis", "block_ms = 600000", "redis.block_ms: Expected `int` <= 60000"),
        ("redis", "claim_interval_s = 1e300", f"redis.claim_interval_s: {YEAR}"),
        ("redis", "delivery_log_ttl_s = 100000000000",
         "redis.delivery_log_ttl_s: Expected `int` <= 315360000"),
        ("redis", "dead_maxlen = 100000000000000000000",
         "redis.dead_maxlen: Expected `int` <= 9223372036854775807"),
        ("delivery", "backoff_cap_s = 1e300", f"delivery.backoff_cap_s: {YEAR}"),
        ("delivery", "max_attempts = 100000000000000000000",
         "delivery.max_attempts: Expected `int` <= 1000"),
        ("runaway", "window_s = 1e300", f"runaway.window_s: {YEAR}"),
        ("charts", "sessions = 100000000000000000000",
         "charts.sessions: Expected `int` <= 100000"),
        ("digest", "top = 100000000000000000000", "digest.top: Expected `int` <= 1000"),
    ],
)  # fmt: skip
def test_an_absurd_number_in_the_notifiers_config_is_refused_naming_it(
    tmp_path: Path, section: str, line: str, error: str
) -> None:
    """The notifier's durations, sizes and counts past their bounds are refused naming the
    field (`claim_idle_s = 1e300` exited 78 with Redis's "value is not an integer or out of
    range", naming no field; a backoff cap of 1e300 s crashed the digest's retry)."""
    conf = tmp_path / "notify.toml"
    conf.write_text(
        f'[{section}]\n{line}\n[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/a"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    assert refused(ncfg.load, conf) == f"{conf}: {error}"
