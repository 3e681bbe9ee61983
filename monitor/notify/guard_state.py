"""The router's durable state (`GuardState`): what a notifier holds across restarts, saved
by the service before it acknowledges, and how a stopped notifier's state is taken in by
another (`merged_states`; see monitor/notify/states.py for where it is kept)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec

from monitor.core.model import Alert


class Summary(msgspec.Struct):
    """A summary of held alerts, made and not yet given to `receivers` (sent or dead-lettered)."""

    notice: Alert
    receivers: list[str]


class GuardState(msgspec.Struct):
    """The router's durable state (saved by the service before it acknowledges)."""

    stale_feeds: dict[str, str] = {}
    inhibited: list[Alert] = []
    # rule -> alert id -> when it was counted (epoch s): the alerts that passed in the window.
    # (A state saved with `fired`, times without ids, is read without it: counts start afresh.)
    fired_ids: dict[str, dict[str, float]] = {}
    throttled: dict[str, list[Alert]] = {}  # rule -> alerts held since the guard tripped
    throttled_last: dict[str, float] = {}  # rule -> last firing while throttled (epoch s)
    summaries: list[Summary] = []  # of inhibited or throttled alerts, being delivered
    # feed -> `ts` of the last `feed_recovered` read: a `feed_stale` no later than it, from a
    # stopped notifier's state, is over (`merged_states`)
    recovered: dict[str, str] = {}
    # feed -> `ts` of a `feed_stale` that stopped inhibiting without its `feed_recovered`
    # (STALE_FOR_AT_MOST): the group's record of it (`Router.shared_feeds`) does not start it again
    expired: dict[str, str] = {}


def merged_states(mine: GuardState, other: GuardState) -> GuardState:
    """`mine` with `other` (a stopped notifier's saved state) taken in; neither is changed.
    Summaries and held alerts are appended, by id (a summary in both: its receivers joined);
    per rule, counted ids and throttled alerts are joined, the later time kept; a feed stale in
    either is stale, since the later `feed_stale`, unless either read its `feed_recovered`
    after that."""
    recovered = _later(mine.recovered, other.recovered)
    stale = _later(mine.stale_feeds, other.stale_feeds)
    # (a feed_stale that a feed_recovered read by either came after is over)
    stale = {
        feed: ts
        for feed, ts in stale.items()
        if feed not in recovered or alert_instant(ts) > alert_instant(recovered[feed])
    }
    fired = {rule: dict(ids) for rule, ids in mine.fired_ids.items()}
    for rule, ids in other.fired_ids.items():
        counted = fired.setdefault(rule, {})
        for alert_id, t in ids.items():
            counted[alert_id] = max(t, counted.get(alert_id, t))
    throttled = {rule: list(held) for rule, held in mine.throttled.items()}
    for rule, held in other.throttled.items():
        throttled[rule] = _joined(throttled.get(rule, []), held)
    last = dict(mine.throttled_last)
    for rule, t in other.throttled_last.items():
        last[rule] = max(t, last.get(rule, t))
    summaries = [Summary(s.notice, list(s.receivers)) for s in mine.summaries]
    by_id = {s.notice.id: s for s in summaries}
    for s in other.summaries:
        if s.notice.id in by_id:
            have = by_id[s.notice.id].receivers
            have += [r for r in s.receivers if r not in have]
        else:
            by_id[s.notice.id] = Summary(s.notice, list(s.receivers))
            summaries.append(by_id[s.notice.id])
    return GuardState(
        stale_feeds=stale,
        inhibited=_joined(mine.inhibited, other.inhibited),
        fired_ids=fired,
        throttled=throttled,
        throttled_last=last,
        summaries=summaries,
        recovered=recovered,
        expired=_later(mine.expired, other.expired),
    )


def _later(mine: dict[str, str], other: dict[str, str]) -> dict[str, str]:
    """Per feed, the later `ts` of the two."""
    out = dict(mine)
    for feed, ts in other.items():
        if feed not in out or alert_instant(ts) > alert_instant(out[feed]):
            out[feed] = ts
    return out


def _joined(alerts: Sequence[Alert], more: Sequence[Alert]) -> list[Alert]:
    """`alerts` then those of `more` not among them (by id)."""
    seen = {a.id for a in alerts}
    out = list(alerts)
    for a in more:
        if a.id not in seen:
            seen.add(a.id)
            out.append(a)
    return out


def alert_instant(ts: str) -> dt.datetime:
    """An alert's `ts` (ISO 8601 UTC, `Z`) as an aware datetime (the epoch when unreadable, or
    in year 1 or 9999, where `_expire_stale`'s arithmetic would overflow; the notifier rejects
    such alerts when it reads them, monitor/notify/payload.py)."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    try:
        value = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return epoch
    if not dt.MINYEAR < value.year < dt.MAXYEAR:
        return epoch
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def without(mine: GuardState, taken: GuardState) -> GuardState:
    """`mine` less what another notifier adopted from our saved state `taken` (its held alerts
    and summaries, by id): they are the adopter's to deliver now. Counts and stale feeds stay
    (holding or counting twice loses nothing)."""
    gone = {a.id for a in taken.inhibited}
    held = {a.id for alerts in taken.throttled.values() for a in alerts}
    summaries = {s.notice.id for s in taken.summaries}
    throttled = {
        rule: [a for a in alerts if a.id not in held] for rule, alerts in mine.throttled.items()
    }
    return msgspec.structs.replace(
        mine,
        inhibited=[a for a in mine.inhibited if a.id not in gone],
        throttled={rule: alerts for rule, alerts in throttled.items() if alerts},
        summaries=[s for s in mine.summaries if s.notice.id not in summaries],
    )
