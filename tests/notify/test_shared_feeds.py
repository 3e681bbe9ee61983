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
from monitor.notify.service import Notifier
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


def gauges(notifier: Notifier) -> tuple[float, ...]:
    """What /metrics says it holds: alerts held back (inhibited, throttled), stale feeds."""
    c = notifier.counters
    return (
        c.get("notify_held", reason="inhibited"),
        c.get("notify_held", reason="throttled"),
        c.get("notify_stale_feeds"),
    )


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
                while "mqtt" not in await feeds.read(dt.datetime.now(dt.UTC)):  # noqa: ASYNC110 - polls Redis
                    await asyncio.sleep(0.02)
            async with running(settings(stream, hooks, "b", claim_idle_s=30)) as b:
                await until(lambda: [x.id for x in b.router.state.inhibited] == [alert(2).id], 5)
                await asyncio.sleep(0.3)
                assert chat_titles(hooks) == []
                assert (await held_by(stream, "b"))[1] == [alert(2).id]
                assert gauges(b) == (1, 0, 1)
                await publish(stream, [at(feed_alert("feed_recovered", "mqtt"), now)])
                await until(lambda: len(hooks.bodies("/chat")) == 1, 5)
                await asyncio.sleep(0.3)
                assert await held_by(stream, "b") == ({}, [])
                assert gauges(b) == (0, 0, 0)
    finally:
        await client.aclose()
    assert chat_titles(hooks) == [HELD_ONE]
    assert alert(2).symbol in hooks.bodies("/chat")[0]["message"]


@pytest.mark.integration
async def test_the_group_record_only_moves_forward_in_time(stream: str) -> None:
    """Twenty writers recording at once (each on its own connection), or one reading older
    entries (claimed from a dead one): each field keeps the latest `ts`, and every writer gets
    through (the WATCH loop used to give up after ten conflicts, ending the notifier's run).
    Fields and values that are not the record's are left out of it."""
    t0 = dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC)
    now = t0 + dt.timedelta(hours=1)
    clients = [aioredis.Redis() for _ in range(20)]
    feeds = [SharedFeeds(c, stream, "notifier") for c in clients]
    stales = [
        at(feed_alert("feed_stale", "mqtt", i), t0 + dt.timedelta(minutes=i)) for i in range(20)
    ]
    recovered = [
        at(feed_alert("feed_recovered", "ws", i), t0 + dt.timedelta(seconds=i)) for i in range(20)
    ]
    try:
        await asyncio.gather(
            *(
                f.record([s, r, alert(7)], now)
                for f, s, r in zip(feeds, stales, recovered, strict=True)
            )
        )
        await feeds[0].record([at(feed_alert("feed_stale", "mqtt", 0), t0)], now)
        await clients[0].hset(
            feeds[0].key, mapping={"other": "x", b"stale:\xff": "y", "recovered:": "z"}
        )
        assert await feeds[0].read(now) == {
            "mqtt": ((t0 + dt.timedelta(minutes=19)).strftime(ISO), None),
            "ws": (None, (t0 + dt.timedelta(seconds=19)).strftime(ISO)),
        }
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.integration
async def test_a_ts_from_the_future_is_neither_recorded_nor_believed(stream: str) -> None:
    """A `feed_stale` stamped a day ahead (a daemon's clock set wrong) is not recorded; one
    already in the hash is not read, and the next real one replaces it. Moving only forward,
    it used to hold every later `ts` off and keep the feed stale for the whole group (alerts
    held back) until its day came, even after the feed's real recovery."""
    now = dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC)
    client = aioredis.Redis()
    feeds = SharedFeeds(client, stream, "notifier")
    tomorrow = at(feed_alert("feed_stale", "mqtt"), now + dt.timedelta(days=1))
    try:
        await feeds.record([tomorrow], now)
        assert await feeds.read(now) == {}
        await client.hset(feeds.key, "stale:mqtt", tomorrow.ts)
        await client.hset(feeds.key, mapping={"recovered:mqtt": "x", "stale:ws": "2026-01-05"})
        assert await feeds.read(now) == {}  # (nor a `ts` that is no instant)
        real = at(feed_alert("feed_stale", "mqtt", 1), now - dt.timedelta(minutes=1))
        await feeds.record([real], now)
        assert await feeds.read(now) == {"mqtt": (real.ts, None)}
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_a_feeds_key_of_another_type_is_logged_and_delivery_goes_on(stream: str) -> None:
    """`{stream}:notify:{group}:feeds` holds a list: one `feed_sharing_failed` error, and
    alerts, feed health included, are delivered. The WRONGTYPE error used to end the
    notifier's run, and every restart's."""
    client = aioredis.Redis()
    key = f"{stream}:notify:notifier:feeds"
    await client.rpush(key, "x")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    await publish(stream, [at(feed_alert("feed_stale", "mqtt"), now), alert(1)])
    try:
        async with WebhookServer() as hooks:
            with capture_logs() as logs:
                async with running(settings(stream, hooks, "a")):
                    await until(lambda: len(hooks.bodies("/ops")) == 1, 5)
                    await publish(stream, [at(feed_alert("feed_recovered", "mqtt"), now), alert(2)])
                    await until(lambda: len(hooks.bodies("/chat")) == 2, 5)
                    await asyncio.sleep(1.5)  # (the ticker's looks at the hash)
    finally:
        await client.aclose()
    failed = [e for e in logs if e["event"] == "feed_sharing_failed"]
    assert len(failed) == 1 and "WRONGTYPE" in failed[0]["error"] and failed[0]["key"] == key
    assert sorted(chat_titles(hooks)) == sorted([HELD_ONE, alert(2).title])


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
    """Adopting a state joins the feeds whose `feed_stale` expired, each with the later `ts`."""
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


