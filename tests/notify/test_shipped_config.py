"""What ships with the notifier agrees with itself and with the daemon: quiet hours that count on
the digest, the example configs' store, a missing bars file said out loud, and the commands,
paths and field names the docs give."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from monitor import config as daemon_config
from monitor.errors import ConfigError
from monitor.notify.compose import Composer
from monitor.notify.config import load, parse
from monitor.notify.delivery import HttpJsonSender
from monitor.notify.parsers import add_parsers
from monitor.notify.silences import Silence
from monitor.store import BARS
from tests.notify.conftest import RUT_ALERT, alert

ROOT = Path(__file__).resolve().parents[2]
NOTIFY_UNIT = ROOT / "deploy" / "systemd" / "market-monitor-notify.service"
EXAMPLE_ENV = {"SLACK_TOKEN": "T/B/C", "SMTP_USER": "u", "SMTP_PASSWORD": "p"}


def quiet_email(digest: dict[str, Any]) -> dict[str, Any]:
    """A config whose `email` receiver sends its quiet-hours alerts to the digest."""
    return {
        "receivers": [
            {"name": "chat", "url": "json://127.0.0.1:9/chat"},
            {
                "name": "email",
                "url": "json://127.0.0.1:9/email",
                "quiet_hours": {"start": "20:00", "end": "08:00", "mode": "digest"},
            },
        ],
        "route": {"receivers": ["chat", "email"]},
        "digest": digest,
    }


@pytest.mark.parametrize(
    ("digest", "error"),
    [
        ({}, 'config: receivers[1].quiet_hours.mode: "digest" needs [digest] enabled = true, '
             "or 'email' never sees the alerts of its quiet hours "
             '(use mode = "queue" to hold them)'),
        ({"enabled": True, "receivers": ["chat"]},
         'config: receivers[1].quiet_hours.mode: "digest" but receiver \'email\' gets no '
         "digest: add it to digest.receivers, or use mode = \"queue\" to hold its alerts until "
         "the hours end"),
        ({"enabled": True, "receivers": ["email"]}, None),
        ({"enabled": True}, None),  # the digest goes to the root route's receivers
    ],
)  # fmt: skip
def test_digest_mode_quiet_hours_need_the_receiver_to_get_the_digest(
    digest: dict[str, Any], error: str | None
) -> None:
    """Quiet hours in `digest` mode are refused at load, naming the receiver, unless the digest
    is on and goes to that receiver: else its alerts of those hours would reach nobody."""
    if error is None:
        assert parse(quiet_email(digest), environ={}).receivers[1].name == "email"
    else:
        with pytest.raises(ConfigError) as err:
            parse(quiet_email(digest), environ={})
        assert str(err.value) == error


def test_the_example_configs_point_at_one_store() -> None:
    """Loaded from the same folder, config/monitor.example.toml's store and
    config/notify.example.toml's chart bars are the same file."""
    daemon = daemon_config.load(ROOT / "config" / "monitor.example.toml", environ={})
    notify = load(ROOT / "config" / "notify.example.toml", environ=EXAMPLE_ENV)
    store = daemon_config.resolve(daemon, daemon.store.path)
    assert notify.bars_path is not None
    assert notify.bars_path.resolve() == (store / BARS).resolve()


async def test_a_missing_bars_file_is_logged_once_and_charts_come_back_with_it(
    tmp_path: Path, bars_file: Path
) -> None:
    """With charts on and no bars file, the check at start warns once (naming the file), the
    messages after it go without a chart and warn no more; once the file is there, they have
    their chart."""
    path = tmp_path / "store" / BARS
    config = parse(
        {
            "receivers": [{"name": "chat", "url": "json://127.0.0.1:9/chat"}],
            "route": {"receivers": ["chat"]},
            "charts": {"bars": str(path)},
        },
        environ={},
    )
    sender = HttpJsonSender("json://127.0.0.1:9/chat")
    composer = Composer(config, {"chat": "markdown"}, {"chat": sender})
    with capture_logs() as logs:
        composer.check_charts()
        without = [await composer.message("chat", [a]) for a in (RUT_ALERT, alert(1))]
        path.parent.mkdir()
        shutil.copy(bars_file, path)
        with_chart = await composer.message("chat", [msgspec.structs.replace(RUT_ALERT, id="x")])
    await sender.aclose()
    assert [len(m.attachments) for m in [*without, with_chart]] == [0, 0, 1]
    assert [(e["event"], e["log_level"], e["path"]) for e in logs] == [
        ("bars_file_missing", "warning", str(path))
    ]


