"""The pure router: route tree, grouping, silences, quiet hours, inhibition and the runaway guard.

No I/O and no clock reads: every method takes `now` (timezone-aware UTC). The service feeds it
alerts (`accept`) and asks what is due (`due`); tests drive it with a simulated clock.

Semantics (Alertmanager-like):
- The root route matches every alert. Children are tried in order; a matching child is descended
  into and, unless it has `continue = true`, ends the search. A node none of whose children
  matched is a match itself. Receivers, grouping and timing are inherited when unset.
- Alerts routed to the same receiver by the same route with equal `group_by` values form a group.
  A new group is sent `group_wait_s` after its first alert; later alerts in the group are sent at
  most every `group_interval_s`.
- Silenced alerts are dropped. Quiet hours hold a receiver's batches until the hours end
  (`queue`) or drop them to the digest (`digest`); `bypass_severity` alerts go through.
- Inhibition: while any `feed_stale` alert is active (until its `feed_recovered`), per-symbol
  alerts on routes with `inhibit` (the default) are held back; when the last stale feed recovers,
  one summary alert lists them. Payloads do not name the feed of a per-symbol alert, so every feed
  inhibits every symbol. Feed health is taken in before silences; a stale feed with no
  `feed_recovered` within STALE_FOR_AT_MOST (by the alerts' times) stops inhibiting.
- Runaway guard: a rule firing more than `max_alerts` times in `window_s` is throttled: the
  operator is told at once, and its further alerts are held until the rule has been silent for
  `window_s`, then sent as one summary. Firings are counted by alert id: an alert read again (a
  restart re-reads its pending entries) is not counted twice, and passes again if it passed.
- Held alerts were acknowledged long ago, so a summary of them (inhibition's, the guard's) stays
  in the durable state (`GuardState.summaries`), with the receivers it is routed to, until each
  has it, sent or dead-lettered (`completed`); `resume` routes those left by a stopped notifier
  again (its id is deterministic: the delivery log keeps it once per receiver).
- Each notifier of a group has its own state: the guard counts its share of the alerts. Feed
  health is the group's: what one notifier read reaches the others (`shared_feeds`), so all hold
  alerts back while a feed is stale, and all let them go when any reads its `feed_recovered`.
  A stopped notifier's state is taken in by another (`adopt`: its held alerts, summaries,
  counts and stale feeds, `merged_states`).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from monitor.core.model import Alert
from monitor.notify.config import (
    QuietHours,
    ReceiverConfig,
    RouteConfig,
    RunawaySection,
    parse_clock,
    zone,
)
from monitor.notify.grouping import Batch, Grouper, Item, Target
from monitor.notify.guard_state import GuardState as GuardState  # (re-exported)
from monitor.notify.guard_state import Summary as Summary  # (re-exported)
from monitor.notify.guard_state import alert_instant, merged_states
from monitor.notify.shared_feeds import FeedEvents
from monitor.notify.silences import Silence, silenced_by

FEED_KINDS = ("feed_stale", "feed_recovered")
# A stale feed without its `feed_recovered` for this long stops inhibiting (see `_expire_stale`).
STALE_FOR_AT_MOST = dt.timedelta(hours=2)
SYNTHETIC_KINDS = ("inhibited_summary", "runaway", "runaway_summary")


def _matches(patterns: Sequence[str], value: str) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value, p) for p in patterns)


def route_matches(route: RouteConfig, alert: Alert) -> bool:
    """Whether a route's `match` accepts an alert (glob patterns per field)."""
    m = route.match
    return (
        _matches(m.rule, alert.rule)
        and _matches(m.kind, alert.kind)
        and _matches(m.symbol, alert.symbol)
        and _matches(m.severity, alert.severity)
    )


def targets(root: RouteConfig, alert: Alert) -> list[Target]:
    """Every (receiver, group) the route tree sends an alert to, without duplicates."""
    found: list[Target] = []
    _walk(root, alert, "route", None, found)
    seen: set[str] = set()
    unique = []
    for t in found:
        if t.receiver not in seen:
            seen.add(t.receiver)
            unique.append(t)
    return unique


@dataclass(frozen=True)
class _Inherited:
    receivers: tuple[str, ...]
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    inhibit: bool


