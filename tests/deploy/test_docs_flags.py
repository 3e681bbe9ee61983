"""Every option of every command is named in the README or docs/ (`status --timeout` was not).
A name shared by several commands (`--to`, `--format`) passes once any names it: the README says
what each does for `backfill`, `feed-replay`, `demo` and `config check` now, unchecked."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

from monitor.cli import _parser
from tests.conftest import ROOT


def options(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, str]]:
    """(command, --option) of every command and subcommand, hidden options left out."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, f"{path} {name}".strip())
        elif action.help != argparse.SUPPRESS:
            yield from ((path, o) for o in action.option_strings if o.startswith("--"))


def test_every_option_of_every_command_is_documented() -> None:
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    missing = [
        f"{command} {option}"
        for command, option in options(_parser())
        if option not in ("--help", "--version")
        and not re.search(re.escape(option) + r"(?![\w-])", text)
    ]
    assert missing == []
