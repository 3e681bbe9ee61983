"""Notifiers sharing a consumer group, against real Redis: each saves its router state under its
own key, and the state a stopped notifier leaves (held alerts, summaries not yet delivered) is
adopted by another, or by the next start; plus the pure merge of two states."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from monitor.core.model import Alert
from monitor.notify.config import NotifyConfig
from monitor.notify.routing import GuardState, Router, Summary, merged_states
from monitor.notify.service import Notifier
from tests.notify.conftest import alert, feed_alert, publish
from tests.notify.servers import WebhookServer
from tests.notify.test_routing import config as router_config
from tests.notify.test_service import make_config, pending, running, until

ROUTE = {"receivers": ["chat"], "routes": [{"match": {"kind": ["feed_*"]}, "receivers": ["ops"]}]}
HELD = "2 alerts held back while feeds were stale"
HELD_ONE = "1 alerts held back while feeds were stale"


def notice(n: int, title: str) -> Alert:
    """A summary the notifier made (its id deterministic, as theirs are)."""
    return msgspec.structs.replace(
        alert(n), id=f"summary-{n}", rule="notify.inhibited", kind="inhibited_summary", title=title
    )


def settings(stream: str, hooks: WebhookServer, consumer: str, **redis: Any) -> NotifyConfig:
    """Receivers `chat` (retrying for long) and `ops` (feed alerts); fast timers."""
    receivers = [
        {"name": "chat", "url": hooks.url("/chat"), "max_attempts": 1000},
        {"name": "ops", "url": hooks.url("/ops")},
    ]
    return make_config(stream, receivers, route=ROUTE, redis={"consumer": consumer, **redis})


async def saved(stream: str) -> dict[str, Any]:
    """Every saved state of the group `notifier`, by key (less the stream's name)."""
    client = aioredis.Redis()
    found = {}
    async for key in client.scan_iter(f"{stream}:notify:notifier:state*"):
        found[key.decode().removeprefix(stream)] = msgspec.json.decode(await client.get(key))
    await client.aclose()
    return found


async def saved_soon(stream: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The saved states once `check` accepts them (or after 5 s, whatever they are)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while not check(await saved(stream)):  # noqa: ASYNC110 - polls Redis
                await asyncio.sleep(0.05)
    return await saved(stream)


def only(key: str) -> Callable[[dict[str, Any]], bool]:
    """Saved states that are `key`'s alone, holding nothing."""
    return lambda states: list(states) == [key] and held(states[key]) == ({}, [], [])


def held(state: dict[str, Any]) -> tuple[Any, ...]:
    """What a saved state holds: stale feeds, held alert ids, summary titles."""
    return (
        state["stale_feeds"],
        [a["id"] for a in state["inhibited"]],
        [s["notice"]["title"] for s in state["summaries"]],
    )


async def read_as(stream: str, consumer: str, count: int) -> None:
    """Read `count` new entries as `consumer` of the group: pending to it, read at its start."""
    client = aioredis.Redis()
    if not await client.exists(stream) or not await client.xinfo_groups(stream):
        await client.xgroup_create(stream, "notifier", id="0", mkstream=True)
    await client.xreadgroup("notifier", consumer, {stream: ">"}, count=count)
    await client.aclose()


@contextlib.asynccontextmanager
async def dying(config: NotifyConfig) -> AsyncIterator[Notifier]:
    """A notifier running until the block ends, then killed: its run cancelled, so it neither
    saves nor drops its lease (which lapses after `claim_idle_s`)."""
    notifier = Notifier(config)
    async with notifier:
        task = asyncio.create_task(notifier.run(asyncio.Event()), name="notifier_dying")
        try:
            yield notifier
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.integration
async def test_two_notifiers_of_one_group_each_keep_their_own_saved_state(stream: str) -> None:
    """Notifier `a` holds an alert back while feed `mqtt` is stale, `b` one while `ws` is: each
    saves under its own key and both are in Redis. Before, both saved to one key, the last
    writer won, and the other's held alert was gone from Redis (a kill then lost it)."""
    held_a, held_b = alert(1), alert(2)
    await publish(stream, [feed_alert("feed_stale", "mqtt"), held_a])
    await read_as(stream, "a", 2)
    await publish(stream, [feed_alert("feed_stale", "ws"), held_b])
    await read_as(stream, "b", 2)
    # claim_idle_s: neither takes over the other's entries, read a moment ago.
    async with (
        WebhookServer() as hooks,
        running(settings(stream, hooks, "a", claim_idle_s=30)),
        running(settings(stream, hooks, "b", claim_idle_s=30)),
    ):
        await until(lambda: len(hooks.bodies("/ops")) == 2)
        states = await saved_soon(
            stream, lambda s: sum(bool(x["inhibited"]) for x in s.values()) == 2
        )
    ts = "2024-07-16T20:00:00Z"
    assert {k: held(s) for k, s in states.items()} == {
        ":notify:notifier:state:a": ({"mqtt": ts}, [held_a.id], []),
        ":notify:notifier:state:b": ({"ws": ts}, [held_b.id], []),
    }


@pytest.mark.integration
@pytest.mark.parametrize("end", ["stopped", "died"])
async def test_the_state_a_notifier_leaves_is_adopted_and_its_summary_delivered(
    stream: str, end: str
) -> None:
    """`a` holds a summary `chat` refused and an alert held while `ws` is stale; `b` runs beside
    it and leaves its state alone while `a` lives. `a` stops (its lease dropped) or dies (its
    lease lapses): `b` adopts its state (one log line, counted), deletes `a`'s key, delivers
    the summary once `chat` is back, and the held alert's summary when `ws` recovers. Before,
    `a`'s state was in the group's one key, which `b` overwrote and never read again."""
    async with WebhookServer() as hooks:
        hooks.always("/chat", 503)
        await publish(
            stream,
            [
                feed_alert("feed_stale", "mqtt"),
                alert(1),
                alert(2),
                feed_alert("feed_recovered", "mqtt"),
                feed_alert("feed_stale", "ws"),
                alert(3),
            ],
        )
        with capture_logs() as logs:
            async with contextlib.AsyncExitStack() as stack:
                first = running if end == "stopped" else dying
                async with first(settings(stream, hooks, "a")):
                    await until(lambda: len(hooks.bodies("/ops")) == 3)
                    await until(lambda: any(p == "/chat" for p, *_ in hooks.received))
                    b = await stack.enter_async_context(running(settings(stream, hooks, "b")))
                    await asyncio.sleep(0.3)  # (three rounds of b's custody)
                    alive = await saved(stream)
                    assert await pending(stream) == 0
                hooks.always("/chat", None)
                await until(lambda: len(hooks.bodies("/chat")) == 1)
                await publish(stream, [feed_alert("feed_recovered", "ws")])
                await until(lambda: len(hooks.bodies("/chat")) == 2)
                states = await saved_soon(stream, only(":notify:notifier:state:b"))
    assert {k: held(s) for k, s in alive.items()} == {
        ":notify:notifier:state:a": ({"ws": "2024-07-16T20:00:00Z"}, [alert(3).id], [HELD]),
        ":notify:notifier:state:b": ({}, [], []),
    }
    assert [b["title"] for b in hooks.bodies("/chat")] == [HELD, HELD_ONE]
    assert {k: held(s) for k, s in states.items()} == {":notify:notifier:state:b": ({}, [], [])}
    adopted = [e for e in logs if e["event"] == "state_adopted"]
    assert [(e["consumer"], e["owner"], e["summaries"], e["inhibited"]) for e in adopted] == [
        ("b", "a", [HELD], 1)
    ]
    assert b.counters.get("notify_state_adopted") == 1
    assert await pending(stream) == 0


@pytest.mark.integration
async def test_the_groups_one_state_key_of_earlier_versions_is_adopted_at_start(
    stream: str,
) -> None:
    """A state saved by an earlier version under `{stream}:notify:{group}:state` (a summary
    for `chat`, an alert held while `mqtt` is stale) is adopted at start: the summary goes
    out, the held alert's summary follows `mqtt`'s recovery, and the old key is deleted.
    Before, it was the notifier's own key, left in place for every notifier of the group."""
    legacy = GuardState(
        stale_feeds={"mqtt": "2024-07-16T20:00:00Z"},
        inhibited=[alert(1)],
        summaries=[Summary(notice(9, "3 alerts held back while feeds were stale"), ["chat"])],
    )
    client = aioredis.Redis()
    await client.set(f"{stream}:notify:notifier:state", msgspec.json.encode(legacy))
    await client.aclose()
    async with WebhookServer() as hooks:
        with capture_logs() as logs:
            async with running(settings(stream, hooks, "c1")) as notifier:
                await until(lambda: len(hooks.bodies("/chat")) == 1)
                await publish(stream, [feed_alert("feed_recovered", "mqtt")])
                await until(lambda: len(hooks.bodies("/chat")) == 2)
                states = await saved_soon(stream, only(":notify:notifier:state:c1"))
    assert [b["title"] for b in hooks.bodies("/chat")] == [
        "3 alerts held back while feeds were stale",
        HELD_ONE,
    ]
    assert {k: held(s) for k, s in states.items()} == {":notify:notifier:state:c1": ({}, [], [])}
    adopted = [e for e in logs if e["event"] == "state_adopted"]
    assert [(e["owner"], e["key"]) for e in adopted] == [(None, f"{stream}:notify:notifier:state")]
    assert notifier.counters.get("notify_state_adopted") == 1


def test_merging_a_state_appends_held_alerts_and_summaries_once_and_keeps_later_times() -> None:
    """Merging another notifier's state: held alerts and summaries appended without repeats (a
    summary in both goes to the receivers of either), counted ids joined with the later time,
    throttled alerts joined per rule with the later last firing, stale feeds joined with the
    later `feed_stale`; neither input changes."""
    a = [alert(i) for i in range(7)]
    n1, n2 = notice(1, "one"), notice(2, "two")
    mine = GuardState(
        stale_feeds={"mqtt": "2024-07-16T20:00:00Z"},
        inhibited=[a[1], a[2]],
        fired_ids={"r": {"x": 10.0, "y": 20.0}},
        throttled={"r": [a[3]]},
        throttled_last={"r": 100.0},
        summaries=[Summary(n1, ["chat"])],
    )
    other = GuardState(
        stale_feeds={"mqtt": "2024-07-16T21:00:00Z", "ws": "2024-07-16T20:30:00+00:00"},
        inhibited=[a[2], a[4]],
        fired_ids={"r": {"y": 25.0, "z": 5.0}, "q": {"w": 1.0}},
        throttled={"r": [a[3], a[5]], "q": [a[6]]},
        throttled_last={"r": 90.0, "q": 50.0},
        summaries=[Summary(n1, ["email", "chat"]), Summary(n2, ["chat"])],
    )
    before = msgspec.json.encode([mine, other])
    assert merged_states(mine, other) == GuardState(
        stale_feeds={"mqtt": "2024-07-16T21:00:00Z", "ws": "2024-07-16T20:30:00+00:00"},
        inhibited=[a[1], a[2], a[4]],
        fired_ids={"r": {"x": 10.0, "y": 25.0, "z": 5.0}, "q": {"w": 1.0}},
        throttled={"r": [a[3], a[5]], "q": [a[6]]},
        throttled_last={"r": 100.0, "q": 50.0},
        summaries=[Summary(n1, ["chat", "email"]), Summary(n2, ["chat"])],
    )
    assert merged_states(GuardState(), GuardState()) == GuardState()
    assert msgspec.json.encode([mine, other]) == before


def test_a_router_routes_only_the_adopted_summaries_it_did_not_have() -> None:
    """A router delivering summary one to chat adopts a state with one (chat, email) and two
    (chat, and a receiver it does not have): it routes one to email and two to chat, not one
    to chat again; adopting the same state twice routes nothing more."""
    now = dt.datetime(2024, 7, 16, 20, 5, tzinfo=dt.UTC)
    c = router_config()
    n1, n2 = notice(1, "one"), notice(2, "two")
    r = Router(c.route, c.receivers, c.runaway, GuardState(summaries=[Summary(n1, ["chat"])]))
    r.resume(now)
    other = GuardState(summaries=[Summary(n1, ["chat", "email"]), Summary(n2, ["chat", "gone"])])
    r.adopt(other, now)
    batches = sorted((b.receiver, [x.id for x in b.alerts]) for b in r.due(now))
    assert batches == [("chat", [n1.id]), ("chat", [n2.id]), ("email", [n1.id])]
    assert r.state.summaries == [Summary(n1, ["chat", "email"]), Summary(n2, ["chat"])]
    r.adopt(other, now)
    assert (r.due(now), r.state.summaries) == (
        [],
        [Summary(n1, ["chat", "email"]), Summary(n2, ["chat"])],
    )


@pytest.mark.integration
async def test_a_feed_recovered_before_the_adoption_ends_the_adopted_inhibition(
    stream: str,
) -> None:
    """`a` dies holding alert 1 while `mqtt` is stale; `b` reads mqtt's `feed_recovered` while
    a's lease still runs, then adopts a's state: the held alert's summary goes out and b's next
    alert at once. The adopted `feed_stale` made mqtt stale again in b, holding every alert
    back for up to two hours."""
    async with WebhookServer() as hooks:
        await publish(stream, [feed_alert("feed_stale", "mqtt"), alert(1)])
        async with dying(settings(stream, hooks, "a", claim_idle_s=2)) as a:
            await until(lambda: [x.id for x in a.router.state.inhibited] == [alert(1).id])
            await asyncio.sleep(0.3)  # (saved)
        async with running(settings(stream, hooks, "b", claim_idle_s=2)) as b:
            await publish(stream, [feed_alert("feed_recovered", "mqtt")])
            await until(lambda: b.counters.get("notify_state_adopted") == 1, 10)
            await publish(stream, [alert(2)])
            await until(lambda: len(hooks.bodies("/chat")) == 2)
            titles = sorted(str(body) for body in hooks.bodies("/chat"))
            assert b.router.state.stale_feeds == {} and b.router.state.inhibited == []
        assert any(HELD_ONE in t for t in titles), titles
        assert any(alert(2).title in t for t in titles), titles


@pytest.mark.integration
async def test_a_key_that_is_no_state_is_logged_and_delivery_goes_on(stream: str) -> None:
    """A registered consumer whose state key holds a hash (WRONGTYPE): logged once as
    `state_unreadable`, left where it is, and alerts are delivered; the ResponseError used to
    end the notifier's run (and every restart's)."""
    client = aioredis.Redis()
    await client.hset(f"{stream}:notify:notifier:state:x", "f", "v")
    await client.sadd(f"{stream}:notify:notifier:saved", "x")
    await publish(stream, [alert(1)])
    async with WebhookServer() as hooks:
        with capture_logs() as logs:
            async with running(settings(stream, hooks, "b")):
                await until(lambda: len(hooks.bodies("/chat")) == 1)
                await asyncio.sleep(0.5)
    assert [e["key"] for e in logs if e["event"] == "state_unreadable"] == [
        f"{stream}:notify:notifier:state:x"
    ]
    assert await client.type(f"{stream}:notify:notifier:state:x") == b"hash"
    await client.aclose()


@pytest.mark.integration
async def test_a_state_with_summaries_for_receivers_it_lacks_is_left_for_others(
    stream: str,
) -> None:
    """A stopped notifier's state holds a summary for `pager`, a receiver `b` does not have:
    `b` leaves the state where it is (logged, `state_left_for_others`) for a notifier that has
    it. It adopted it and dropped the pager's part: that summary was lost."""
    state = GuardState(summaries=[Summary(notice(9, "for pager"), ["pager"])])
    client = aioredis.Redis()
    key = f"{stream}:notify:notifier:state:x"
    await client.set(key, msgspec.json.encode(state))
    await client.sadd(f"{stream}:notify:notifier:saved", "x")
    async with WebhookServer() as hooks:
        with capture_logs() as logs:
            async with running(settings(stream, hooks, "b")) as b:
                await until(lambda: any(e["event"] == "state_left_for_others" for e in logs))
                assert b.counters.get("notify_state_adopted") == 0
    assert msgspec.json.decode(await client.get(key), type=GuardState) == state
    await client.aclose()


@pytest.mark.integration
async def test_a_notifier_whose_lease_lapsed_leaves_what_was_adopted_to_the_adopter(
    stream: str,
) -> None:
    """`a` holds alert 1 while `mqtt` is stale; its lease lapses (a stall: here deleted) and
    `b` adopts its saved state; at its next renewal `a` finds its key gone and drops what `b`
    took: one of them holds alert 1, not both (each would summarise it, under ids of their
    own). It saved the whole state again, and both held it."""
    async with WebhookServer() as hooks:
        await publish(stream, [feed_alert("feed_stale", "mqtt"), alert(1)])
        slow = {"claim_interval_s": 3.0, "claim_idle_s": 10.0}
        async with running(settings(stream, hooks, "a", **slow)) as a:
            await until(lambda: [x.id for x in a.router.state.inhibited] == [alert(1).id])
            key = ":notify:notifier:state:a"
            await saved_soon(stream, lambda states: bool(states.get(key, {}).get("inhibited")))
            client = aioredis.Redis()
            await client.delete(f"{stream}:notify:notifier:alive:a")
            with capture_logs() as logs:
                fast = {"claim_interval_s": 0.2, "claim_idle_s": 10.0}
                async with running(settings(stream, hooks, "b", **fast)) as b:
                    await until(lambda: b.counters.get("notify_state_adopted") == 1)
                    await until(lambda: any(e["event"] == "lease_lapsed" for e in logs), 10)
                    await until(lambda: a.router.state.inhibited == [])
                    assert [x.id for x in b.router.state.inhibited] == [alert(1).id]
            await client.aclose()
        lapsed = [e for e in logs if e["event"] == "lease_lapsed"]
        assert [e["adopted"] for e in lapsed] == [True]


async def test_a_state_gone_with_redis_data_is_kept_and_saved_again(stream: str) -> None:
    """`a` holds alert 1 while `mqtt` is stale; its lease and saved state vanish as a Redis
    restarted without its data would lose them (no notifier adopted them: no adoption mark).
    At its next renewal `a` keeps alert 1 and saves its state again. Before, a state key gone
    was taken for adopted, and `a` dropped the alerts it held: nobody ever told them."""
    async with WebhookServer() as hooks:
        await publish(stream, [feed_alert("feed_stale", "mqtt"), alert(1)])
        fast = {"claim_interval_s": 0.2, "claim_idle_s": 10.0}
        async with running(settings(stream, hooks, "a", **fast)) as a:
            await until(lambda: [x.id for x in a.router.state.inhibited] == [alert(1).id])
            key = ":notify:notifier:state:a"
            await saved_soon(stream, lambda states: bool(states.get(key, {}).get("inhibited")))
            client = aioredis.Redis()
            with capture_logs() as logs:
                await client.delete(
                    f"{stream}:notify:notifier:alive:a", f"{stream}:notify:notifier:state:a"
                )
                await until(lambda: any(e["event"] == "lease_lapsed" for e in logs), 10)
            assert [x.id for x in a.router.state.inhibited] == [alert(1).id]
            await saved_soon(stream, lambda states: bool(states.get(key, {}).get("inhibited")))
            await client.aclose()
        lapsed = [e for e in logs if e["event"] == "lease_lapsed"]
        assert [(e["adopted"], e["state_found"]) for e in lapsed] == [(False, False)]
