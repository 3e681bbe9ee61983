"""Fixtures for notifier tests: sample alerts, a bars file, unique stream names."""

from __future__ import annotations

import datetime as dt
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from monitor.core.model import Alert, History, HorizonStats, encode_alert
from monitor.datafiles import DataSpec, read_many
from monitor.store import Store
from tests.conftest import DATA, RUT

# Apprise's email plugin imports `imghdr` (deprecated in 3.11) on first use; under
# `filterwarnings = error` that would fail the first test to load it, so load it here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import apprise.utils.pgp  # noqa: F401

HISTORY = History(
    prior_occurrences=4,
    prior_dates=["1998-10-20", "2000-01-20", "2009-09-10", "2020-04-28"],
    forward=[HorizonStats(21, 4, 0.0605, 0.057, 1.0, 0.0337, 0.0944)],
    summary="4 earlier times since 1998; over the next 21 sessions, +6.0% on average "
    "(median +5.7%), 4 of 4 up.",
)

RUT_ALERT = Alert(
    id="f7ae317086b37f5581f035c2",
    rule="streak.daily",
    kind="streak",
    symbol="^RUT",
    timeframe="1d",
    session="2024-07-16",
    ts="2024-07-16T20:00:00Z",
    severity="notice",
    title="Russell 2000: 5 straight sessions up more than 1.0%",
    text="Russell 2000 rose more than 1.0% in each of 5 sessions (+11.5% in all), "
    "closing at 2,263.67.",
    metrics={"streak": 5, "return": 0.1154, "close": 2263.67},
    history=HISTORY,
)


def alert(
    n: int,
    *,
    rule: str = "squeeze.daily",
    kind: str = "squeeze",
    symbol: str | None = None,
    severity: str = "notice",
    session: str = "2024-07-16",
) -> Alert:
    """A small-cap alert number `n` (unique id)."""
    sym = symbol if symbol is not None else f"SC{n:02d}"
    return msgspec.structs.replace(
        RUT_ALERT,
        id=f"{rule}:{sym}:{session}:{n}",
        rule=rule,
        kind=kind,
        symbol=sym,
        severity=severity,  # type: ignore[arg-type]
        session=session,
        title=f"{sym}: squeeze on volume",
        text=f"{sym} rose 12.0% on 4.1x its average volume.",
    )


def feed_alert(kind: str, feed: str, n: int = 0) -> Alert:
    """A feed_stale / feed_recovered alert for `feed`."""
    return msgspec.structs.replace(
        RUT_ALERT,
        id=f"{kind}:{feed}:{n}",
        rule="feed.health",
        kind=kind,
        symbol=feed,
        severity="warning",
        title=f"{feed} {kind}",
        text=f"feed {feed}: {kind}",
        history=None,
    )


@pytest.fixture
def now() -> dt.datetime:
    """A fixed instant: 2024-07-16 20:05 UTC (16:05 in New York)."""
    return dt.datetime(2024, 7, 16, 20, 5, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def bars_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store bars_daily.parquet holding real ^RUT, IWM and QQQ closes to 2024-07-31."""
    folder = tmp_path_factory.mktemp("store")
    bars = read_many(
        [
            DataSpec(path=str(RUT), symbol="^RUT"),
            DataSpec(path=str(DATA / "iwm_daily_adj_2023_2024.csv"), symbol="IWM"),
            DataSpec(path=str(DATA / "qqq_daily_adj_2023_2024.csv"), symbol="QQQ"),
        ],
        end=dt.date(2024, 7, 31),
    ).bars
    Store(folder).save_bars(bars)
    return folder / "bars_daily.parquet"


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    """A unique stream name; its keys are deleted afterwards."""
    name = f"mm-notify-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = aioredis.Redis()
    keys = [k async for k in client.scan_iter(f"{name}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def publish(stream: str, alerts: list[Alert]) -> None:
    """XADD alerts the way the daemon does (fields `id` and `alert`)."""
    client = aioredis.Redis()
    for a in alerts:
        await client.xadd(stream, {"id": a.id, "alert": encode_alert(a)})
    await client.aclose()