def test_an_older_recovery_read_late_ends_no_later_stale_feed() -> None:
    """A router took mqtt's `feed_stale` of 15:20 from the group, then reads a `feed_recovered`
    of 15:05 (claimed from a notifier that died, or read while catching up): mqtt stays stale,
    alerts are still held back, and the later recovery known stays. The old recovery used to
    end the inhibition (a summary while the feed was still stale) and move `recovered` back."""
    r = router("a")
    now = T0 + dt.timedelta(minutes=30)
    r.shared_feeds({"mqtt": (ts(20), ts(10))}, now)
    old = r.accept(
        "1-0", at(feed_alert("feed_recovered", "mqtt"), T0 + dt.timedelta(minutes=5)), now
    )
    assert old.notices == []
    assert (r.state.stale_feeds, r.state.recovered) == ({"mqtt": ts(20)}, {"mqtt": ts(10)})
    assert r.accept("2-0", alert(1), now).verdict == "inhibited"
    new = r.accept(
        "3-0", at(feed_alert("feed_recovered", "mqtt"), T0 + dt.timedelta(minutes=25)), now
    )
    assert [n.kind for n in new.notices] == ["inhibited_summary"]
    assert (r.state.stale_feeds, r.state.inhibited) == ({}, [])


def test_adopting_a_state_that_knew_the_recovery_lets_our_held_alerts_go() -> None:
    """`b` holds alert 1 while mqtt is stale (15:00); it adopts a stopped notifier's state
    that read mqtt's recovery (15:10). The merge ends mqtt's stale feed, and b's held alert
    goes in a summary. It used to stay held with no stale feed left to end: no summary, ever
    (until some later inhibition ended and listed it again)."""
    b = router("b")
    now = T0 + dt.timedelta(minutes=20)
    b.accept("1-0", at(feed_alert("feed_stale", "mqtt"), T0), now)
    assert b.accept("2-0", alert(1), now).verdict == "inhibited"
    b.adopt(GuardState(recovered={"mqtt": ts(10)}), now)
    assert (b.state.stale_feeds, b.state.inhibited) == ({}, [])
    [summary] = [s.notice for s in b.state.summaries]
    assert summary.kind == "inhibited_summary" and alert(1).symbol in summary.text
    assert [x.id for batch in b.due(now) for x in batch.alerts] == [summary.id]


@pytest.mark.integration
async def test_the_group_is_not_looked_at_while_our_lease_may_have_lapsed(stream: str) -> None:
    """While the notifier's lease was last known held longer ago than it lasts (a stall: another
    notifier may have adopted its held alerts), the group's recovery of mqtt is not taken in:
    summarising the held alert here too would tell it twice. Once custody renews the lease,
    it is."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    await publish(stream, [at(feed_alert("feed_stale", "mqtt"), now), alert(1)])
    async with WebhookServer() as hooks:
        # (custody renews the lease at start, then every 10 s: not during the test)
        config = settings(stream, hooks, "a", claim_idle_s=30, claim_interval_s=60)
        async with running(config) as a:
            await until(lambda: [x.id for x in a.router.state.inhibited] == [alert(1).id], 5)
            a.custody.lease_at = float("-inf")  # (as if custody had not renewed it for a while)
            client = aioredis.Redis()
            await SharedFeeds(client, stream, "notifier").record(
                [at(feed_alert("feed_recovered", "mqtt"), now)], now
            )
            await client.aclose()
            await asyncio.sleep(1.5)  # (the ticker's looks at the hash)
            assert [x.id for x in a.router.state.inhibited] == [alert(1).id]
            assert chat_titles(hooks) == []
            a.custody.lease_at = asyncio.get_running_loop().time()
            await until(lambda: len(hooks.bodies("/chat")) == 1, 5)
    assert chat_titles(hooks) == [HELD_ONE]


def test_a_stale_feed_read_late_after_its_recovery_is_over() -> None:
    """A router knows mqtt recovered at 15:10 (from the group), then reads mqtt's `feed_stale`
    of 15:00 late (it lags, or claimed it from a notifier that died): mqtt stays recovered,
    and an alert of 15:20 goes out as itself. It used to be held back (and delivered only in
    a summary, at the next look at the group); the same `feed_stale` again after it expired
    starts nothing either."""
    r = router("a")
    now = T0 + dt.timedelta(minutes=20)
    r.shared_feeds({"mqtt": (None, ts(10))}, now)
    r.accept("1-0", at(feed_alert("feed_stale", "mqtt"), T0), now)
    assert r.state.stale_feeds == {}
    assert r.accept("2-0", at(alert(1), T0 + dt.timedelta(minutes=20)), now).verdict == "routed"
    r.state.expired["ws"] = ts(0)
    r.accept("3-0", at(feed_alert("feed_stale", "ws"), T0), now)
    assert r.state.stale_feeds == {}