async def test_charts_on_without_a_bars_file_named_are_reported_at_start() -> None:
    """Charts on (the default) for a receiver that takes attachments, and no `[charts] bars`:
    the check at start warns that messages go without charts; a receiver that takes none, or
    charts off, warns nothing."""
    receivers = [{"name": "chat", "url": "json://127.0.0.1:9/chat"}]
    warned = []
    for charts, takes in (({}, True), ({}, False), ({"enabled": False}, True)):
        config = parse(
            {"receivers": receivers, "route": {"receivers": ["chat"]}, "charts": charts},
            environ={},
        )
        sender = HttpJsonSender("json://127.0.0.1:9/chat")
        if not takes:
            sender.takes_attachments = False
        with capture_logs() as logs:
            Composer(config, {"chat": "markdown"}, {"chat": sender}).check_charts()
        await sender.aclose()
        warned.append([(e["event"], e["log_level"]) for e in logs])
    assert warned == [[("bars_file_unset", "warning")], [], []]


def documented_commands(path: Path) -> list[str]:
    """Every `market-monitor notify|silence ...` command line in a Markdown file's code, with
    `[optional]` parts and comments left out (bare mentions such as `market-monitor notify`,
    naming the command in a sentence, are not command lines)."""
    text = path.read_text().replace("\\\n", " ")
    fence = r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```"  # indented in a list item too
    blocks = re.findall(fence, text, flags=re.S | re.M)
    prose = re.sub(fence, "", text, flags=re.S | re.M)
    lines = [line for b in blocks for line in b.splitlines()]
    lines += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    found = []
    for line in lines:
        m = re.search(r"market-monitor (?:notify|silence) [^#]*", line)
        if m:
            found.append(re.sub(r"\[[^\]]*\]", "", m.group(0)).strip())
    return found


@pytest.mark.parametrize("doc", ["README.md", "docs/notify.md"])
def test_documented_notify_and_silence_commands_parse_and_give_a_config(doc: str) -> None:
    """Each `market-monitor notify ...` / `silence ...` example in the README and the notifier's
    docs is accepted by the real parser and has the `--config` every one of them needs."""
    parser = argparse.ArgumentParser(prog="market-monitor", exit_on_error=False)
    add_parsers(parser.add_subparsers(dest="command"))
    commands = documented_commands(ROOT / doc)
    assert len(commands) >= 2
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        assert (command, bool(getattr(args, "config", None))) == (command, True)


def test_docs_name_the_silence_fields_as_they_are_stored() -> None:
    """docs/notify.md lists a silence's stored fields by their names in Redis (`starts_at`,
    `ends_at`, `created_by`, ...), exactly the Silence struct's."""
    text = (ROOT / "docs" / "notify.md").read_text()
    listed = re.search(r"`silence add` stores `\{([^}]*)\}`", " ".join(text.split()))
    assert listed is not None
    names = [n.strip() for n in listed.group(1).split(",")]
    assert names == [f.name for f in msgspec.structs.fields(Silence)]


def test_the_systemd_steps_install_a_notifier_config_that_exists() -> None:
    """The README's systemd steps and the notifier unit's header install
    /etc/market-monitor/notify.toml from a file the repository has."""
    for source in (ROOT / "README.md", NOTIFY_UNIT):
        found = re.findall(
            r"install -m 0644 (\S+) /etc/market-monitor/notify\.toml", source.read_text()
        )
        assert [(source.name, (ROOT / f).is_file()) for f in found] == [(source.name, True)]


def test_notifier_credentials_are_read_where_systemd_puts_the_units_credentials() -> None:
    """Every /run/credentials/ path given for the notifier names its unit's directory,
    market-monitor-notify.service (systemd's $CREDENTIALS_DIRECTORY for it)."""
    for source in (
        ROOT / "config" / "notify.example.toml",
        ROOT / "docs" / "notify.md",
        NOTIFY_UNIT,
    ):
        dirs = re.findall(r"/run/credentials/([^/\s]+)/", source.read_text())
        assert (source.name, set(dirs)) == (source.name, {"market-monitor-notify.service"})
