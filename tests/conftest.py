"""Shared fixtures: paths to the shipped real data, the NYSE calendar, the rules file."""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from monitor.calendar import nyse_sessions
from monitor.core.rules.spec import NO_SHORT_INTEREST
from monitor.core.sessions import Sessions

# Session tables cached by the tests (and the daemons and CLIs they start) stay out of ~/.cache
# (the cache directory is read at each calendar build, not at import).
_CACHE = tempfile.mkdtemp(prefix="mm-test-cache-")
os.environ["MARKET_MONITOR_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "monitor" / "demo"
DATA = ROOT / "tests" / "data"
RULES = ROOT / "config" / "rules.toml"
# What `config check` says of RULES' squeeze rule in a config without `[rules] short_interest`.
NO_SHORT_INTEREST_NOTE = (
    f"market-monitor: warning: rule squeeze.daily cannot fire: {NO_SHORT_INTEREST}\n"
)
RUT = DEMO / "rut_index_daily_1987_2026.csv"
SQUEEZE = DATA / "squeeze_ohlcv_2020-10_2021-07.csv"
SHORT_INTEREST = DATA / "short_interest_squeeze_2020-11_2021-06.csv"


@pytest.fixture(scope="session")
def sessions() -> Sessions:
    """NYSE sessions from 1987 to a year past today."""
    return nyse_sessions(dt.date(1987, 1, 1))
