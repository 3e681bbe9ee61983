"""One bad stream entry against the running notifier (real Redis, real webhook receivers): it is
dead-lettered, counted and logged, the alerts around it are delivered, and no restart crashes.

Before, an alert whose `ts` or `session` the schema let through (plain text) but the router or
the chart could not read raised inside the notifier's task group: the notifier exited, the entry
stayed pending, and every restart read it again and exited again.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.core.model import Alert, decode_alert
from monitor.notify.chart import BarsFile, alert_chart
from monitor.notify.compose import Composer, body_format
from monitor.notify.delivery import HttpJsonSender, Sender
from monitor.notify.render import Message
from monitor.notify.routing import Decision, Router
from monitor.notify.service import Notifier
from monitor.notify.silences import Silence
from tests.notify.conftest import HISTORY, RUT_ALERT, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_service import make_config, pending, running, running_notifier, until

pytestmark = pytest.mark.integration

GOOD_1 = msgspec.structs.replace(RUT_ALERT, id="good-1", title="good 1")
GOOD_2 = msgspec.structs.replace(RUT_ALERT, id="good-2", title="good 2")
YEAR_ONE = msgspec.structs.replace(RUT_ALERT, id="bad-ts", ts="0001-01-01T00:00:00Z")
NOT_A_DATE = msgspec.structs.replace(RUT_ALERT, id="bad-session", session="2024-07-16T20:00")
REASONS = {
    "bad-ts": "undecodable entry: Expected an ISO 8601 instant with a UTC offset in years "
    "1900-2200, got '0001-01-01T00:00:00Z' - at `$.ts`",
    "bad-session": "undecodable entry: Expected a date YYYY-MM-DD in years 1900-2200, got "
    "'2024-07-16T20:00' - at `$.session`",
}


async def dead_letters(stream: str) -> list[tuple[str, str, str, str, str]]:
    """(id, entry, receiver, reason, attempts) of each dead letter, in order."""
    client = aioredis.Redis()
    letters = await client.xrange(f"{stream}:dead")
    await client.aclose()
    return [
        tuple(f[k].decode() for k in (b"id", b"entry", b"receiver", b"reason", b"attempts"))  # type: ignore[misc]
        for _, f in letters
    ]


async def entry_ids(stream: str) -> dict[str, str]:
    """The stream entry id of each alert id published."""
    client = aioredis.Redis()
    entries = await client.xrange(stream)
    await client.aclose()
    return {f[b"id"].decode(): i.decode() for i, f in entries}


def logged(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    """The captured log lines of `event`, without the level."""
    return [{k: v for k, v in e.items() if k != "log_level"} for e in logs if e["event"] == event]


async def test_an_unusable_ts_or_session_is_dead_lettered_and_the_next_alert_delivered(
    stream: str, bars_file: Path
) -> None:
    """A good alert, one with `ts` in year 1, one with a `session` that is not a date (to a
    receiver that takes charts) and another good alert: both good ones are delivered with their
    chart, the bad ones are dead-lettered for receiver `*` with a reason, counted, logged and
    acknowledged, and a restart reads nothing again and does not crash."""
    await publish(stream, [GOOD_1, YEAR_ONE, NOT_A_DATE, GOOD_2])
    entry = await entry_ids(stream)
    async with WebhookServer() as hooks:
        config = make_config(
            stream, [{"name": "chat", "url": hooks.url("/chat")}], charts={"bars": str(bars_file)}
        )
        with capture_logs() as logs:
            async with running(config) as notifier:
                await until(lambda: notifier.counters.total("notify_acked") == 4, 5)
                await until(lambda: len(hooks.bodies("/chat")) == 2, 5)
        async with running(config) as restarted:
            await asyncio.sleep(0.5)
    bodies = hooks.bodies("/chat")
    assert [b["title"] for b in bodies] == ["good 1", "good 2"]
    assert [[a["filename"] for a in b["attachments"]] for b in bodies] == [["_RUT.png"]] * 2
    assert await dead_letters(stream) == [  # (no `id`: as for any entry that is not an alert)
        ("", entry[i], "*", REASONS[i], "0") for i in ("bad-ts", "bad-session")
    ]
    assert notifier.counters.get("notify_dead_lettered", receiver="*") == 2
    assert [(e["id"], e["entry"]) for e in logged(logs, "alert_dead_lettered")] == [
        (None, entry["bad-ts"]),
        (None, entry["bad-session"]),
    ]
    assert (restarted.counters.total("notify_read"), await pending(stream)) == (0, 0)


async def test_bad_entries_a_crashed_notifier_left_pending_do_not_crash_its_restart(
    stream: str,
) -> None:
    """The crash loop: entries read by consumer `c1` and never acknowledged (it died on the bad
    ones) are taken up when `c1` starts again: the good alerts go out, the bad ones are
    dead-lettered, nothing is left pending."""
    await publish(stream, [GOOD_1, YEAR_ONE, NOT_A_DATE, GOOD_2])
    client = aioredis.Redis()
    await client.xgroup_create(stream, "notifier", id="0")
    await client.xreadgroup("notifier", "c1", {stream: ">"}, count=10)
    await client.aclose()
    assert await pending(stream) == 4
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 4, 5)
            await until(lambda: len(hooks.bodies("/chat")) == 2, 5)
    assert [b["title"] for b in hooks.bodies("/chat")] == ["good 1", "good 2"]
    entry = await entry_ids(stream)
    assert [d[1] for d in await dead_letters(stream)] == [entry["bad-ts"], entry["bad-session"]]
    assert await pending(stream) == 0


# -- defence in depth: a bug on one alert ---------------------------------------------------

POISON = "poison"


class RouterWithABug(Router):
    """A Router that raises on the alert `POISON` (a bug in routing that one alert)."""

    def accept(
        self, entry: str | None, alert: Alert, now: Any, silences: Sequence[Silence] = ()
    ) -> Decision:
        """Route as usual, except `POISON`."""
        if alert.id == POISON:
            raise ZeroDivisionError("a routing bug")
        return super().accept(entry, alert, now, silences)


class ComposerWithABug(Composer):
    """A Composer that raises on any message for `chat` that carries `POISON`."""

    async def message(self, receiver: str, alerts: Sequence[Alert]) -> Message:
        """Render as usual, except `POISON` for `chat`."""
        if receiver == "chat" and any(a.id == POISON for a in alerts):
            raise KeyError("a rendering bug")
        return await super().message(receiver, alerts)


async def test_a_bug_routing_one_alert_dead_letters_it_and_the_others_go_out(stream: str) -> None:
    """An exception while routing one alert is logged with its id and entry, the alert is
    dead-lettered for receiver `*` and acknowledged, and the alerts before and after it are
    delivered."""
    poison = msgspec.structs.replace(RUT_ALERT, id=POISON)
    await publish(stream, [GOOD_1, poison, GOOD_2])
    entry = await entry_ids(stream)
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        notifier = Notifier(config)
        notifier.router = RouterWithABug(config.route, config.receivers, config.runaway)
        with capture_logs() as logs:
            async with running_notifier(notifier):
                await until(lambda: notifier.counters.total("notify_acked") == 3, 5)
                await until(lambda: len(hooks.bodies("/chat")) == 2, 5)
    assert [b["title"] for b in hooks.bodies("/chat")] == ["good 1", "good 2"]
    assert await dead_letters(stream) == [
        (POISON, entry[POISON], "*", "routing failed: ZeroDivisionError: a routing bug", "0")
    ]
    (failed,) = logged(logs, "alert_route_failed")
    assert {k: failed[k] for k in ("id", "entry", "error")} == {
        "id": POISON,
        "entry": entry[POISON],
        "error": "ZeroDivisionError: a routing bug",
    }
    assert notifier.counters.get("notify_dead_lettered", receiver="*") == 1
    assert await pending(stream) == 0


async def test_a_bug_rendering_one_alert_fails_it_for_that_receiver_only(stream: str) -> None:
    """A group of three for `chat` and `ops` whose message for `chat` cannot be rendered with
    one of them: `chat` gets the other two in one message and that one is dead-lettered for
    `chat` (logged with its id and entry, counted); `ops` gets all three; all are acked."""
    poison = msgspec.structs.replace(RUT_ALERT, id=POISON, title="poison")
    alerts = [GOOD_1, poison, GOOD_2]
    await publish(stream, alerts)
    entry = await entry_ids(stream)
    async with WebhookServer() as hooks:
        receivers = [
            {"name": "chat", "url": hooks.url("/chat")},
            {"name": "ops", "url": hooks.url("/ops")},
        ]
        config = make_config(
            stream, receivers, route={"group_by": ["rule", "session"], "group_wait_s": 0.3}
        )
        senders: dict[str, Sender] = {r.name: HttpJsonSender(r.url) for r in config.receivers}
        formats = {r.name: body_format(r, r.url) for r in config.receivers}
        notifier = Notifier(config, senders=senders)
        notifier.composer = ComposerWithABug(config, formats, senders)
        with capture_logs() as logs:
            async with running_notifier(notifier):
                await until(lambda: notifier.counters.total("notify_acked") == 3, 5)
    (chat,) = hooks.bodies("/chat")
    (ops,) = hooks.bodies("/ops")
    assert [a["id"] for a in chat["alerts"]] == ["good-1", "good-2"]
    assert [a["id"] for a in ops["alerts"]] == ["good-1", POISON, "good-2"]
    assert await dead_letters(stream) == [
        (POISON, entry[POISON], "chat", "could not render: KeyError: 'a rendering bug'", "0")
    ]
    (failed,) = logged(logs, "alert_render_failed")
    assert {k: failed[k] for k in ("receiver", "id", "entry", "error")} == {
        "receiver": "chat",
        "id": POISON,
        "entry": entry[POISON],
        "error": "KeyError: 'a rendering bug'",
    }
    assert notifier.counters.get("notify_dead_lettered", receiver="chat") == 1
    assert notifier.counters.get("notify_alerts_sent", receiver="chat") == 2
    client = aioredis.Redis()
    letter = (await client.xrange(f"{stream}:dead"))[0][1]
    await client.aclose()
    assert decode_alert(letter[b"alert"]) == poison
    assert await pending(stream) == 0


# -- charts that cannot be drawn --------------------------------------------------------------


class AttachingSender:
    """A Sender double that takes attachments and sends nothing."""

    takes_attachments = True

    async def send(self, message: Message) -> None:
        """Nothing to send."""

    async def aclose(self) -> None:
        """Nothing to close."""


async def test_a_chart_that_cannot_be_drawn_is_left_out_and_the_message_made(
    tmp_path: Path,
) -> None:
    """With a bars file that is not Parquet, the message for an alert is made without a chart
    and `chart_failed` is logged with the alert's id."""
    bars = tmp_path / "bars_daily.parquet"
    bars.write_bytes(b"not parquet")
    config = make_config(
        "unused", [{"name": "chat", "url": "json://127.0.0.1:9/chat"}], charts={"bars": str(bars)}
    )
    composer = Composer(config, {"chat": "markdown"}, {"chat": AttachingSender()})
    with capture_logs() as logs:
        message = await composer.message("chat", [RUT_ALERT])
    assert (message.title, message.attachments) == (RUT_ALERT.title, ())
    (failed,) = logged(logs, "chart_failed")
    assert {k: failed[k] for k in ("ids", "error")} == {
        "ids": [RUT_ALERT.id],
        "error": "ComputeError: parquet: File out of specification: A Parquet file must "
        "contain a header and footer with at least 12 bytes",
    }


