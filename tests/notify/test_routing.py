"""The pure router: route tree, grouping, silences, quiet hours, inhibition, runaway guard."""

from __future__ import annotations

import datetime as dt

from monitor.notify.config import NotifyConfig, parse
from monitor.notify.routing import Decision, Router, synthetic_id, targets
from monitor.notify.silences import Silence
from tests.notify.conftest import alert, feed_alert

S = dt.timedelta(seconds=1)
ENV = {"HOOK": "json://127.0.0.1:9/x"}


def config(extra: dict[str, object] | None = None, **route: object) -> NotifyConfig:
    """A config with receivers chat, email and ops, and the given root route."""
    raw: dict[str, object] = {
        "receivers": [
            {"name": "chat", "url": "json://127.0.0.1:9/chat"},
            {"name": "email", "url": "json://127.0.0.1:9/email"},
            {"name": "ops", "url": "{HOOK}"},
        ],
        "route": {"receivers": ["chat"], "group_wait_s": 30, "group_interval_s": 300, **route},
        **(extra or {}),
    }
    return parse(raw, environ=ENV)


def router(c: NotifyConfig) -> Router:
    return Router(c.route, c.receivers, c.runaway)


def sent(batches: list, receiver: str | None = None) -> list[list[str]]:  # type: ignore[type-arg]
    """The alert ids of each batch (for one receiver)."""
    return [[a.id for a in b.alerts] for b in batches if receiver in (None, b.receiver)]


def test_route_tree_honours_match_order_and_continue() -> None:
    """Critical alerts go to email and (continue) to ops; squeeze to ops; the rest to chat."""
    c = config(
        routes=[
            {"match": {"severity": ["critical"]}, "receivers": ["email"], "continue": True},
            {"match": {"rule": ["squeeze.*"]}, "receivers": ["ops"]},
            {"match": {"symbol": ["SC0?"]}, "receivers": ["email"]},
        ]
    )
    got = {
        name: [t.receiver for t in targets(c.route, a)]
        for name, a in {
            "critical squeeze": alert(1, severity="critical"),
            "squeeze": alert(2),
            "streak SC03": alert(3, rule="streak.daily", kind="streak"),
            "streak SC42": alert(42, rule="streak.daily", kind="streak"),
        }.items()
    }
    assert got == {
        "critical squeeze": ["email", "ops"],
        "squeeze": ["ops"],
        "streak SC03": ["email"],
        "streak SC42": ["chat"],
    }


def test_alerts_arriving_together_are_one_message(now: dt.datetime) -> None:
    """14 squeezes within group_wait make one batch at group_wait; a 15th waits group_interval."""
    r = router(config())
    for i in range(14):
        r.accept(f"{i}-0", alert(i), now + i * S)
    assert r.due(now + 29 * S) == []
    first = r.due(now + 30 * S)
    assert sent(first) == [[alert(i).id for i in range(14)]]
    r.accept("14-0", alert(14), now + 40 * S)
    assert r.due(now + 329 * S) == []
    assert sent(r.due(now + 330 * S)) == [[alert(14).id]]
    assert r.due(now + 2000 * S) == []


def test_group_by_splits_groups_per_symbol(now: dt.datetime) -> None:
    """With group_by = ["symbol"] two symbols give two batches, each with its own alerts."""
    r = router(config(group_by=["symbol"], group_wait_s=0))
    r.accept("1-0", alert(1, symbol="AAA"), now)
    r.accept("2-0", alert(2, symbol="BBB"), now)
    r.accept("3-0", alert(3, symbol="AAA"), now)
    assert sorted(sent(r.due(now))) == [
        [alert(1, symbol="AAA").id, alert(3, symbol="AAA").id],
        [alert(2, symbol="BBB").id],
    ]


def test_silence_drops_matching_alerts_until_it_ends(now: dt.datetime) -> None:
    """A silence on squeeze.* for SC01 drops SC01 only, and only while it lasts."""
    r = router(config(group_wait_s=0))
    silence = Silence("s1", "squeeze.*", "SC01", now, now + 3600 * S, "known", "ops")
    d1 = r.accept("1-0", alert(1), now, [silence])
    d2 = r.accept("2-0", alert(2), now, [silence])
    d3 = r.accept("3-0", alert(1, session="2024-07-17"), now + 3600 * S, [silence])
    assert (d1.verdict, d1.silence, d2.verdict, d3.verdict) == (
        "silenced",
        silence,
        "routed",
        "routed",
    )
    assert sent(r.due(now + 3600 * S)) == [[alert(2).id], [alert(1, session="2024-07-17").id]]


