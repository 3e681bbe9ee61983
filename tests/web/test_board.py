"""The live board in a real headless Chromium, against the daemon fed over real Mosquitto."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
import redis

from monitor import config as cfg
from monitor.cli import main
from monitor.datafiles import DataSpec, read_daily
from monitor.feed_replay import bar_messages
from monitor.service import Daemon, run
from monitor.web import MAX_SYMBOLS
from tests.conftest import RUT
from tests.test_service import daemon_running, subscribed, write_config
from tests.web.chromium import Chromium, Page, find_chromium

pytestmark = pytest.mark.integration

STREAK_BAR = (
    'document.querySelector(\'#rules [data-rule="streak.daily"][data-symbol="^RUT"] .fill\')'
    "?.style.width"
)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    """A headless Chromium with a fresh profile; the test skips when none is installed."""
    executable = find_chromium()
    if executable is None:
        print("SKIP reason: no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    async with Chromium(tmp_path, executable) as chromium:
        yield chromium


async def publish(prefix: str, day: dt.date) -> None:
    """The ^RUT bar of `day`, published as the feed would."""
    bars = read_daily(DataSpec(path=str(RUT), symbol="^RUT"), start=day, end=day).bars
    async with aiomqtt.Client("127.0.0.1", 1883) as pub:
        for message in bar_messages(bars):
            await pub.publish(f"{prefix}/bars", message, qos=1)


async def test_board_moves_a_progress_bar_and_shows_a_new_alert_without_reload(
    tmp_path: Path, browser: Chromium
) -> None:
    """With ^RUT backfilled to 2024-07-12 the streak.daily bar reads 3 of 5 (60%); the bar of
    2024-07-15 moves it to 80% and the bar of 2024-07-16 puts the streak alert, with its history
    line, in the open page, which was never reloaded."""
    prefix = f"mm-web-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    args = ["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-12"]
    assert main(args) == 0
    stop = asyncio.Event()
    ready: list[Daemon] = []
    task = asyncio.create_task(
        run(cfg.load(conf), stop=stop, install_signals=False, on_ready=ready.append)
    )
    page: Page | None = None
    try:
        daemon = await subscribed(ready)
        url = f"http://127.0.0.1:{int(daemon.counters.get('http_port'))}/"
        page = await browser.page(url)
        assert await page.wait_for(STREAK_BAR) == "60%"
        assert await page.evaluate("document.querySelectorAll('#alerts li[data-id]').length") == 0
        await page.evaluate("window.__same_page = true")

        await publish(prefix, dt.date(2024, 7, 15))
        assert await page.wait_for(f"{STREAK_BAR} === '80%'")

        await publish(prefix, dt.date(2024, 7, 16))
        streak = '#alerts li[data-rule="streak.daily"]'
        text = await page.wait_for(f"document.querySelector('{streak}')?.innerText")
        assert "Russell 2000 rose more than 1.0% in each of 5 sessions (+11.5% in all)" in text
        assert "4 earlier times since 1998" in text
        assert await page.wait_for(f"{STREAK_BAR} === '100%'")
        assert await page.evaluate("window.__same_page") is True
        markers = await page.wait_for(
            "document.querySelectorAll('.chart[data-symbol=\"^RUT\"] .alert-marker').length"
        )
        assert markers == len(daemon.recent_alerts)
        await page.screenshot(tmp_path / "board.png")
        await page.viewport(390, 844, mobile=True)
        await asyncio.sleep(0.3)
        await page.screenshot(tmp_path / "board-phone.png")
        assert page.errors == []
        print(f"screenshots: {tmp_path / 'board.png'} {tmp_path / 'board-phone.png'}")
    finally:
        if page is not None:
            await page.close()
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
        r = redis.Redis()
        r.delete(f"{prefix}:alerts")
        r.close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


async def test_page_and_closes_are_served_by_the_daemon(tmp_path: Path) -> None:
    """`/` serves the self-contained board (no external script, style or font) and
    `/api/closes` the last 120 ^RUT closes, ending with the last backfilled session;
    `?symbol=` and `?sessions=` choose symbols and length (a bad length is a 400); a symbol
    named many times gives one chart, and more than MAX_SYMBOLS symbols are a 400 in JSON."""
    prefix = f"mm-web-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    args = ["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-12"]
    assert main(args) == 0
    async with daemon_running(conf) as daemon:
        base = f"http://127.0.0.1:{int(daemon.counters.get('http_port'))}"
        html = (await asyncio.to_thread(_get, base + "/")).decode()
        assert html.startswith("<!doctype html>")
        assert "src=" not in html and "href=" not in html and "@import" not in html
        closes = json.loads(await asyncio.to_thread(_get, base + "/api/closes"))
        rut = closes["symbols"][0]
        assert (rut["symbol"], len(rut["sessions"]), len(rut["closes"])) == ("^RUT", 120, 120)
        assert (rut["sessions"][-1], round(rut["closes"][-1], 2)) == ("2024-07-12", 2148.27)
        assert rut["alerts"] == []
        asked = json.loads(
            await asyncio.to_thread(_get, base + "/api/closes?symbol=%5ERUT,NOPE&sessions=30")
        )
        assert [(c["symbol"], len(c["closes"])) for c in asked["symbols"]] == [("^RUT", 30)]
        assert asked["symbols"][0]["closes"] == rut["closes"][-30:]
        many = ",".join(["%5ERUT"] * 5_000)
        once = json.loads(await asyncio.to_thread(_get, f"{base}/api/closes?symbol={many}"))
        assert once == closes
        too_many = ",".join(["%5ERUT", *(f"S{i}" for i in range(MAX_SYMBOLS))])
        for bad in ("sessions=0", "sessions=x", "sessions=99999", f"symbol={too_many}"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                await asyncio.to_thread(_get, f"{base}/api/closes?{bad}")
            assert refused.value.code == 400
            assert refused.value.headers["Content-Type"] == "application/json"
            assert "error" in json.loads(refused.value.read())
            refused.value.close()  # the error holds the response open
