"""When a short-interest figure becomes usable: `short_interest_lag` sessions after its
settlement date, counted from the first session after it when that day is no session."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from monitor.calendar import nyse_sessions
from monitor.core.short_interest import prepare


@pytest.mark.parametrize(
    ("settled", "lag", "usable"),
    [
        # Friday 2021-01-15 is a session: lag 0 is that day, lag 2 the 2nd session after.
        (dt.date(2021, 1, 15), 0, dt.date(2021, 1, 15)),
        (dt.date(2021, 1, 15), 2, dt.date(2021, 1, 20)),
        # Saturday 2021-01-16, then Monday 01-18 a holiday: the 1st session after is 01-19.
        (dt.date(2021, 1, 16), 0, dt.date(2021, 1, 19)),
        (dt.date(2021, 1, 16), 1, dt.date(2021, 1, 19)),
        (dt.date(2021, 1, 16), 2, dt.date(2021, 1, 20)),
        (dt.date(2021, 1, 16), 8, dt.date(2021, 1, 28)),
    ],
)
def test_a_figure_counts_from_lag_sessions_after_its_settlement(
    settled: dt.date, lag: int, usable: dt.date
) -> None:
    """Lag 2 after Saturday 2021-01-16 is Wednesday 01-20, the 2nd session after it; it used to
    be 01-21, a session late, as if the Saturday were a session itself."""
    raw = pl.DataFrame(
        {"symbol": ["GME"], "short_interest_date": [settled], "percent_of_float": [138.4]}
    )
    table = prepare(raw, nyse_sessions(dt.date(2020, 12, 1), dt.date(2021, 3, 31)), [(lag, 40)])
    assert table.get_column("effective").to_list() == [usable]