# Chat's receiver, quiet 16:00-18:00 New York.
QUIET_CHAT: dict[str, object] = {
    "receivers": [
        {
            "name": "chat",
            "url": "json://127.0.0.1:9/c",
            "quiet_hours": {"start": "16:00", "end": "18:00", "tz": "America/New_York"},
        }
    ]
}


def test_quiet_hours_queue_until_they_end_and_critical_goes_through(now: dt.datetime) -> None:
    """Chat is quiet 16:00-18:00 New York: a notice waits until 18:00, a critical goes at once."""
    c = config(
        QUIET_CHAT,
        group_wait_s=0,
        group_by=["id"],
    )
    r = router(c)
    r.accept("1-0", alert(1), now)
    r.accept("2-0", alert(2, severity="critical"), now)
    assert sent(r.due(now)) == [[alert(2, severity="critical").id]]
    end = dt.datetime(2024, 7, 16, 22, 0, tzinfo=dt.UTC)  # 18:00 EDT
    assert r.next_due() == end
    assert r.due(end - S) == []
    assert sent(r.due(end)) == [[alert(1).id]]


def test_a_group_held_through_quiet_hours_comes_as_one_message(now: dt.datetime) -> None:
    """Alerts of one group that fire through quiet hours, several group intervals apart, come
    as one message when the hours end, not as one per interval."""
    c = config(
        QUIET_CHAT,
        group_wait_s=0,
        group_interval_s=300,
    )
    r = router(c)
    for n in range(3):  # 16:05, 16:15, 16:25 New York
        at = now + n * 600 * S
        r.accept(f"{n}-0", alert(n), at)
        assert r.due(at) == []
    end = dt.datetime(2024, 7, 16, 22, 0, tzinfo=dt.UTC)  # 18:00 EDT
    assert sent(r.due(end)) == [[alert(0).id, alert(1).id, alert(2).id]]
    assert r.waiting() == 0


def test_quiet_hours_in_digest_mode_drop_to_the_digest(now: dt.datetime) -> None:
    """In digest mode a batch in quiet hours comes out marked as dropped to the digest."""
    c = config(
        {
            "digest": {"enabled": True},  # to the root route's receivers: chat
            "receivers": [
                {
                    "name": "chat",
                    "url": "json://127.0.0.1:9/c",
                    "quiet_hours": {
                        "start": "15:00",
                        "end": "09:00",
                        "tz": "America/New_York",
                        "mode": "digest",
                    },
                }
            ],
        },
        group_wait_s=0,
    )
    r = router(c)
    r.accept("1-0", alert(1), now)
    batches = r.due(now)
    assert [(b.receiver, b.dropped, [a.id for a in b.alerts]) for b in batches] == [
        ("chat", "quiet_hours_digest", [alert(1).id])
    ]


def test_stale_feed_inhibits_symbol_alerts_and_summarises_on_recovery(now: dt.datetime) -> None:
    """While a feed is stale symbol alerts are held (a route may opt out); recovery sends a
    summary listing them."""
    r = router(
        config(
            group_wait_s=0,
            group_by=["id"],
            routes=[{"match": {"severity": ["critical"]}, "receivers": ["ops"], "inhibit": False}],
        )
    )
    r.accept("1-0", feed_alert("feed_stale", "alpaca"), now)
    verdicts = [
        r.accept("2-0", alert(2), now).verdict,
        r.accept("3-0", alert(3), now).verdict,
        r.accept("4-0", alert(4, severity="critical"), now).verdict,
    ]
    assert verdicts == ["inhibited", "inhibited", "routed"]
    recovered = feed_alert("feed_recovered", "alpaca")
    d = r.accept("5-0", recovered, now + 60 * S)
    assert [(n.kind, n.text) for n in d.notices] == [
        (
            "inhibited_summary",
            "Held back while alpaca was stale: SC02 (squeeze.daily), SC03 (squeeze.daily).",
        )
    ]
    assert d.notices[0].id == synthetic_id("inhibited", recovered.id)
    assert sent(r.due(now + 60 * S)) == [
        [feed_alert("feed_stale", "alpaca").id],
        [alert(4, severity="critical").id],
        [recovered.id],
        [d.notices[0].id],
    ]
    assert r.state.inhibited == [] and r.state.stale_feeds == {}


