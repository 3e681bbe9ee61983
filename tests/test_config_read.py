"""Reading a config file (`monitor.config.read_toml`, the daemon's and the notifier's): `base_dir`
is where the file is, never a setting, and no message offers it as one."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor import config as cfg
from monitor.errors import ConfigError
from monitor.notify import config as ncfg
from tests.test_service import write_config


def refused(conf: Path, environ: dict[str, str], load: str = "daemon") -> str:
    """The ConfigError loading `conf` (the daemon's, or the notifier's) raises."""
    with pytest.raises(ConfigError) as caught:
        (cfg.load if load == "daemon" else ncfg.load)(conf, environ)
    return str(caught.value)


def test_base_dir_set_in_the_file_or_the_environment_is_refused(tmp_path: Path) -> None:
    """`base_dir` in the file or `MARKET_MONITOR__BASE_DIR` was overwritten without a word by
    the file's folder (and messages listed it as a key): each is a config error naming where
    it was set, for the notifier's config too; an unknown key's list of keys leaves it out."""
    conf = write_config(tmp_path, "mm-base-dir")
    text = conf.read_text()
    said = "not a setting: paths are relative to the config file's folder"
    conf.write_text(f'base_dir = "/elsewhere"\n{text}')
    assert refused(conf, {}) == f"{conf}: base_dir: {said}"
    conf.write_text(text)
    assert refused(conf, {"MARKET_MONITOR__BASE_DIR": "/elsewhere"}) == (
        f"MARKET_MONITOR__BASE_DIR: {said}"
    )
    notify = tmp_path / "notify.toml"
    notify.write_text('[[receivers]]\nname = "h"\nurl = "json://127.0.0.1:9/a"\n')
    variable = "MARKET_MONITOR_NOTIFY__BASE_DIR"
    assert refused(notify, {variable: "/x"}, load="notifier") == f"{variable}: {said}"
    conf.write_text(f"[sore]\nx = 1\n{text}")
    assert refused(conf, {}) == (
        f"{conf}: Object contains unknown field `sore`; did you mean `store`?"
    )
    conf.write_text(f"[xyzzy]\nx = 1\n{text}")
    assert refused(conf, {}) == (
        f"{conf}: Object contains unknown field `xyzzy`; it takes console, engine, feeds, http,"
        " log, redis, rules, shutdown, store"
    )
