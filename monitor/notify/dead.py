"""`market-monitor notify dead list|resend`: the alerts a receiver could not be given (the dead
letters in `{stream}:dead`, written by monitor/notify/ledger.py), listed, and re-sent once the
receiver works again.

A letter is re-sent through its receiver's own courier (sender, retries, rate limit, format),
as the service sends: the delivery log is checked first, so an alert the receiver has since
got (read again, or re-sent before) does not go twice, and written after; and each alert is
claimed while it is sent (`Dispatcher.resend`), so two resends at once send it once (the other
says `being sent elsewhere`). A letter whose alert the receiver now has leaves the dead stream
(XDEL); one whose send failed again stays as it was, and no second letter is written. Letters
of receiver `*` (an entry that was no alert, or whose routing failed) and of a receiver the
config no longer has cannot be re-sent: `--all` and `--receiver` pass them by, `--id` says so.
One receiver's letters go out grouped by rule and session, as the default route groups alerts
("14 symbols fired squeeze.daily"), at most RESEND_MAX_ALERTS to a message. A letter of a
receiver of several targets (a Telegram URL of several chats, a Slack URL of several channels)
names those that accepted the alert before another failed (`accepted`): it is re-sent to the
others only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
from redis.exceptions import NoPermissionError, RedisError

from monitor.core.model import Alert
from monitor.notify.dispatch import BEING_SENT_ELSEWHERE
from monitor.notify.payload import entry_alert
from monitor.notify.service import Notifier


@dataclass(frozen=True)
class Letter:
    """One dead letter: its id in the dead stream (`key`), the receiver that could not be given
    the alert, why, when, and the alert (None when the entry was none)."""

    key: str
    receiver: str
    alert_id: str
    reason: str
    ts: str
    alert: Alert | None
    # The receiver's targets (Telegram chats, Slack channels of one URL) that accepted the
    # alert before another failed: `resend` does not send it to them again.
    accepted: frozenset[str] = frozenset()
    fields: Mapping[bytes, bytes] = field(default_factory=dict, repr=False)  # (as stored)

    @property
    def what(self) -> str:
        """`rule symbol`, as a person looks for it."""
        if self.alert is None:
            return "? -"
        return f"{self.alert.rule} {self.alert.symbol or '-'}"

    @property
    def when(self) -> str:
        """The time it was dead-lettered, in UTC to the second (as written when unreadable)."""
        try:
            return f"{dt.datetime.fromisoformat(self.ts).astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
        except ValueError:
            return self.ts


def letter(key: str, fields: dict[bytes, bytes]) -> Letter:
    """A dead stream entry as a Letter."""

    def text(name: str) -> str:
        return fields.get(name.encode(), b"").decode(errors="replace")

    try:
        alert: Alert | None = entry_alert(fields)
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
        alert = None
    try:
        accepted = frozenset(msgspec.json.decode(fields.get(b"accepted", b"[]"), type=list[str]))
    except (msgspec.DecodeError, msgspec.ValidationError):  # (written by hand: skip none)
        accepted = frozenset()
    return Letter(
        key, text("receiver"), text("id"), text("reason"), text("ts"), alert, accepted, fields
    )


async def letters(notifier: Notifier, receiver: str | None = None) -> list[Letter]:
    """The dead letters, oldest first (only `receiver`'s, if given)."""
    found = [letter(k, f) for k, f in await notifier.dead.letters()]
    return [x for x in found if receiver is None or x.receiver == receiver]


async def list_letters(notifier: Notifier, receiver: str | None) -> list[str]:
    """A line per dead letter: id, time, receiver, rule and symbol, alert id, reason; marked
    `(delivered since)` when the delivery log says the receiver has the alert now.

    `receiver` must be one of the config, `*`, or one that has letters (a receiver removed
    from the config since): any other name is a ConfigError, as for `resend`, not an empty
    list that reads as "no letters" when the name is mistyped."""
    found = await letters(notifier, receiver)
    if receiver is not None and receiver != "*" and not found:
        notifier.config.receiver(receiver)  # (ConfigError when there is none)
    since = await _delivered(notifier, found)
    return [
        f"{x.key}  {x.when}  {x.receiver}  {x.what}  {x.alert_id}  {x.reason}"
        + (f"  (accepted by {', '.join(sorted(x.accepted))})" if x.accepted else "")
        + ("  (delivered since)" if x.key in since else "")
        for x in found
    ]


async def _accepted_since(notifier: Notifier, x: Letter, accepted: Sequence[str]) -> str:
    """Replace `x` by a letter naming the targets that have its alert now (a resend failed
    again, after more of them took it), so that the next resend skips them too; what to add to
    its line."""
    targets = ", ".join(sorted(accepted))
    try:
        new = await notifier.dead.accepted_since(x.key, x.fields, accepted)
    except RedisError as exc:  # (the letter stays as it was: the next resend sends to them)
        return f" (accepted by {targets} now; the letter could not be updated: {exc})"
    return f" (accepted by {targets} now: the letter is {new})"


async def _delivered(notifier: Notifier, found: Sequence[Letter]) -> set[str]:
    """The keys of the letters whose alert the delivery log says their receiver has."""
    keys: set[str] = set()
    for receiver in {x.receiver for x in found}:
        mine = [x for x in found if x.receiver == receiver and x.alert is not None]
        flags = await notifier.delivered.sent(receiver, [x.alert_id for x in mine])
        keys |= {x.key for x, sent in zip(mine, flags, strict=True) if sent}
    return keys


@dataclass
class Resent:
    """What `resend` did: a line per letter named or tried, the letters removed, and whether
    all went (exit 0) or not (exit 1); `refused` when Redis would not let us remove them."""

    lines: list[str]
    removed: list[str]
    ok: bool
    refused: str = ""


async def resend(
    notifier: Notifier, ids: Sequence[str], receiver: str | None, everything: bool
) -> Resent:
    """Re-send the letters named by `ids`, or all (`everything`), of `receiver` if given."""
    found = await letters(notifier, receiver)
    if not everything and ids:
        found = [x for x in found if x.key in ids]
    result = Resent([], [], ok=True)
    known = {x.key for x in found}
    for key in ids:
        if key not in known:
            result.lines.append(
                f"{key}: no such dead letter" + (f" of {receiver}" if receiver else "")
            )
            result.ok = False
    said: dict[str, str] = {}
    groups: dict[tuple[str, str, str, frozenset[str]], list[tuple[Letter, Alert]]] = {}
    for x in found:
        if x.alert is None or x.receiver not in notifier.dispatch.queues:
            if ids:
                why = "no alert in it" if x.alert is None else "no such receiver in the config"
                said[x.key] = f"skipped: {why}"
                result.ok = False
            continue
        by = (x.receiver, x.alert.rule, x.alert.session, x.accepted)
        groups.setdefault(by, []).append((x, x.alert))
    for (name, _, _, accepted), group in groups.items():
        alerts = list({a.id: a for _, a in group}.values())  # (one alert in two letters: once)
        now: dict[str, tuple[str, ...]] = {}
        done = await notifier.dispatch.resend(name, alerts, accepted, now)
        for x, a in group:
            said[x.key] = done[a.id]
            if not set(now.get(a.id, ())) <= x.accepted:  # (failed again, reaching more)
                said[x.key] += await _accepted_since(notifier, x, now[a.id])
            if done[a.id] in ("sent", "already sent"):
                result.removed.append(x.key)
                continue
            result.ok = False
            if done[a.id] == BEING_SENT_ELSEWHERE:  # (that resend removes it if it goes)
                said[x.key] += " (another resend claimed it: not sent by this one)"
    result.lines += [  # (a letter replaced keeps its old id here: the one asked for)
        f"{x.key}  {x.receiver}  {x.what}: {said[x.key]}" for x in found if x.key in said
    ]
    try:
        await notifier.dead.remove(result.removed)
    except NoPermissionError as exc:
        result.refused = (
            f"the letters sent stay in {notifier.config.dead_stream}: the Redis user may not XDEL "
            f"(grant +xdel, docs/security.md); the delivery log keeps them from going twice: {exc}"
        )
        result.ok = False
    return result