def test_a_silenced_recovery_still_ends_the_inhibition(now: dt.datetime) -> None:
    """A silence over the feed alerts during maintenance: the recovery is not sent, but it
    ends the inhibition its stale began. Before, every later per-symbol alert, critical ones
    included, was held back for good."""
    r = router(config(group_wait_s=0, group_by=["id"]))
    silence = Silence("s1", "feed.*", "*", now, now + 3600 * S, "maintenance", "ops")
    assert r.accept("1-0", feed_alert("feed_stale", "alpaca"), now, [silence]).verdict == (
        "silenced"
    )
    assert r.accept("2-0", alert(2), now, [silence]).verdict == "inhibited"
    d = r.accept("3-0", feed_alert("feed_recovered", "alpaca"), now, [silence])
    assert d.verdict == "silenced"
    assert [n.kind for n in d.notices] == ["inhibited_summary"]
    assert r.state.stale_feeds == {}
    assert r.accept("4-0", alert(4, severity="critical"), now, [silence]).verdict == "routed"


def test_a_stale_feed_without_recovery_stops_inhibiting_after_two_hours(
    now: dt.datetime,
) -> None:
    """A daemon restarted while its feed was stale never sends `feed_recovered`: an alert two
    hours (by the alerts' times) after the stale one ends the inhibition, with the summary."""
    import msgspec

    r = router(config(group_wait_s=0, group_by=["id"]))
    stale = feed_alert("feed_stale", "alpaca")
    r.accept("1-0", stale, now)
    assert r.accept("2-0", alert(2), now).verdict == "inhibited"
    ts = dt.datetime.fromisoformat(stale.ts.replace("Z", "+00:00"))

    def at(delay: dt.timedelta, n: int) -> Decision:
        later = msgspec.structs.replace(alert(n), ts=(ts + delay).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return r.accept(f"{n}-0", later, now)

    assert at(dt.timedelta(minutes=119), 3).verdict == "inhibited"
    d = at(dt.timedelta(minutes=121), 4)
    assert d.verdict == "routed"
    (notice,) = d.notices
    assert notice.kind == "inhibited_summary" and "no feed_recovered within 2 hours" in notice.text
    assert r.state.stale_feeds == {} and r.state.inhibited == []


def test_runaway_rule_is_throttled_with_one_notice_and_one_summary(now: dt.datetime) -> None:
    """A rule firing 5 times with max_alerts=3 in 10 minutes: 3 go out, the operator is told,
    the other 2 come as one summary after 10 quiet minutes."""
    r = router(
        config(
            {"runaway": {"max_alerts": 3, "window_s": 600, "receivers": ["ops"]}},
            group_wait_s=0,
            group_by=["id"],
        )
    )
    verdicts = [r.accept(f"{i}-0", alert(i), now + i * S).verdict for i in range(5)]
    assert verdicts == ["routed", "routed", "routed", "throttled", "throttled"]
    first = r.due(now + 5 * S)
    assert [(b.receiver, b.alerts[0].kind) for b in first] == [
        ("chat", "squeeze"),
        ("chat", "squeeze"),
        ("chat", "squeeze"),
        ("ops", "runaway"),
    ]
    assert r.due(now + 603 * S) == []
    summary = r.due(now + 604 * S)
    assert [(b.receiver, b.alerts[0].kind, b.alerts[0].title) for b in summary] == [
        ("chat", "runaway_summary", "squeeze.daily: 2 alerts while throttled")
    ]
    assert summary[0].items[0].entry is None


def test_runaway_guard_counts_an_alert_read_again_once(now: dt.datetime) -> None:
    """With max_alerts=5, four alerts accepted again (a restart re-reading pending entries) pass
    as themselves; the 5th distinct alert passes and the 6th trips the guard; while throttled,
    the four read again still pass and the throttled one read again is held once."""
    r = router(config({"runaway": {"max_alerts": 5, "window_s": 600}}, group_by=["id"]))
    verdicts = [r.accept(f"{i}-0", alert(i), now + i * S).verdict for i in range(4)]
    verdicts += [r.accept(f"{i}-0", alert(i), now + 10 * S).verdict for i in range(4)]
    assert verdicts == ["routed"] * 8
    fifth, sixth = r.accept("4-0", alert(4), now + 11 * S), r.accept("5-0", alert(5), now + 12 * S)
    assert (fifth.verdict, fifth.notices) == ("routed", [])
    assert (sixth.verdict, [n.kind for n in sixth.notices]) == ("throttled", ["runaway"])
    again = [r.accept(f"{i}-0", alert(i), now + 13 * S).verdict for i in (0, 3, 5)]
    assert again == ["routed", "routed", "throttled"]
    assert r.state.throttled == {"squeeze.daily": [alert(5)]}


def test_a_runaway_summary_stays_in_the_state_until_every_receiver_has_it(
    now: dt.datetime,
) -> None:
    """The guard's summary of two held alerts, routed to chat and email, stays in the durable
    state until both have it (sent or dead-lettered); a router started from the state saved
    after chat had it routes it again to email alone. Before, the summary left the state when
    it was made, and a restart before its delivery lost the held alerts."""
    import msgspec

    from monitor.notify.routing import GuardState

    c = config(
        {"runaway": {"max_alerts": 1, "window_s": 60}},
        receivers=["chat", "email"],
        group_wait_s=0,
        group_by=["id"],
    )
    r = router(c)
    verdicts = [r.accept(f"{i}-0", alert(i), now).verdict for i in range(3)]
    assert verdicts == ["routed", "throttled", "throttled"]
    r.due(now)
    summaries = r.due(now + 60 * S)
    summary = summaries[0].alerts[0]
    assert [(b.receiver, b.alerts) for b in summaries] == [
        ("chat", [summary]),
        ("email", [summary]),
    ]
    assert summary.title == "squeeze.daily: 2 alerts while throttled"
    r.completed("chat", [summary])
    saved = msgspec.json.decode(msgspec.json.encode(r.state), type=GuardState)
    assert [(s.notice, s.receivers) for s in saved.summaries] == [(summary, ["email"])]
    again = Router(c.route, c.receivers, c.runaway, saved)
    again.resume(now + 70 * S)
    assert [(b.receiver, b.alerts) for b in again.due(now + 70 * S)] == [("email", [summary])]
    again.completed("email", [summary])
    assert (again.state.summaries, again.state.throttled) == ([], {})


def test_group_wait_and_group_interval_take_durations_as_the_issue_names_them(
    now: dt.datetime,
) -> None:
    """`group_wait = "10s"` and `group_interval = "1m"` (an alert router's names and
    durations; numbers are seconds), in the root and in a child route, time the groups as
    `group_wait_s` and `group_interval_s` do. Before, both names were refused as unknown."""
    raw: dict[str, object] = {
        "receivers": [{"name": "chat", "url": "json://127.0.0.1:9/chat"}],
        "route": {
            "receivers": ["chat"],
            "group_wait": "10s",
            "group_interval": "1m",
            "routes": [{"match": {"symbol": ["SC01"]}, "group_wait": 2.5}],
        },
    }
    c = parse(raw)
    assert (c.route.group_wait_s, c.route.group_interval_s) == (10.0, 60.0)
    assert c.route.routes[0].group_wait_s == 2.5
    r = router(c)
    r.accept("0-0", alert(0), now)
    r.accept("1-0", alert(1), now)  # (SC01: the child route, 2.5 s)
    assert sent(r.due(now + 2.5 * S)) == [[alert(1).id]]
    assert r.due(now + 9 * S) == []
    assert sent(r.due(now + 10 * S)) == [[alert(0).id]]
    r.accept("2-0", alert(2), now + 11 * S)
    assert r.due(now + 69 * S) == []
    assert sent(r.due(now + 70 * S)) == [[alert(2).id]]
    assert (
        parse({**raw, "route": {"receivers": ["chat"], "group_wait": "1h30m"}}).route.group_wait_s
        == 5400.0
    )


def test_a_group_wait_that_is_no_duration_or_set_twice_is_refused() -> None:
    """A word, a negative number, or both `group_wait` and `group_wait_s`: a ConfigError
    naming the field."""
    import pytest

    from monitor.errors import ConfigError

    base = {"receivers": [{"name": "chat", "url": "json://127.0.0.1:9/chat"}]}
    for route, said in (
        ({"group_wait": "soon"}, "route.group_wait: not a duration"),
        ({"group_interval": -5}, "route.group_interval: must be 0 to 366 days"),
        ({"group_interval": 1e15}, "route.group_interval: must be 0 to 366 days"),
        ({"group_wait": "99999999999999999999h"}, "route.group_wait: at most 366 days"),
        ({"group_wait_s": 1e300}, "route.group_wait_s: Expected `float` <= 31622400"),
        ({"group_wait": "5m", "group_wait_s": 300}, "route.group_wait: set group_wait or"),
        ({"routes": [{"group_interval": "2x"}]}, "route.routes[0].group_interval: not a"),
        ({"group_wait": "9" * 400 + "s"}, "route.group_wait: not a duration"),
    ):
        with pytest.raises(ConfigError, match=said.replace("[", r"\[").replace("]", r"\]")):
            parse({**base, "route": {"receivers": ["chat"], **route}})
