"""Feed health shared by the notifiers of a consumer group (monitor/notify/shared_feeds.py):
a feed's `feed_stale` and its `feed_recovered` may reach two different notifiers; each tells
the group what it read, so every notifier holds alerts back while the feed is stale and lets
them go when any reads its recovery. Against real Redis, plus the router's pure part."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.core.model import Alert
from monitor.notify.routing import STALE_FOR_AT_MOST, GuardState, Router, merged_states
from monitor.notify.shared_feeds import SharedFeeds
from tests.notify.conftest import alert, feed_alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_routing import config as router_config
from tests.notify.test_service import running, until
from tests.notify.test_shared_group_state import HELD_ONE, read_as, settings

ISO = "%Y-%m-%dT%H:%M:%SZ"


def at(a: Alert, when: dt.datetime) -> Alert:
    """`a` stamped `when` (live alerts: the group's feed health older than two hours by the
    clock is not taken in)."""
    return msgspec.structs.replace(a, ts=when.strftime(ISO), session=when.date().isoformat())


def chat_titles(hooks: WebhookServer) -> list[str]:
    return [b["title"] for b in hooks.bodies("/chat")]


async def held_by(stream: str, consumer: str) -> tuple[dict[str, str], list[str]]:
    """What `consumer` saved: its stale feeds and the ids of the alerts it holds back."""
    client = aioredis.Redis()
    raw: Any = await client.get(f"{stream}:notify:notifier:state:{consumer}")
    await client.aclose()
    state = msgspec.json.decode(raw or b"{}", type=GuardState)
    return state.stale_feeds, [x.id for x in state.inhibited]


@pytest.mark.integration
async def test_a_recovery_another_notifier_reads_lets_the_held_alerts_go(stream: str) -> None:
    """`a` reads mqtt's `feed_stale` and holds alert 1 back; `b` reads mqtt's `feed_recovered`.
    `a` lets alert 1 go in its summary at once, and holds nothing. Before, nothing told `a`:
    it held alert 1, and every later alert it read, for two hours."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stale = at(feed_alert("feed_stale", "mqtt"), now - dt.timedelta(minutes=5))
    await publish(stream, [stale, at(alert(1), now - dt.timedelta(minutes=4))])
    await read_as(stream, "a", 2)
    await publish(stream, [at(feed_alert("feed_recovered", "mqtt"), now)])
    await read_as(stream, "b", 1)
    async with WebhookServer() as hooks, running(settings(stream, hooks, "a", claim_idle_s=30)):
        await until(lambda: len(hooks.bodies("/ops")) == 1)
        assert chat_titles(hooks) == []
        async with running(settings(stream, hooks, "b", claim_idle_s=30)):
            await until(lambda: len(hooks.bodies("/chat")) == 1, 5)
            await asyncio.sleep(0.3)  # (a saves what it let go)
            assert await held_by(stream, "a") == ({}, [])
    assert chat_titles(hooks) == [HELD_ONE]
    assert alert(1).symbol in hooks.bodies("/chat")[0]["message"]
    assert len(hooks.bodies("/ops")) == 2  # (the stale and the recovery, each once)


