"""What `silence add` can know of the rules and symbols a silence names: those of the alerts in
the stream (the newest `SAMPLE`), read before the silence is stored.

A silence is a glob matched against each alert's `rule` and `symbol`, so a misspelt one
(`streak.daly`) is stored, listed as active and silences nothing. Neither the notifier's config
nor its Redis names the daemon's rules (they are in the daemon's rules file), so a rule never
seen is not refused: it may be rare (a weekly rule), or new. What the stream shows is said
instead, on stderr, when it holds alerts and none of them matches: the rule ids seen there,
the closest to the one given (difflib), and how to end the silence.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any

import msgspec

SAMPLE = 10_000  # the newest alerts read (about 15 MB, a tenth of a second on loopback)
SHOWN = 20  # rule ids named at most


class _Words(msgspec.Struct):
    """The fields of an alert's payload read here (the others are skipped unread)."""

    rule: str
    symbol: str


class SeenAlerts(msgspec.Struct, frozen=True):
    """The rule ids and symbols of the newest `count` alerts of `stream`."""

    stream: str
    count: int
    rules: frozenset[str]
    symbols: frozenset[str]


async def seen_alerts(client: Any, stream: str) -> SeenAlerts | str:
    """The rules and symbols of the newest alerts of `stream`, or why Redis refused to read
    them (an ACL user without XREVRANGE, docs/security.md; a key of another type): the silence
    does not need them. Entries that are no alert are left out."""
    from redis.exceptions import ResponseError

    try:
        entries: Any = await client.xrevrange(stream, count=SAMPLE)
    except ResponseError as exc:  # (NOPERM, WRONGTYPE; Redis unreachable: the add fails too)
        return str(exc)
    decoder = msgspec.json.Decoder(_Words)
    rules: set[str] = set()
    symbols: set[str] = set()
    for _, fields in entries:
        try:
            words = decoder.decode(fields.get(b"alert", b""))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        rules.add(words.rule)
        symbols.add(words.symbol)
    return SeenAlerts(stream, len(entries), frozenset(rules), frozenset(symbols))


def unmatched(rule: str, symbol: str | None, seen: SeenAlerts) -> list[str]:
    """What to say of a silence of `rule` (on `symbol`) that no seen alert matches: a line for
    the rule, else one for the symbol; none when the stream holds no alert (nothing to go by)."""
    if not seen.rules:
        return []
    newest = "newest " if seen.count >= SAMPLE else ""
    where = f"the {newest}{seen.count:,} alert{'s' * (seen.count != 1)} in {seen.stream}"
    if not any(fnmatch.fnmatchcase(r, rule) for r in seen.rules):
        ids = sorted(seen.rules)
        more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
        named = ", ".join(ids[:SHOWN]) + more
        return [f"--rule {rule} matches no rule of {where}{_guess(rule, ids)}; theirs: {named}"]
    if symbol is not None and not any(fnmatch.fnmatchcase(s, symbol) for s in seen.symbols):
        guess = _guess(symbol, sorted(seen.symbols))
        return [f"--symbol {symbol} matches no symbol of {where}{guess}"]
    return []


def _guess(given: str, known: list[str]) -> str:
    """' (did you mean A or B?)' with the known words closest to `given`, case aside; ''."""
    lower = {k.lower(): k for k in known}
    close = [lower[c] for c in difflib.get_close_matches(given.lower(), list(lower), n=3)]
    return f" (did you mean {' or '.join(close)}?)" if close else ""
