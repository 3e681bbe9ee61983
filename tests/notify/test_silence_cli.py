"""`market-monitor silence add|list|expire` as an operator types it, against the real Redis."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import msgspec
import redis

from monitor.core.model import encode_alert
from monitor.notify.silences import Silence
from tests.cli_here import cli_here
from tests.notify.conftest import RUT_ALERT, alert


def test_silence_add_list_and_expire(tmp_path: Path) -> None:
    """A silence added for a rule and symbol is listed as active with its comment, expires on
    request, and is then listed only with --all."""
    stream = f"mm-silence-{uuid.uuid4().hex[:8]}"
    env: dict[str, str] = {}
    conf = str(tmp_path / "notify.toml")
    Path(conf).write_text(
        f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nstream = "{stream}"\n'
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/alerts"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    client = redis.Redis()
    try:
        added = cli_here(
            "silence", "add", "--config", conf, "--rule", "squeeze.daily", "--symbol", "GME",
            "--for", "2h", "--comment", "earnings week", env=env,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        match = re.fullmatch(
            r"(\S+) silences squeeze\.daily on GME until \S+ \S+ UTC\n", added.stdout
        )
        assert match is not None, added.stdout
        sid = match.group(1)
        listed = cli_here("silence", "list", "--config", conf, env=env)
        assert listed.returncode == 0, listed.stderr
        line = next(x for x in listed.stdout.splitlines() if x.startswith(sid))
        assert "active" in line and "squeeze.daily" in line and "GME" in line
        assert line.endswith("earnings week")
        expired = cli_here("silence", "expire", "--config", conf, sid, env=env)
        assert (expired.returncode, expired.stdout) == (0, f"{sid} expired\n")
        assert sid not in cli_here("silence", "list", "--config", conf, env=env).stdout
        everything = cli_here("silence", "list", "--config", conf, "--all", env=env).stdout
        assert f"{sid}  expired" in everything
        assert cli_here("silence", "expire", "--config", conf, "nope", env=env).returncode == 1
    finally:
        for key in client.scan_iter(f"{stream}*"):
            client.delete(key)
        client.close()


def test_silence_without_config_uses_the_default_redis_and_stream() -> None:
    """`silence add --rule ID --for 2h --comment ...` as issue #4 writes it, with no --config:
    the silence goes to the default Redis and stream's hash (`market-monitor:alerts:silences`,
    where a notifier with the default [redis] reads it), and list and expire find it. Before,
    each exited 78 asking for --config."""
    rule = f"nocfg-{uuid.uuid4().hex[:8]}"
    client = redis.Redis()
    key = "market-monitor:alerts:silences"
    try:
        added = cli_here(
            "silence", "add", "--rule", rule, "--for", "2h", "--comment", "test", env={}
        )
        assert added.returncode == 0, added.stderr
        silence_id = added.stdout.split()[0]
        assert client.hget(key, silence_id) is not None
        listed = cli_here("silence", "list", env={})
        assert listed.returncode == 0 and rule in listed.stdout
        expired = cli_here("silence", "expire", silence_id, env={})
        assert (expired.returncode, expired.stdout.strip()) == (0, f"{silence_id} expired")
    finally:
        for found, raw in client.hgetall(key).items():
            if rule.encode() in raw:
                client.hdel(key, found)
        client.close()


def test_silence_without_config_takes_the_notifiers_environment_overrides() -> None:
    """Without --config, the `MARKET_MONITOR_NOTIFY__REDIS__*` variables set the Redis and the
    stream as they would a config file's (before, they were ignored, and the silence went to
    the default stream's hash without a word)."""
    stream = f"mm-silence-env-{uuid.uuid4().hex[:8]}"
    env = {"MARKET_MONITOR_NOTIFY__REDIS__STREAM": stream}
    client = redis.Redis()
    try:
        added = cli_here("silence", "add", "--rule", "x.y", "--for", "1h", env=env)
        assert added.returncode == 0, added.stderr
        assert client.hget(f"{stream}:silences", added.stdout.split()[0]) is not None
        # (said, as a silence on a Redis the notifier does not read would silence nothing)
        assert added.stderr == (
            "market-monitor: silence: no --config: the default Redis"
            f" redis://127.0.0.1:6379/0, stream {stream}\n"
        )
        empty = cli_here(
            "silence", "list", env={"MARKET_MONITOR_NOTIFY__REDIS__STREAM": stream + "x"}
        )
        assert (empty.stdout, empty.stderr.splitlines()[-1]) == ("", "no active silences")
        bad = cli_here("silence", "list", env={"MARKET_MONITOR_NOTIFY__REDIS__BLOCK_MS": "many"})
        assert bad.returncode == 78 and "MARKET_MONITOR_NOTIFY__REDIS__" in bad.stderr
    finally:
        client.delete(f"{stream}:silences")
        client.close()


def test_silence_list_spells_out_a_comments_control_characters() -> None:
    """A comment holding a terminal escape (`\\x1b[31m`) is listed with it spelled out, not
    sent to the terminal (which it would recolour, or worse)."""
    stream = f"mm-silence-esc-{uuid.uuid4().hex[:8]}"
    env = {"MARKET_MONITOR_NOTIFY__REDIS__STREAM": stream}
    client = redis.Redis()
    try:
        added = cli_here(
            "silence", "add", "--rule", "x.y", "--for", "1h", "--comment", "\x1b[31mred", env=env
        )
        assert added.returncode == 0, added.stderr
        listed = cli_here("silence", "list", env=env)
        assert "\x1b" not in listed.stdout and "\\x1b[31mred" in listed.stdout
    finally:
        client.delete(f"{stream}:silences")
        client.close()