@pytest.mark.integration
async def test_a_stale_feed_another_notifier_read_holds_alerts_back_here_too(
    stream: str,
) -> None:
    """`a` reads mqtt's `feed_stale`; `b` reads alert 2 afterwards and holds it back too (it
    was delivered: only the notifier that read a `feed_stale` held alerts back). The recovery,
    whoever reads it, lets it go in `b`'s summary."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    await publish(stream, [at(feed_alert("feed_stale", "mqtt"), now - dt.timedelta(minutes=2))])
    await read_as(stream, "a", 1)
    await publish(stream, [at(alert(2), now - dt.timedelta(minutes=1))])
    await read_as(stream, "b", 1)  # (b's to read when it starts, after a has read the stale)
    client = aioredis.Redis()
    feeds = SharedFeeds(client, stream, "notifier")
    try:
        async with (
            WebhookServer() as hooks,
            running(settings(stream, hooks, "a", claim_idle_s=30)),
        ):
            async with asyncio.timeout(5):
                while "mqtt" not in await feeds.read():  # noqa: ASYNC110 - polls Redis
                    await asyncio.sleep(0.02)
            async with running(settings(stream, hooks, "b", claim_idle_s=30)) as b:
                await until(lambda: [x.id for x in b.router.state.inhibited] == [alert(2).id], 5)
                await asyncio.sleep(0.3)
                assert chat_titles(hooks) == []
                assert (await held_by(stream, "b"))[1] == [alert(2).id]
                await publish(stream, [at(feed_alert("feed_recovered", "mqtt"), now)])
                await until(lambda: len(hooks.bodies("/chat")) == 1, 5)
                await asyncio.sleep(0.3)
                assert await held_by(stream, "b") == ({}, [])
    finally:
        await client.aclose()
    assert chat_titles(hooks) == [HELD_ONE]
    assert alert(2).symbol in hooks.bodies("/chat")[0]["message"]


@pytest.mark.integration
async def test_the_group_record_only_moves_forward_in_time(stream: str) -> None:
    """Two notifiers recording at once, or one reading older entries (claimed from a dead
    one): each field keeps the latest `ts`; fields and values that are not the record's are
    left out of it."""
    client = aioredis.Redis()
    feeds = SharedFeeds(client, stream, "notifier")
    t0 = dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC)
    later = [at(feed_alert("feed_stale", "mqtt", i), t0 + dt.timedelta(minutes=i)) for i in (3, 1)]
    await asyncio.gather(
        feeds.record(later),
        feeds.record([at(feed_alert("feed_stale", "mqtt", 2), t0 + dt.timedelta(minutes=2))]),
        feeds.record([at(feed_alert("feed_recovered", "ws"), t0), alert(7)]),
    )
    await feeds.record([at(feed_alert("feed_stale", "mqtt", 0), t0)])
    await client.hset(feeds.key, mapping={"other": "x", b"stale:\xff": "y", "recovered:": "z"})
    assert await feeds.read() == {
        "mqtt": ((t0 + dt.timedelta(minutes=3)).strftime(ISO), None),
        "ws": (None, t0.strftime(ISO)),
    }
    await client.aclose()


# -- the router's part: `Router.shared_feeds` ------------------------------------------------


def router(name: str) -> Router:
    c = router_config()
    return Router(c.route, c.receivers, c.runaway, name=name)


T0 = dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC)


def ts(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).strftime(ISO)


def test_each_notifier_summarises_what_it_held_under_its_own_id() -> None:
    """Two routers each hold an alert back while mqtt is stale (one read the `feed_stale`, the
    other took it from the group); the group's recovery ends both, each with a summary of its
    own alert, under different ids (one id would be delivered once, the other summary lost)."""
    a, b = router("a"), router("b")
    now = T0 + dt.timedelta(minutes=10)
    a.accept("1-0", at(feed_alert("feed_stale", "mqtt"), T0), now)
    b.shared_feeds({"mqtt": (ts(0), None)}, now)
    assert b.state.stale_feeds == {"mqtt": ts(0)}
    assert a.accept("2-0", alert(1), now).verdict == "inhibited"
    assert b.accept("3-0", alert(2), now).verdict == "inhibited"
    group = {"mqtt": (ts(0), ts(5))}
    made = [r.shared_feeds(group, now) for r in (a, b)]
    assert [[n.kind for n in m] for m in made] == [["inhibited_summary"], ["inhibited_summary"]]
    assert made[0][0].id != made[1][0].id
    assert [alert(1).symbol in made[0][0].text, alert(2).symbol in made[1][0].text] == [True] * 2
    assert (a.state.stale_feeds, a.state.inhibited, a.state.recovered) == ({}, [], {"mqtt": ts(5)})
    assert b.shared_feeds(group, now) == []  # (taken in once)


def test_a_recovery_older_than_the_stale_feed_ends_nothing() -> None:
    """The group's last recovery of mqtt came before the `feed_stale` this router read (an
    earlier outage): mqtt stays stale."""
    r = router("a")
    now = T0 + dt.timedelta(minutes=30)
    r.accept("1-0", at(feed_alert("feed_stale", "mqtt"), T0 + dt.timedelta(minutes=20)), now)
    assert r.shared_feeds({"mqtt": (ts(20), ts(10))}, now) == []
    assert r.state.stale_feeds == {"mqtt": ts(20)}
    assert r.accept("2-0", alert(1), now).verdict == "inhibited"


def test_a_stale_feed_over_by_age_or_known_over_is_not_taken_in() -> None:
    """Not taken from the group: a `feed_stale` older than STALE_FOR_AT_MOST by the clock, one
    this router read the recovery of, and one that expired here (alerts stamped past its two
    hours: a daemon's clock ahead of the notifier's). A later `feed_stale` is."""
    hours = STALE_FOR_AT_MOST
    now = T0 + hours + dt.timedelta(minutes=1)
    r = router("a")
    r.shared_feeds({"old": (ts(0), None)}, now)
    assert r.state.stale_feeds == {}
    r.accept("1-0", at(feed_alert("feed_recovered", "ws"), T0 + dt.timedelta(minutes=90)), now)
    r.shared_feeds({"ws": (ts(80), None)}, now)
    assert r.state.stale_feeds == {}
    early = T0 + dt.timedelta(minutes=30)  # (the clock; the alerts' times run ahead of it)
    r.accept("2-0", at(feed_alert("feed_stale", "mqtt"), early), early)
    r.accept("3-0", at(alert(1), early + hours + dt.timedelta(seconds=1)), early)
    assert r.state.stale_feeds == {} and r.state.expired == {"mqtt": ts(30)}
    r.shared_feeds({"mqtt": (ts(30), None)}, early)
    assert r.state.stale_feeds == {}
    r.shared_feeds({"mqtt": (ts(31), None)}, early)
    assert r.state.stale_feeds == {"mqtt": ts(31)}


def test_merging_states_keeps_the_later_expired_stale_feed() -> None:
    mine = GuardState(expired={"mqtt": ts(1), "ws": ts(5)})
    other = GuardState(expired={"mqtt": ts(2), "ws": ts(3), "poly": ts(0)})
    assert merged_states(mine, other).expired == {"mqtt": ts(2), "ws": ts(5), "poly": ts(0)}


@pytest.mark.integration
async def test_without_watch_the_notifier_keeps_feed_health_to_itself(stream: str) -> None:
    """A Redis user the ACL denies WATCH (a rule of before): one `feed_sharing_refused` error
    naming what to grant, and the notifier goes on as before, holding alerts back for the
    `feed_stale` it read and letting them go at the `feed_recovered` it reads."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    admin = aioredis.Redis()
    user = f"u{stream[-8:]}"
    await admin.execute_command(
        "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-watch", "-unwatch"
    )
    stale = at(feed_alert("feed_stale", "mqtt"), now - dt.timedelta(minutes=1))
    held = at(alert(1), now - dt.timedelta(seconds=30))
    await publish(stream, [stale, held, at(feed_alert("feed_recovered", "mqtt"), now)])
    try:
        async with WebhookServer() as hooks:
            config = settings(stream, hooks, "a", url=f"redis://{user}:pw@127.0.0.1:6379/0")
            with capture_logs() as logs:
                async with running(config):
                    await until(lambda: len(hooks.bodies("/chat")) == 1, 5)
                    await asyncio.sleep(0.3)
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()
    refused = [e for e in logs if e["event"] == "feed_sharing_refused"]
    assert len(refused) == 1 and "+watch" in refused[0]["grant"]
    assert chat_titles(hooks) == [HELD_ONE]
