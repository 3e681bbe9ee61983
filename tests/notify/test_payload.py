"""The checks on an entry's alert before the notifier takes it in (monitor/notify/payload.py)."""

from __future__ import annotations

import msgspec
import pytest

from monitor.core.model import Alert, encode_alert
from monitor.notify.payload import alert_problem, entry_alert
from tests.notify.conftest import HISTORY, RUT_ALERT, feed_alert

YEARS = "in years 1900-2200"
INSTANT = f"Expected an ISO 8601 instant with a UTC offset {YEARS}"
DATE = f"Expected a date YYYY-MM-DD {YEARS}"


def with_prior(*dates: str) -> Alert:
    """RUT_ALERT with these `history.prior_dates`."""
    history = msgspec.structs.replace(HISTORY, prior_dates=list(dates))
    return msgspec.structs.replace(RUT_ALERT, history=history)


@pytest.mark.parametrize(
    ("alert", "problem"),
    [
        (RUT_ALERT, None),
        (feed_alert("feed_stale", "mqtt"), None),
        (msgspec.structs.replace(RUT_ALERT, ts="2024-07-16T14:35:12.345678Z"), None),
        (msgspec.structs.replace(RUT_ALERT, ts="2024-07-16T16:00:00-04:00"), None),
        (msgspec.structs.replace(RUT_ALERT, ts="1900-01-01T00:00:00Z"), None),
        (msgspec.structs.replace(RUT_ALERT, session="2200-12-31"), None),
        (with_prior(), None),
        (
            msgspec.structs.replace(RUT_ALERT, ts="0001-01-01T00:00:00Z"),
            f"{INSTANT}, got '0001-01-01T00:00:00Z' - at `$.ts`",
        ),
        (
            msgspec.structs.replace(RUT_ALERT, ts="9999-12-31T23:59:59Z"),
            f"{INSTANT}, got '9999-12-31T23:59:59Z' - at `$.ts`",
        ),
        (
            msgspec.structs.replace(RUT_ALERT, ts="2024-07-16T20:00:00"),
            f"{INSTANT}, got '2024-07-16T20:00:00' - at `$.ts`",
        ),
        (
            msgspec.structs.replace(RUT_ALERT, ts="yesterday"),
            f"{INSTANT}, got 'yesterday' - at `$.ts`",
        ),
        (msgspec.structs.replace(RUT_ALERT, ts=""), f"{INSTANT}, got '' - at `$.ts`"),
        (
            msgspec.structs.replace(RUT_ALERT, session="2024-07-16T20:00"),
            f"{DATE}, got '2024-07-16T20:00' - at `$.session`",
        ),
        (
            msgspec.structs.replace(RUT_ALERT, session="20240716"),
            f"{DATE}, got '20240716' - at `$.session`",
        ),
        (
            msgspec.structs.replace(RUT_ALERT, session="2024-02-30"),
            f"{DATE}, got '2024-02-30' - at `$.session`",
        ),
        (
            msgspec.structs.replace(RUT_ALERT, session="1899-12-31"),
            f"{DATE}, got '1899-12-31' - at `$.session`",
        ),
        (
            msgspec.structs.replace(RUT_ALERT, session="２０２４-07-16"),
            f"{DATE}, got '２０２４-07-16' - at `$.session`",
        ),
        (
            with_prior("1998-10-20", "0001-01-01"),
            f"{DATE}, got '0001-01-01' - at `$.history.prior_dates[1]`",
        ),
        (
            msgspec.structs.replace(RUT_ALERT, session="x" * 50),
            f"{DATE}, got '{'x' * 40}...' - at `$.session`",
        ),
    ],
)
def test_the_times_the_notifier_reads_must_be_readable_and_in_range(
    alert: Alert, problem: str | None
) -> None:
    """`ts` must be an ISO 8601 instant with an offset, `session` and every prior date a
    YYYY-MM-DD date, all in years 1900-2200; the problem names the field as msgspec would."""
    assert alert_problem(alert) == problem


def test_an_entry_with_an_unusable_time_is_a_validation_error_like_a_schema_error() -> None:
    """`entry_alert` raises msgspec.ValidationError for a bad `ts` (as for a schema violation),
    so the notifier rejects it where it rejects entries that are not alerts; a good entry is
    its alert."""
    bad = msgspec.structs.replace(RUT_ALERT, ts="0001-01-01T00:00:00Z")
    with pytest.raises(msgspec.ValidationError) as caught:
        entry_alert({b"id": b"x", b"alert": encode_alert(bad)})
    assert str(caught.value) == f"{INSTANT}, got '0001-01-01T00:00:00Z' - at `$.ts`"
    assert entry_alert({b"alert": encode_alert(RUT_ALERT)}) == RUT_ALERT
