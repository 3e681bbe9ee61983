"""The daemon's side of the rules' hints: `[engine] universe` refuses a symbol no feed brings, and
`config check` judges a 1m window by the daemon's session (960 minutes with extended hours)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from monitor import config as cfg
from monitor.config_check import config_check
from monitor.errors import ConfigError
from tests.test_service import write_config


def test_a_universe_symbol_no_feed_brings_is_refused_naming_it(tmp_path: Path) -> None:
    """`[engine] universe = ["IWM", "IWM\\u00a0"]` (a no-break space pasted in) is refused
    naming `engine.universe`, as a rule's symbols are; it was accepted and nothing came."""
    conf = write_config(tmp_path, "mm-universe", engine='universe = ["IWM", "IWM\\u00a0"]')
    with pytest.raises(ConfigError) as caught:
        cfg.load(conf, {})
    assert str(caught.value) == (
        f"{conf}: engine.universe: 'IWM\\xa0' is no symbol: it has a space at its start or end"
    )


def test_config_check_judges_a_minute_window_by_the_daemons_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1m surge over 400 minutes is warned of as never firing in the regular session's 390
    minutes, and not with `[engine] extended_hours` (960 minutes)."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nid = "m"\nkind = "surge"\ntimeframe = "1m"\nwindow = 400\n'
                     'universe = true\n')  # fmt: skip
    said = []
    for extended in ("false", "true"):
        conf = write_config(tmp_path, "mm-minutes", rules, engine=f"extended_hours = {extended}")
        assert config_check(argparse.Namespace(config=str(conf), format="toml")) == 0
        said.append(capsys.readouterr().err)
    assert said == [
        'market-monitor: warning: rules.file: rules[0] (id "m").window: 400 minutes never fit in'
        " a session: a 1m window stays within its session (390 minutes), so the rule never"
        " fires\n",
        "",
    ]