def test_the_chart_of_an_alert_whose_dates_are_unreadable_is_none_or_leaves_them_out(
    bars_file: Path,
) -> None:
    """`alert_chart` does not raise on dates that are not dates: no session date, no chart; a
    prior date that is not one is not marked, and the chart is drawn."""
    bars = BarsFile(bars_file).load()
    no_session = msgspec.structs.replace(RUT_ALERT, session="2024-07-16T20:00")
    history = msgspec.structs.replace(HISTORY, prior_dates=["2020-04-28", "20200428x"])
    bad_prior = msgspec.structs.replace(RUT_ALERT, history=history)
    assert alert_chart(bars, [no_session]) is None
    png = alert_chart(bars, [bad_prior])
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_router_takes_an_alert_in_year_one_without_overflowing() -> None:
    """Behind the check at the read, `Router.accept` itself does not raise on a `ts` in year 1
    (it took two hours from it: OverflowError); the alert is routed."""
    config = make_config("unused", [{"name": "chat", "url": "json://127.0.0.1:9/chat"}])
    router = Router(config.route, config.receivers, config.runaway)
    now = datetime.datetime(2024, 7, 16, 20, 5, tzinfo=datetime.UTC)
    decision = router.accept("1-0", YEAR_ONE, now)
    assert (decision.verdict, decision.receivers) == ("routed", {"chat"})


