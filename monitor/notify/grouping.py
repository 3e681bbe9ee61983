"""What the router groups alerts into: a route's `Target` for an alert, the groups of alerts per
(receiver, route, `group_by` values) on their timers (`Grouper`), and the `Batch` each group
flushes as, one message for one receiver. Pure, like `monitor.notify.routing`, which uses it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from monitor.core.model import Alert


@dataclass(frozen=True)
class Target:
    """Where one route sends an alert: a receiver, the group it joins and the group's timing."""

    receiver: str
    route: str
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    inhibit: bool

    def group_key(self, alert: Alert) -> tuple[str, ...]:
        """The group this alert joins for this receiver."""
        values = tuple(str(getattr(alert, f)) for f in self.group_by)
        return (self.receiver, self.route, *values)


@dataclass
class Item:
    """An alert waiting to be sent, with the stream entry it came from (None when synthetic)."""

    entry: str | None
    alert: Alert


@dataclass
class Batch:
    """One message for one receiver: the alerts of one group, or of one synthetic notice."""

    receiver: str
    key: tuple[str, ...]
    items: list[Item]
    dropped: str = ""  # non-empty: not to be sent (e.g. "quiet_hours_digest")

    @property
    def alerts(self) -> list[Alert]:
        """The alerts in send order."""
        return [i.alert for i in self.items]


@dataclass
class _Group:
    target: Target
    items: list[Item] = field(default_factory=list)
    next_flush: dt.datetime | None = None


class Grouper:
    """Groups of alerts per (receiver, route, group_by values), flushed on their timers."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, ...], _Group] = {}

    def add(self, target: Target, item: Item, now: dt.datetime) -> None:
        """Put an alert in its group (a new group is due `group_wait_s` from now)."""
        key = target.group_key(item.alert)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(
                target, next_flush=now + dt.timedelta(seconds=target.group_wait_s)
            )
        if group.next_flush is None or group.next_flush < now:
            group.next_flush = now
        group.items.append(item)

    def due(self, now: dt.datetime) -> list[Batch]:
        """Groups whose timer has run out, as batches; empty groups past their interval go."""
        out: list[Batch] = []
        for key, g in list(self._groups.items()):
            if g.next_flush is not None and g.next_flush > now:
                continue
            if not g.items:
                del self._groups[key]
                continue
            out.append(Batch(g.target.receiver, key, g.items))
            g.items = []
            g.next_flush = now + dt.timedelta(seconds=g.target.group_interval_s)
        return out

    def next_due(self) -> dt.datetime | None:
        """When the next non-empty group is due."""
        times = [g.next_flush for g in self._groups.values() if g.items and g.next_flush]
        return min(times, default=None)

    def pending(self) -> int:
        """Alerts waiting in groups."""
        return sum(len(g.items) for g in self._groups.values())