def _walk(
    node: RouteConfig, alert: Alert, path: str, parent: _Inherited | None, out: list[Target]
) -> bool:
    if parent is not None and not route_matches(node, alert):
        return False
    here = _Inherited(
        receivers=tuple(node.receivers) or (parent.receivers if parent else ()),
        group_by=tuple(node.group_by)
        if node.group_by is not None
        else (parent.group_by if parent else ("rule", "session")),
        group_wait_s=_pick(node.group_wait_s, parent.group_wait_s if parent else 30.0),
        group_interval_s=_pick(node.group_interval_s, parent.group_interval_s if parent else 300.0),
        inhibit=node.inhibit if node.inhibit is not None else (parent.inhibit if parent else True),
    )
    matched_child = False
    for i, child in enumerate(node.routes):
        if _walk(child, alert, f"{path}.routes[{i}]", here, out):
            matched_child = True
            if not child.continue_:
                break
    if not matched_child:
        out.extend(
            Target(r, path, here.group_by, here.group_wait_s, here.group_interval_s, here.inhibit)
            for r in here.receivers
        )
    return True


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


# -- quiet hours -----------------------------------------------------------------------------


def in_quiet_hours(q: QuietHours, now: dt.datetime) -> bool:
    """Whether `now` falls in the receiver's quiet hours (which may span midnight)."""
    local = now.astimezone(zone(q.tz, "quiet_hours.tz")).time()
    start, end = parse_clock(q.start, "quiet_hours.start"), parse_clock(q.end, "quiet_hours.end")
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def quiet_hours_end(q: QuietHours, now: dt.datetime) -> dt.datetime:
    """The next instant (UTC) at which the quiet hours end."""
    tz = zone(q.tz, "quiet_hours.tz")
    local = now.astimezone(tz)
    end = parse_clock(q.end, "quiet_hours.end")
    candidate = dt.datetime.combine(local.date(), end, tzinfo=tz)
    if candidate <= local:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), end, tzinfo=tz)
    return candidate.astimezone(dt.UTC)


# -- inhibition and the runaway guard: state that survives restarts ----------------------------


