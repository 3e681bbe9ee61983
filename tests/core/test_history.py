"""What happened next: the running statistics equal a plain-Python oracle over earlier firings."""

from __future__ import annotations

import datetime as dt
import statistics

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core import history
from monitor.core.history import attach

HORIZONS = [1, 3, 10]
DAY0 = dt.date(2020, 1, 1)


def oracle(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """For each firing: the earlier firings of its group, and per horizon the forward returns of
    those whose horizon had passed (num + h <= this num: periods, some of them missing from the
    history)."""
    out = []
    for row in rows:
        earlier = [
            r
            for r in rows
            if (r["symbol"], r["variant"]) == (row["symbol"], row["variant"])
            and r["num"] < row["num"]  # type: ignore[operator]
        ]
        got: dict[str, object] = {
            "prior_occurrences": len(earlier),
            "prior_dates": [r["session"] for r in earlier],
        }
        for h in HORIZONS:
            known = [
                r[f"fwd_{h}"]
                for r in earlier
                if r["num"] + h <= row["num"] and r[f"fwd_{h}"] is not None  # type: ignore[operator]
            ]
            got[f"n_{h}"] = len(known)
            got[f"mean_{h}"] = statistics.fmean(known) if known else None  # type: ignore[arg-type]
            got[f"median_{h}"] = statistics.median(known) if known else None  # type: ignore[type-var]
            got[f"up_{h}"] = sum(v > 0 for v in known) / len(known) if known else None  # type: ignore[operator]
            got[f"min_{h}"] = min(known) if known else None  # type: ignore[type-var]
            got[f"max_{h}"] = max(known) if known else None  # type: ignore[type-var]
        out.append(got)
    return out


GROUP = st.lists(
    st.tuples(
        st.integers(1, 6),  # gap to the previous firing, in periods
        *[st.one_of(st.none(), st.floats(-0.5, 0.5)) for _ in HORIZONS],
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(GROUP, min_size=1, max_size=5), st.booleans())
def test_running_statistics_equal_the_oracle(
    groups: list[list[tuple[int, ...]]], variants: bool
) -> None:
    """Counts, dates, means, medians, shares up, minima and maxima match, group by group."""
    rows: list[dict[str, object]] = []
    for g, firings in enumerate(groups):
        num = 0
        for gap, *fwd in firings:
            num += gap
            rows.append(
                {
                    "symbol": f"S{g // 2 if variants else g}",
                    "variant": f"v{g % 2}" if variants else "",
                    "num": num,
                    "session": DAY0 + dt.timedelta(days=num),
                    **{f"fwd_{h}": v for h, v in zip(HORIZONS, fwd, strict=True)},
                }
            )
    schema = {f"fwd_{h}": pl.Float64 for h in HORIZONS}
    frame = pl.DataFrame(rows, schema_overrides=schema)
    got = attach(frame, HORIZONS)
    for mine, want in zip(got.to_dicts(), oracle(rows), strict=True):
        for key, value in want.items():
            if isinstance(value, float):
                assert mine[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
            else:
                assert mine[key] == value, key
    # Sums and extremes scanned a position of the groups at a time, or by polars per group
    # (groups longer than SCANNED): to the bit the same.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(history, "SCANNED", 0)
        assert attach(frame, HORIZONS).equals(got)


def test_no_firings() -> None:
    """An empty frame gets the columns, empty."""
    frame = pl.DataFrame(
        schema={"symbol": pl.String, "variant": pl.String, "num": pl.Int64, "session": pl.Date}
        | {f"fwd_{h}": pl.Float64 for h in HORIZONS}
    )
    out = attach(frame, HORIZONS)
    assert out.height == 0
    assert {"prior_occurrences", "prior_dates", "median_10"} <= set(out.columns)


def test_a_nan_return_is_summed_as_polars_sums_it() -> None:
    """A forward return that is NaN (not missing) makes the running sum NaN from there, as in
    polars' running sum (the scan would skip it as missing: the per-group path takes over)."""
    frame = pl.DataFrame(
        {
            "symbol": ["A"] * 4,
            "variant": [""] * 4,
            "num": [1, 5, 9, 13],
            "session": [DAY0 + dt.timedelta(days=d) for d in (1, 5, 9, 13)],
            **{f"fwd_{h}": [0.1, float("nan"), 0.2, None] for h in HORIZONS},
        }
    )
    out = attach(frame, HORIZONS)
    assert out.get_column("n_1").to_list() == [0, 1, 2, 3]
    assert out.get_column("mean_1").to_list()[1] == pytest.approx(0.1)
    assert all(v != v for v in out.get_column("mean_1").to_list()[2:])  # (NaN)