def test_silence_with_the_services_config_needs_none_of_its_receivers_secrets(
    tmp_path: Path,
) -> None:
    """`silence add|list|expire --config` with the service's notify.toml, from a shell that has
    none of the receivers' secrets (a `{SLACK_TOKEN}` unset, a `url_file` credential of a unit
    not running), works: a silence needs only [redis]. Before, each exited 78 naming the
    receiver's url, so an on-call could not silence a noisy rule without the service's env."""
    stream = f"mm-silence-nosecret-{uuid.uuid4().hex[:8]}"
    conf = tmp_path / "notify.toml"
    conf.write_text(
        f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nstream = "{stream}"\n'
        '[[receivers]]\nname = "chat"\nurl = "slack://{MM_TEST_UNSET_SLACK_TOKEN}/#alerts"\n'
        '[[receivers]]\nname = "mail"\nurl_file = "/nonexistent/credentials/mail"\n'
        '[route]\nreceivers = ["chat", "mail"]\n'
    )
    client = redis.Redis()
    try:
        added = cli_here(
            "silence", "add", "--config", str(conf), "--rule", "x.y", "--for", "1h", env={}
        )
        assert (added.returncode, added.stderr) == (0, "")
        sid = added.stdout.split()[0]
        assert client.hget(f"{stream}:silences", sid) is not None
        listed = cli_here("silence", "list", "--config", str(conf), env={})
        assert listed.returncode == 0 and listed.stdout.startswith(f"{sid}  active")
        expired = cli_here("silence", "expire", "--config", str(conf), sid, env={})
        assert (expired.returncode, expired.stdout) == (0, f"{sid} expired\n")
        # (the rest of the config is still checked: a route naming no receiver is refused)
        conf.write_text(conf.read_text().replace('["chat", "mail"]', '["chat", "pager"]'))
        bad = cli_here("silence", "list", "--config", str(conf), env={})
        assert bad.returncode == 78 and "no receiver named 'pager'" in bad.stderr
    finally:
        client.delete(f"{stream}:silences")
        client.close()


def test_silence_add_says_when_its_rule_or_symbol_matches_no_alert_in_the_stream(
    tmp_path: Path,
) -> None:
    """A silence of a misspelt rule (`streak.daly`) or symbol (`gme`) is set as before (exit 0,
    the same line on stdout), and one line on stderr says that it matches none of the alerts in
    the stream, the closest they hold and how to end it; one that matches says nothing. Before,
    such a silence was set without a word, and silenced nothing."""
    stream = f"mm-silence-typo-{uuid.uuid4().hex[:8]}"
    conf = str(tmp_path / "notify.toml")
    Path(conf).write_text(
        f'[redis]\nurl = "redis://127.0.0.1:6379/0"\nstream = "{stream}"\n'
        '[[receivers]]\nname = "hook"\nurl = "json://127.0.0.1:9/alerts"\n'
        '[route]\nreceivers = ["hook"]\n'
    )
    client = redis.Redis()
    for a in [RUT_ALERT, alert(1, symbol="GME"), alert(2, symbol="AMC")]:
        client.xadd(stream, {"id": a.id, "alert": encode_alert(a)})
    add = ["silence", "add", "--config", conf, "--for", "2h"]
    try:
        rule = cli_here(*add, "--rule", "streak.daly", env={})
        symbol = cli_here(*add, "--rule", "squeeze.*", "--symbol", "gme", env={})
        right = cli_here(*add, "--rule", "squeeze.daily", "--symbol", "GME", env={})
        kept = client.hvals(f"{stream}:silences")
        stored = sorted(msgspec.json.decode(v, type=Silence).rule for v in kept)
    finally:
        for key in client.scan_iter(f"{stream}*"):
            client.delete(key)
        client.close()
    said = (
        ". The silence is set all the same (a rule or symbol may not have fired yet); if"
        " misspelt, `silence expire {}` ends it\n"
    )
    rule_id, symbol_id = rule.stdout.split()[0], symbol.stdout.split()[0]
    assert (rule.returncode, rule.stdout.split()[1:3]) == (0, ["silences", "streak.daly"])
    assert rule.stderr == (
        f"market-monitor: warning: --rule streak.daly matches no rule of the 3 alerts in {stream}"
        " (did you mean streak.daily?); theirs: squeeze.daily, streak.daily" + said.format(rule_id)
    )
    assert (symbol.returncode, symbol.stdout.split()[1:5]) == (
        0,
        ["silences", "squeeze.*", "on", "gme"],
    )
    assert symbol.stderr == (
        f"market-monitor: warning: --symbol gme matches no symbol of the 3 alerts in {stream}"
        " (did you mean GME?)" + said.format(symbol_id)
    )
    assert (right.returncode, right.stderr) == (0, "")
    assert stored == ["squeeze.*", "squeeze.daily", "streak.daly"]