def synthetic_id(*parts: str) -> str:
    """A deterministic id for a notice the notifier makes (so delivery is once, like alerts)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def _notice(
    alert_id: str, kind: str, rule: str, symbol: str, title: str, text: str, now: dt.datetime
) -> Alert:
    return Alert(
        id=alert_id,
        rule=rule,
        kind=kind,
        symbol=symbol,
        timeframe="1m",
        session=now.date().isoformat(),
        ts=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        severity="warning",
        title=title,
        text=text,
        metrics={},
        history=None,
    )


def _span(seconds: float) -> str:
    """A window for people: `20 seconds`, `5 minutes`, `90 seconds`, `2 hours`."""
    for size, name in ((3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {name}{'' if n == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


def _listing(alerts: Sequence[Alert], limit: int = 10) -> str:
    parts = [f"{a.symbol} ({a.rule})" for a in alerts[:limit]]
    more = len(alerts) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


Verdict = Literal["routed", "silenced", "inhibited", "throttled", "unrouted"]


@dataclass
class Decision:
    """What `accept` did with an alert: the receivers it was queued for, and why not others."""

    verdict: Verdict
    receivers: set[str]
    silence: Silence | None = None
    notices: list[Alert] = field(default_factory=list)


class Router:
    """Route tree + grouping + silences + quiet hours + inhibition + runaway guard, all pure."""

    def __init__(
        self,
        root: RouteConfig,
        receivers: Sequence[ReceiverConfig],
        runaway: RunawaySection,
        state: GuardState | None = None,
        name: str = "",
    ) -> None:
        self.root = root
        self.name = name  # (the notifier's consumer name: its summaries' ids differ from others')
        self.receivers = {r.name: r for r in receivers}
        self.runaway = runaway
        self.state = state if state is not None else GuardState()
        self.grouper = Grouper()
        self._held: list[tuple[dt.datetime, Batch]] = []  # quiet hours, queued

    def accept(
        self, entry: str | None, alert: Alert, now: dt.datetime, silences: Sequence[Silence] = ()
    ) -> Decision:
        """Route one alert; notices (summaries, operator warnings) are routed as well. Feed
        health is taken in before silences are looked at: a silenced `feed_recovered` still
        ends the inhibition its `feed_stale` began."""
        notices: list[Alert] = []
        self._expire_stale(alert_instant(alert.ts), now, notices)
        if alert.kind == "feed_stale":
            # (one read late, before a recovery known, or the one that expired, is over)
            s, at = self.state, alert_instant(alert.ts)
            recovered, expired = s.recovered.get(alert.symbol), s.expired.get(alert.symbol)
            over = (recovered is not None and alert_instant(recovered) > at) or (
                expired is not None and alert_instant(expired) >= at
            )
            if not over:
                s.stale_feeds[alert.symbol] = alert.ts
        elif alert.kind == "feed_recovered":
            # (an older recovery, read late, ends no later `feed_stale`: one taken from the
            # group, `shared_feeds`, or claimed from a notifier that died)
            stale = self.state.stale_feeds.get(alert.symbol)
            if stale is None or alert_instant(stale) <= alert_instant(alert.ts):
                self.state.stale_feeds.pop(alert.symbol, None)
            self._note_recovered(alert.symbol, alert.ts)
            self._end_inhibition(alert.symbol, alert.id, "was stale", now, notices)
        hit = silenced_by(alert, silences, now)
        if hit is not None:
            return Decision(
                "silenced", set(), silence=hit, notices=self._route_notices(notices, now)
            )
        found = targets(self.root, alert)
        if alert.kind not in FEED_KINDS and alert.kind not in SYNTHETIC_KINDS:
            if self.state.stale_feeds:
                if all(t.inhibit for t in found) and found:
                    self.state.inhibited.append(alert)
                    return Decision("inhibited", set())
                found = [t for t in found if not t.inhibit]
            verdict = self._guard(alert, now, notices)
            if verdict == "throttled":
                return Decision("throttled", set(), notices=self._route_notices(notices, now))
        for t in found:
            self.grouper.add(t, Item(entry, alert), now)
        receivers = {t.receiver for t in found}
        return Decision(
            "routed" if receivers else "unrouted",
            receivers,
            notices=self._route_notices(notices, now),
        )

    def _end_inhibition(
        self, feed: str, key: str, why: str, now: dt.datetime, notices: list[Alert]
    ) -> None:
        """With no stale feed left, the alerts held back are listed in one summary notice."""
        if self.state.stale_feeds or not self.state.inhibited:
            return
        held, self.state.inhibited = self.state.inhibited, []
        summary = self._summarise(
            _notice(
                synthetic_id("inhibited", key),
                "inhibited_summary",
                "notify.inhibited",
                feed,
                f"{len(held)} alerts held back while feeds were stale",
                f"Held back while {feed} {why}: {_listing(held)}.",
                now,
            )
        )
        notices.append(summary)

    def _summarise(self, summary: Alert) -> Alert:
        """`summary` (of held alerts), kept in the state until its receivers have it."""
        receivers = [t.receiver for t in targets(self.root, summary)]
        if receivers:
            self.state.summaries.append(Summary(summary, receivers))
        return summary

    def _expire_stale(self, at: dt.datetime, now: dt.datetime, notices: list[Alert]) -> None:
        """Forget a stale feed when an alert comes STALE_FOR_AT_MOST after its `feed_stale`
        (by the alerts' times, not the clock: a notifier catching up reads old alerts) without
        its `feed_recovered` (a daemon restarted, or the feed renamed, while it was stale
        never sends one): inhibition must not hold every alert back for good."""
        cutoff = at - STALE_FOR_AT_MOST
        old = [f for f, ts in self.state.stale_feeds.items() if alert_instant(ts) < cutoff]
        for feed in old:
            self.state.expired[feed] = self.state.stale_feeds.pop(feed)
            hours = STALE_FOR_AT_MOST.total_seconds() / 3600
            why = f"was stale (no feed_recovered within {hours:g} hours: inhibition ended)"
            self._end_inhibition(feed, f"expired:{feed}:{now.isoformat()}", why, now, notices)

    def shared_feeds(self, group: dict[str, FeedEvents], now: dt.datetime) -> list[Alert]:
        """Take in the feed health the notifiers of the group read (monitor/notify/
        shared_feeds.py): a stale feed whose `feed_recovered` another read is over here too,
        and the alerts held back go in a summary of this notifier's own; a feed whose
        `feed_stale` another read is stale here too, unless this notifier knows it is over (a
        later `feed_recovered`, or expired), or it is older than STALE_FOR_AT_MOST by `now`.
        The notices made, routed."""
        notices: list[Alert] = []
        for feed, (stale, recovered) in sorted(group.items()):
            if recovered is not None:
                self._recovered_elsewhere(feed, recovered, now, notices)
            if stale is not None:
                self._stale_elsewhere(feed, stale, now)
        return self._route_notices(notices, now)

    def _note_recovered(self, feed: str, ts: str) -> None:
        """Keep the later of `ts` and the `feed_recovered` known for `feed`."""
        known = self.state.recovered.get(feed)
        if known is None or alert_instant(ts) > alert_instant(known):
            self.state.recovered[feed] = ts

    def _recovered_elsewhere(
        self, feed: str, ts: str, now: dt.datetime, notices: list[Alert]
    ) -> None:
        at = alert_instant(ts)
        self._note_recovered(feed, ts)
        stale = self.state.stale_feeds.get(feed)
        if stale is None or alert_instant(stale) > at:
            return
        del self.state.stale_feeds[feed]
        key = f"shared:{feed}@{ts}:{self.name}"  # (each notifier summarises what it held)
        self._end_inhibition(feed, key, "was stale", now, notices)

    def _stale_elsewhere(self, feed: str, ts: str, now: dt.datetime) -> None:
        at = alert_instant(ts)
        if at < now - STALE_FOR_AT_MOST:
            return
        s = self.state
        for known in (s.stale_feeds.get(feed), s.recovered.get(feed), s.expired.get(feed)):
            if known is not None and alert_instant(known) >= at:
                return
        s.stale_feeds[feed] = ts

    def _route_notices(self, notices: list[Alert], now: dt.datetime) -> list[Alert]:
        for n in notices:
            found = targets(self.root, n)
            if n.kind == "runaway" and self.runaway.receivers:
                found = [
                    Target(r, "runaway", ("id",), 0.0, 0.0, False) for r in self.runaway.receivers
                ]
            for t in found:
                # Notices skip group_wait: the operator hears about a runaway rule at once.
                self.grouper.add(
                    Target(t.receiver, t.route, ("id",), 0.0, 0.0, False), Item(None, n), now
                )
        return notices

    def _guard(self, alert: Alert, now: dt.datetime, notices: list[Alert]) -> str:
        """Count `alert` towards its rule's firings in the window, once per alert id: an alert
        read again (a restart re-reads the entries still pending, another notifier claims them,
        the daemon adds one twice) is not counted again, and not throttled if it passed."""
        s, rule, t = self.state, alert.rule, now.timestamp()
        passed = {
            i: x for i, x in s.fired_ids.get(rule, {}).items() if x > t - self.runaway.window_s
        }
        if alert.id in passed:
            return "pass"
        if rule in s.throttled:
            if all(a.id != alert.id for a in s.throttled[rule]):
                s.throttled[rule].append(alert)
                s.throttled_last[rule] = t
            return "throttled"
        if len(passed) < self.runaway.max_alerts:
            passed[alert.id] = t
            s.fired_ids[rule] = passed
            return "pass"
        # Kept while throttled (those that passed still pass if read again); out of the window
        # by the time the throttle ends, so the count then starts afresh.
        s.fired_ids[rule] = passed
        s.throttled[rule] = [alert]
        s.throttled_last[rule] = t
        span = _span(self.runaway.window_s)
        notices.append(
            _notice(
                synthetic_id("runaway", rule, alert.id),
                "runaway",
                rule,
                alert.symbol,
                f"Rule {rule} is firing too often: throttled",
                f"{rule} fired more than {self.runaway.max_alerts} times in {span}; "
                f"its alerts are held and sent as one summary once it is quiet for {span}.",
                now,
            )
        )
        return "throttled"

    def resume(self, now: dt.datetime) -> None:
        """Route again, at start, the summaries of the saved state that some receivers did not
        have yet (the notifier stopped first): to those receivers, if still configured."""
        for s in self.state.summaries:
            s.receivers = [r for r in s.receivers if r in self.receivers]
            for r in s.receivers:
                self.grouper.add(
                    Target(r, "summary", ("id",), 0.0, 0.0, False), Item(None, s.notice), now
                )
        self.state.summaries = [s for s in self.state.summaries if s.receivers]

    def adopt(self, other: GuardState, now: dt.datetime) -> None:
        """Take in the saved state of a notifier that stopped (`merged_states`), and route its
        summaries, as `resume` does at start, to the receivers (still configured) that this
        state did not already have them for."""
        had = {s.notice.id: set(s.receivers) for s in self.state.summaries}
        had_stale = dict(self.state.stale_feeds)
        summaries = [
            Summary(s.notice, [r for r in s.receivers if r in self.receivers])
            for s in other.summaries
        ]
        other = msgspec.structs.replace(other, summaries=[s for s in summaries if s.receivers])
        self.state = merged_states(self.state, other)
        for s in other.summaries:
            for r in s.receivers:
                if r not in had.get(s.notice.id, set()):
                    self.grouper.add(
                        Target(r, "summary", ("id",), 0.0, 0.0, False), Item(None, s.notice), now
                    )
        # Alerts held back (by the other, or by this one) for a feed that has recovered since
        # (a recovery one of the two read while the other's lease ran out): their summary goes
        # now. The key is made of what was stale in either: the same adoption, the same id.
        both = {**had_stale, **other.stale_feeds}
        if both and not self.state.stale_feeds:
            notices: list[Alert] = []
            key = "|".join(f"{f}@{both[f]}" for f in sorted(both))
            self._end_inhibition(", ".join(sorted(both)), key, "was stale", now, notices)
            self._route_notices(notices, now)

    def completed(self, receiver: str, alerts: Sequence[Alert]) -> None:
        """`receiver` has `alerts` (sent or dead-lettered): summaries among them that every
        receiver has leave the state."""
        ids = {a.id for a in alerts}
        for s in self.state.summaries:
            if s.notice.id in ids and receiver in s.receivers:
                s.receivers.remove(receiver)
        self.state.summaries = [s for s in self.state.summaries if s.receivers]

    def due(self, now: dt.datetime) -> list[Batch]:
        """Batches to send now: groups whose timer ran out, quiet-hours batches whose hours
        ended, runaway summaries; batches dropped to the digest carry `dropped`."""
        s = self.state
        for rule in [
            r
            for r, last in s.throttled_last.items()
            if last <= now.timestamp() - self.runaway.window_s
        ]:
            held = s.throttled.pop(rule, [])
            s.throttled_last.pop(rule, None)
            if held:
                summary = _notice(
                    synthetic_id("runaway_summary", rule, held[0].id, held[-1].id),
                    "runaway_summary",
                    rule,
                    held[0].symbol,
                    f"{rule}: {len(held)} alerts while throttled",
                    f"While {rule} was throttled it fired {len(held)} times: {_listing(held)}.",
                    now,
                )
                self._route_notices([self._summarise(summary)], now)
        out: list[Batch] = []
        still: list[tuple[dt.datetime, Batch]] = []
        for until, batch in self._held:
            if until <= now:
                out.append(batch)
            else:
                still.append((until, batch))
        self._held = still
        for batch in self.grouper.due(now):
            receiver = self.receivers.get(batch.receiver)
            q = receiver.quiet_hours if receiver is not None else None
            if q is None or not in_quiet_hours(q, now):
                out.append(batch)
                continue
            urgent = [i for i in batch.items if i.alert.severity in q.bypass_severity]
            rest = [i for i in batch.items if i.alert.severity not in q.bypass_severity]
            if urgent:
                out.append(Batch(batch.receiver, batch.key, urgent))
            if not rest:
                continue
            if q.mode == "digest":
                out.append(Batch(batch.receiver, batch.key, rest, dropped="quiet_hours_digest"))
            else:
                self._hold(quiet_hours_end(q, now), Batch(batch.receiver, batch.key, rest))
        return out

    def _hold(self, until: dt.datetime, batch: Batch) -> None:
        """Keep `batch` until its receiver's quiet hours end, in the batch of its group held
        for the same end when there is one: one message after a night, not one per
        `group_interval_s` of it."""
        for held_until, held in self._held:
            if held_until == until and (held.receiver, held.key) == (batch.receiver, batch.key):
                held.items += batch.items
                return
        self._held.append((until, batch))

    def next_due(self) -> dt.datetime | None:
        """The earliest instant at which `due` may return something new."""
        times = [u for u, _ in self._held]
        nxt = self.grouper.next_due()
        if nxt is not None:
            times.append(nxt)
        for last in self.state.throttled_last.values():
            times.append(dt.datetime.fromtimestamp(last + self.runaway.window_s, dt.UTC))
        return min(times, default=None)

    def waiting(self) -> int:
        """Alerts waiting in groups or in quiet hours."""
        return self.grouper.pending() + sum(len(b.items) for _, b in self._held)
