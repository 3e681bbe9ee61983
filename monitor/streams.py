"""Redis stream entry ids (`1718000000000-3`), compared as Redis orders them.

Apart because the tail (`monitor.tail`) and the notifier (`monitor.notify`) both read the alert
stream, and neither imports the other.
"""

from __future__ import annotations

EntryId = tuple[int, int]  # (milliseconds, sequence)


def entry_id(value: str | bytes) -> EntryId | None:
    """A stream entry id as (milliseconds, sequence); None for "$", ">" and the like."""
    ms, _, seq = text(value).partition("-")
    if not ms.isdigit() or not (seq or "0").isdigit():
        return None
    return int(ms), int(seq or "0")


def text(value: str | bytes) -> str:
    """An entry id (or a group's name) as Redis returns it, bytes or text, as text."""
    return value.decode() if isinstance(value, bytes) else value
