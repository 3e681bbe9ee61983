"""Positional metrics (numpy over the whole universe) against plain-Python oracles, one symbol
(group) at a time."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.metrics import (
    GATHERED_SPAN,
    prior_larger,
    run_lengths,
    trailing_min,
    trailing_return,
    with_high,
)

# Groups of values: small integers so that ties and runs are common; None is a missing value.
GROUPS = st.lists(
    st.lists(st.one_of(st.none(), st.integers(0, 5)), min_size=1, max_size=40),
    min_size=1,
    max_size=6,
)


def _flat(groups: list[list[int | None]]) -> tuple[list[int | None], np.ndarray, np.ndarray]:
    """The values one after another, each row's group start, and each row's index within it."""
    values = [v for g in groups for v in g]
    starts = np.concatenate(
        [np.full(len(g), sum(map(len, groups[:i]))) for i, g in enumerate(groups)]
    )
    idx = np.concatenate([np.arange(len(g)) for g in groups])
    return values, starts.astype(np.int64), idx.astype(np.int64)


@settings(max_examples=300, deadline=None)
@given(GROUPS, st.sampled_from([1, 2, 4, 16]), st.data())
def test_prior_larger_is_the_latest_larger_earlier_row_of_the_group(
    groups: list[list[int | None]], block: int, data: st.DataObject
) -> None:
    values, starts, _ = _flat(groups)
    missing = data.draw(st.sampled_from([None, np.nan, -np.inf]))  # how a missing one comes in
    column = pl.Series([missing if v is None else float(v) for v in values], dtype=pl.Float64)
    array = column.to_numpy()  # (null: NaN, never larger, as NaN is)
    positions = np.array(
        sorted(data.draw(st.sets(st.integers(0, len(values) - 1)))), dtype=np.int64
    )
    margin = data.draw(st.sampled_from([0.0, 0.5, 1.0]))  # (1.0: an equal-by-one is not larger)
    got = prior_larger(column, starts[positions], positions, block=block, margin=margin)
    for p, found in zip(positions, got, strict=True):
        earlier = [j for j in range(starts[p], p) if array[j] > array[p] + margin]  # (NaN: no)
        assert found == (earlier[-1] if earlier else -1)


@settings(max_examples=200, deadline=None)
@given(GROUPS)
def test_run_lengths_count_consecutive_hits_within_each_group(
    groups: list[list[int | None]],
) -> None:
    values, _, idx = _flat(groups)
    hit = pl.Series([None if v is None else v > 2 for v in values], dtype=pl.Boolean)
    got = run_lengths(hit, pl.Series(idx)).to_list()
    expected: list[int] = []
    for v, i in zip(values, idx, strict=True):
        run = expected[-1] + 1 if i > 0 and expected and expected[-1] >= 0 else 1
        expected.append(run if v is not None and v > 2 else 0)
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(GROUPS, st.integers(1, 5))
def test_trailing_min_where_the_window_is_the_symbols_own(
    groups: list[list[int | None]], span: int
) -> None:
    values, _, idx = _flat(groups)
    numbers = [0.5 if v is None else float(v) for v in values]
    where = [
        bool(i >= span - 1 and v is not None and v > 1) for v, i in zip(values, idx, strict=True)
    ]
    got = trailing_min(pl.Series(numbers), pl.Series(where), span).to_list()
    for row, (wanted, value) in enumerate(zip(where, got, strict=True)):
        assert value == (min(numbers[row - span + 1 : row + 1]) if wanted else None)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 5), min_size=60, max_size=160), min_size=1, max_size=3),
    st.sampled_from([GATHERED_SPAN, GATHERED_SPAN + 1, 100, 100_000]),
)
def test_trailing_min_of_a_long_span_is_the_windows_minimum(
    groups: list[list[int]], span: int
) -> None:
    """Past GATHERED_SPAN (a rolling minimum, not one gather per period: a 100,000-period
    streak took seconds a step) the minimum is still that of the row's own last `span` values."""
    numbers = [float(v) for g in groups for v in g]
    idx = [i for g in groups for i in range(len(g))]
    where = [i >= span - 1 and v > 0 for v, i in zip(numbers, idx, strict=True)]
    got = trailing_min(pl.Series(numbers), pl.Series(where), span).to_list()
    for row, (wanted, value) in enumerate(zip(where, got, strict=True)):
        assert value == (min(numbers[row - span + 1 : row + 1]) if wanted else None)


@settings(max_examples=200, deadline=None)
@given(GROUPS, st.integers(1, 5))
def test_trailing_return_where_the_window_is_the_symbols_own(
    groups: list[list[int | None]], span: int
) -> None:
    values, _, idx = _flat(groups)
    closes = [1.5 if v is None else float(v) + 1.0 for v in values]
    where = [bool(i >= span and v is not None and v > 1) for v, i in zip(values, idx, strict=True)]
    got = trailing_return(pl.Series(closes), pl.Series(where), span).to_list()
    for row, (wanted, value) in enumerate(zip(where, got, strict=True)):
        assert value == (closes[row] / closes[row - span] - 1.0 if wanted else None)
    assert trailing_return(
        pl.Series([], dtype=pl.Float64), pl.Series([], dtype=pl.Boolean), 2
    ).is_empty()


@settings(max_examples=200, deadline=None)
@given(GROUPS, st.one_of(st.none(), st.integers(1, 8)))
def test_with_high_is_the_latest_highest_close_of_the_window(
    groups: list[list[int | None]], lookback: int | None
) -> None:
    """The high over all history or the last `lookback` periods, the row and session of its
    latest occurrence: equal closes are common here, and a window whose high was not a high
    when it was set (a larger close has left the window) is too. A period missing from the
    history (`num` skips one before each close drawn as None) is one of the `lookback`."""
    values, starts, _ = _flat(groups)
    closes = [1.5 if v is None else float(v) + 1.0 for v in values]
    symbols = [f"S{i}" for i, g in enumerate(groups) for _ in g]
    nums = list(itertools.accumulate(2 if v is None else 1 for v in values))
    sessions = pl.date_range(pl.date(2000, 1, 1), pl.date(2000, 12, 31), eager=True)
    frame = pl.DataFrame(
        {"symbol": symbols, "session": sessions[: len(closes)], "close": closes, "num": nums}
    )
    got = with_high(frame, lookback).drop("num")
    for row in range(len(closes)):
        first = int(starts[row])
        if lookback is not None:
            while nums[first] <= nums[row] - lookback:
                first += 1
        window = closes[first : row + 1]
        at = first + max(j for j, c in enumerate(window) if c == max(window))
        assert got.row(row, named=True) == {
            "symbol": symbols[row], "session": sessions[row], "close": closes[row],
            "high": closes[at], "high_row": at, "high_date": sessions[at],
        }  # fmt: skip