async def test_an_entry_nested_too_deep_is_dead_lettered_not_a_crash(stream: str) -> None:
    """An entry whose `alert` is JSON nested 100,000 deep (the decoder's RecursionError) is
    dead-lettered as undecodable and acknowledged, and the good alert after it delivered.
    Before, the RecursionError ended the notifier, and every one that claimed the entry."""
    client = aioredis.Redis()
    await client.xadd(stream, {"alert": '{"a":' * 100_000 + "1" + "}" * 100_000})
    await client.aclose()
    await publish(stream, [GOOD_1])
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        async with running(config) as notifier:
            await until(lambda: notifier.counters.total("notify_acked") == 2, 10)
            await until(lambda: len(hooks.bodies("/chat")) == 1, 10)
    ((_, _, receiver, reason, _),) = await dead_letters(stream)
    assert receiver == "*" and "nested too deeply" in reason
    assert await pending(stream) == 0


async def test_a_dead_stream_key_of_another_type_logs_the_letter_and_goes_on(stream: str) -> None:
    """`{stream}:dead` set to a string (WRONGTYPE for every XADD): an entry that is no alert is
    logged whole as dead_letter_unwritten and acknowledged, and the alert after it delivered;
    before, the XADD's error stopped the notifier, and every restart after it (the entry still
    pending)."""
    client = aioredis.Redis()
    await client.set(f"{stream}:dead", "not a stream")
    await client.xadd(stream, {"junk": "1"})
    await client.aclose()
    await publish(stream, [GOOD_1])
    async with WebhookServer() as hooks:
        config = make_config(stream, [{"name": "chat", "url": hooks.url("/chat")}])
        with capture_logs() as logs:
            async with running(config) as notifier:
                await until(lambda: notifier.counters.total("notify_acked") == 2)
    assert [b["title"] for b in hooks.bodies("/chat")] == ["good 1"]
    assert await pending(stream) == 0
    unwritten = [e for e in logs if e["event"] == "dead_letter_unwritten"]
    assert [(e["letter"]["receiver"], e["letter"]["reason"], e["alert"]) for e in unwritten] == [
        ("*", "undecodable entry: no `alert` field", '{"junk":"1"}')
    ]
    assert unwritten[0]["error"].startswith("ResponseError: WRONGTYPE")
