"""Silences: "do not tell me about rule X (on symbol S) until T". Matching is pure; the set lives
in a Redis hash `{stream}:silences` (id -> JSON) so every notifier and the CLI share it.

The hash is anyone's to write (`redis-cli HSET`, a script, another version of this program), so
a value that is no silence (not JSON, a field missing, a time without its UTC offset) is left
out of the set, not taken as a reason to stop: the store keeps it in `unreadable` (id ->
why), which the notifier logs (`silence_unreadable`) and `silence list` prints, and `silence
expire` removes it. (Before, one such value stopped the notifier at its next read, and at every
start after that.)"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import secrets
from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from monitor.core.model import Alert

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# The longest silence: a year and a day is past any reason to mute a rule, and longer ones run
# into what a datetime can hold (`--for 99999999999d`).
LONGEST = dt.timedelta(days=366)


class Silence(msgspec.Struct, frozen=True):
    """Alerts of `rule` (a glob) on `symbol` (a glob; None = any) are dropped in [starts, ends)."""

    id: str
    rule: str
    symbol: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    comment: str = ""
    created_by: str = ""

    def __post_init__(self) -> None:
        # (msgspec reads a time without an offset as a naive datetime, which cannot be compared
        # with the notifier's clock: refused here, as a ValidationError of the decode)
        if self.starts_at.utcoffset() is None or self.ends_at.utcoffset() is None:
            raise ValueError("starts_at and ends_at need a UTC offset")

    def is_active(self, now: dt.datetime) -> bool:
        """Whether the silence applies at `now`."""
        return self.starts_at <= now < self.ends_at

    def matches(self, alert: Alert) -> bool:
        """Whether the silence covers this alert (at any time)."""
        if not fnmatch.fnmatchcase(alert.rule, self.rule):
            return False
        return self.symbol is None or fnmatch.fnmatchcase(alert.symbol, self.symbol)


def silenced_by(alert: Alert, silences: Sequence[Silence], now: dt.datetime) -> Silence | None:
    """The first active silence covering the alert, if any."""
    for s in silences:
        if s.is_active(now) and s.matches(alert):
            return s
    return None


def parse_duration(text: str) -> dt.timedelta:
    """`90s`, `30m`, `2h`, `1d`, `1w` as a timedelta; ValueError otherwise, for no time at all
    (`0s` would store a silence that never silences anything) and past `LONGEST`."""
    m = DURATION.match(text.strip())
    if not m:
        raise ValueError(f"not a duration like 30m, 2h or 1d: {text!r}")
    seconds = float(m.group(1)) * UNITS_S[m.group(2)]
    if seconds > LONGEST.total_seconds():  # (before timedelta, which overflows)
        raise ValueError(f"must be at most {LONGEST.days} days: {text!r}")
    duration = dt.timedelta(seconds=seconds)
    if duration <= dt.timedelta(0):
        raise ValueError(f"must be longer than zero: {text!r}")
    return duration


def new_silence(
    rule: str,
    symbol: str | None,
    duration: dt.timedelta,
    now: dt.datetime,
    comment: str = "",
    created_by: str = "",
) -> Silence:
    """A silence starting now, with a fresh short id."""
    return Silence(secrets.token_hex(4), rule, symbol, now, now + duration, comment, created_by)


class SilenceStore:
    """The silences in a Redis hash; expired ones are kept for `keep_expired` then pruned."""

    def __init__(
        self, client: aioredis.Redis, key: str, keep_expired: dt.timedelta = dt.timedelta(days=7)
    ) -> None:
        self._client = client
        self.key = key
        self._keep = keep_expired
        self._decoder = msgspec.json.Decoder(Silence)
        self.unreadable: dict[str, str] = {}  # id -> why its value is no silence (last `all`)

    async def add(self, silence: Silence) -> None:
        """Store a silence."""
        await self._client.hset(self.key, silence.id, msgspec.json.encode(silence))

    async def all(self) -> list[Silence]:
        """Every stored silence, oldest first; values that are none are left out and kept in
        `unreadable`."""
        raw = await self._client.hgetall(self.key)
        found: list[Silence] = []
        self.unreadable = {}
        for key, value in raw.items():
            try:
                found.append(self._decoder.decode(value))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                name = key.decode(errors="backslashreplace") if isinstance(key, bytes) else key
                self.unreadable[name] = str(exc)
        return sorted(found, key=lambda s: (s.starts_at, s.id))

    async def active(self, now: dt.datetime) -> list[Silence]:
        """Silences in force at `now`; prunes ones long expired."""
        found = await self.all()
        old = [s.id for s in found if s.ends_at < now - self._keep]
        if old:
            await self._client.hdel(self.key, *old)
        return [s for s in found if s.is_active(now)]

    async def expire(self, silence_id: str, now: dt.datetime) -> Silence | str | None:
        """End a silence now; None when there is no such silence. A value that is no silence
        is removed, and why it was none returned."""
        raw = await self._client.hget(self.key, silence_id)
        if raw is None:
            return None
        try:
            s = self._decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await self._client.hdel(self.key, silence_id)
            return str(exc)
        ended = msgspec.structs.replace(s, ends_at=min(s.ends_at, now))
        await self.add(ended)
        return ended
