"""The alert a stream entry carries, decoded and checked before the notifier takes it in. Pure.

The alert schema (monitor/core/model.py) has `ts`, `session` and `history.prior_dates` as text;
the router reads `ts` as an instant (and takes two hours from it) and the charts read the dates
as dates. A value they cannot use (not ISO 8601, or year 1, whose `ts - 2 h` overflows) is
rejected here, as an entry that is not an alert at all is (dead-lettered for receiver `*` and
acknowledged: monitor/notify/service.py), and not left to raise later inside the notifier's
task group, which would stop every receiver and, the entry being still pending, every restart.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

import msgspec

from monitor.core.model import Alert, decode_alert

EARLIEST_YEAR, LATEST_YEAR = 1900, 2200  # the years a `ts`, session or prior date may be in
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SHOWN = 40  # characters of a rejected value quoted in the reason


def entry_alert(fields: Mapping[bytes, bytes]) -> Alert:
    """The alert in an entry's `alert` field: KeyError without one, msgspec.DecodeError when it
    is not JSON, msgspec.ValidationError when it is not an alert the notifier can use (the
    schema's own checks, then `alert_problem`'s)."""
    alert = decode_alert(fields[b"alert"])
    problem = alert_problem(alert)
    if problem is not None:
        raise msgspec.ValidationError(problem)
    return alert


def alert_problem(alert: Alert) -> str | None:
    """Why the alert's times cannot be used, worded as msgspec words a validation error (with
    the field's path), or None: `ts` must be an ISO 8601 instant with a UTC offset (`Z`),
    `session` and each `history.prior_dates` a YYYY-MM-DD date, all in EARLIEST_YEAR to
    LATEST_YEAR."""
    years = f"in years {EARLIEST_YEAR}-{LATEST_YEAR}"
    if not is_instant(alert.ts):
        return _expected(f"an ISO 8601 instant with a UTC offset {years}", alert.ts, "$.ts")
    if not is_date(alert.session):
        return _expected(f"a date YYYY-MM-DD {years}", alert.session, "$.session")
    if alert.history is not None:
        for i, day in enumerate(alert.history.prior_dates):
            if not is_date(day):
                path = f"$.history.prior_dates[{i}]"
                return _expected(f"a date YYYY-MM-DD {years}", day, path)
    return None


def is_instant(text: str) -> bool:
    """Whether `text` is an ISO 8601 date and time with a UTC offset, in the years allowed."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return value.utcoffset() is not None and EARLIEST_YEAR <= value.year <= LATEST_YEAR


def is_date(text: str) -> bool:
    """Whether `text` is a YYYY-MM-DD date in the years allowed."""
    if not _DATE.fullmatch(text):
        return False
    try:
        value = dt.date.fromisoformat(text)
    except ValueError:
        return False
    return EARLIEST_YEAR <= value.year <= LATEST_YEAR


def _expected(what: str, got: str, path: str) -> str:
    shown = got if len(got) <= _SHOWN else got[:_SHOWN] + "..."
    return f"Expected {what}, got {shown!r} - at `{path}`"
