"""A replay feed's `start` and `end` against its data: where the history ends and the simulated
clock starts, and what is refused because the feed would stream nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import polars as pl
import pytest
import redis.asyncio as aioredis

from monitor import config as cfg
from monitor.clock import SimClock
from monitor.replay_data import split_replay_data
from monitor.service import Daemon, run
from tests.conftest import RULES, RUT
from tests.test_service import read_stream, replay_alerts

pytestmark = pytest.mark.integration


def replay_feed_config(tmp: Path, stream: str, *, start: str, end: str) -> Path:
    """A daemon whose one feed replays ^RUT from `start` to `end`, then stops it."""
    path = tmp / "monitor.toml"
    path.write_text(
        f"""
[store]
path = "{tmp / "store"}"
[[feeds]]
kind = "replay"
name = "rut"
data = ["^RUT={RUT}"]
start = "{start}"
end = "{end}"
speed = 1000000000
exit_when_done = true
[redis]
url = "redis://127.0.0.1:6379/0"
channel = "{stream}"
stream = "{stream}"
[rules]
file = "{RULES}"
[http]
port = 0
"""
    )
    return path


def test_a_start_before_the_data_makes_its_first_session_the_history(tmp_path: Path) -> None:
    """A `start` long before the data (1900) splits it as a `start` on its second session does:
    the first session is the history, and the simulated clock starts at its close."""
    early = cfg.load(replay_feed_config(tmp_path, "x", start="1900-01-01", end="1987-12-31"))
    got = split_replay_data(early, pl.DataFrame())
    second = cfg.load(replay_feed_config(tmp_path, "x", start="1987-09-11", end="1987-12-31"))
    want = split_replay_data(second, pl.DataFrame())
    assert got.history.get_column("session").to_list() == [dt.date(1987, 9, 10)]
    assert got.start_at == dt.datetime(1987, 9, 10, 20, 0, tzinfo=dt.UTC)
    assert (got.start_at, got.bars["rut"].rows()) == (want.start_at, want.bars["rut"].rows())
    assert got.bars["rut"].height == 78  # (the sessions from 1987-09-11 to 1987-12-31)


def test_history_ending_on_a_day_that_is_no_session_starts_the_clock_at_the_session_before(
    tmp_path: Path,
) -> None:
    """The history's last row a Good Friday or a Saturday (rows the engine rejects): the
    simulated clock starts at the close of the session before it. No clock was set, and the
    daemon failed to start (an AssertionError: a replay feed needs the simulated clock)."""
    data = tmp_path / "iwm.csv"
    data.write_text(
        "date,close\n2024-03-27,200\n2024-03-28,201\n2024-03-29,202\n2024-03-30,203\n"
        "2024-04-01,204\n2024-04-02,205\n"
    )
    conf = replay_feed_config(tmp_path, "x", start="2024-04-01", end="2024-04-02")
    conf.write_text(conf.read_text().replace(f'"^RUT={RUT}"', f'"IWM={data}"'))
    split = split_replay_data(cfg.load(conf), pl.DataFrame())
    assert split.start_at == dt.datetime(2024, 3, 28, 20, 0, tzinfo=dt.UTC)  # (Thursday's close)
    assert isinstance(Daemon(cfg.load(conf)).clock, SimClock)


async def test_a_daemon_whose_replay_feed_starts_before_its_data_streams_it(
    tmp_path: Path,
) -> None:
    """`run` with a replay feed whose `start` is before its data (it used to die on an
    assertion: no clock to start from) streams the data and gives the alerts `replay` gives
    for it, then exits 0."""
    stream = f"mm-early-{uuid.uuid4().hex[:8]}"
    conf = replay_feed_config(tmp_path, stream, start="1900-01-01", end="1988-06-30")
    expected = replay_alerts(dt.date(1987, 9, 10), dt.date(1988, 6, 30))
    assert len(expected) == 4
    ready: list[Daemon] = []
    try:
        assert await run(cfg.load(conf), install_signals=False, on_ready=ready.append) == 0
        assert isinstance(ready[0].clock, SimClock)
        assert await read_stream(stream, len(expected)) == expected
    finally:
        client = aioredis.Redis()
        await client.delete(stream)
        await client.aclose()


async def test_a_replay_feed_started_again_on_its_store_says_its_sessions_fire_nothing(
    tmp_path: Path,
) -> None:
    """A daemon run again on the store of an earlier run of the same replay feed (`run --config
    config/demo.toml` twice) takes the sessions the store holds as corrections, which fire
    nothing: it says so at its start (`replay_streamed_already`, how many, through when, and
    that a fresh store replays them). It printed nothing, fired nothing and exited 0, as if
    the rules had nothing to say of those sessions; a first run says nothing of it."""
    from structlog.testing import capture_logs

    stream = f"mm-again-{uuid.uuid4().hex[:8]}"
    conf = replay_feed_config(tmp_path, stream, start="1987-11-02", end="1987-11-30")

    def said(logs: list[dict[str, object]]) -> list[tuple[object, ...]]:
        return [
            (e["feed"], e["sessions"], e["of"], e["stored_through"])
            for e in logs
            if e["event"] == "replay_streamed_already"
        ]

    try:
        with capture_logs() as first:
            assert await run(cfg.load(conf), install_signals=False) == 0
        with capture_logs() as again:
            assert await run(cfg.load(conf), install_signals=False) == 0
    finally:
        client = aioredis.Redis()
        await client.delete(stream)
        await client.aclose()
    assert (said(first), said(again)) == ([], [("rut", 20, 20, "1987-11-30")])
