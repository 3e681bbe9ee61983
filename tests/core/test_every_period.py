"""`firing.every_period`, the summary's baseline: what followed every period, against a loop."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

from monitor.core.firing import every_period

UTC = dt.UTC


def cond_frame(seed: int) -> pl.DataFrame:
    """A condition frame of a few symbols (contiguous, `idx` 0, 1, ... within each), with the
    odd zero, missing and NaN reference among the closes, the odd period missing from a
    symbol's history (`num` skips one), and a daily `ts`."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, length in enumerate(rng.integers(1, 40, size=5)):
        num = 0
        for i in range(int(length)):
            num += 1 + int(rng.random() < 0.05)
            ref: float | None = float(rng.uniform(5, 50))
            roll = rng.random()
            ref = 0.0 if roll < 0.03 else None if roll < 0.06 else math.nan if roll < 0.09 else ref
            ts = dt.datetime(2024, 1, 1, 21, tzinfo=UTC) + dt.timedelta(days=i)
            rows.append(
                {"symbol": f"S{s}", "ts": ts, "idx": i, "num": num, "ref": ref, "variant": ""}
            )
    return pl.DataFrame(rows, schema_overrides={"idx": pl.Int64, "ref": pl.Float64})


def by_loop(
    cond: pl.DataFrame, h: int, after: dt.datetime | None, in_session: bool = False
) -> tuple[int, float, int]:
    """Per period from `after` on, the return to the period `h` on of the same symbol (by
    `num`: missing when that period is), in a loop."""
    n, total, up = 0, 0.0, 0
    rows = cond.to_dicts()
    by_key = {(r["symbol"], r["num"]): r for r in rows}
    for row in rows:
        if after is not None and row["ts"] <= after:
            continue
        later = by_key.get((row["symbol"], row["num"] + h))
        if later is None or row["ref"] is None or later["ref"] is None:
            continue
        if in_session and later["session"] != row["session"]:
            continue
        if row["ref"] == 0 or math.isnan(row["ref"]) or math.isnan(later["ref"]):
            continue
        r = later["ref"] / row["ref"] - 1.0
        n, total, up = n + 1, total + r, up + (r > 0)
    return n, total, up


def test_every_period_is_the_loop_over_each_symbols_periods() -> None:
    """Counts, sums and ups per horizon equal a loop's: within a symbol only, to the period `h`
    on (a period missing from the history counts; its return is not known), skipping zero,
    missing and NaN references, from `after` on; a horizon longer than the data counts none."""
    for seed in range(20):
        cond = cond_frame(seed)
        for after in (None, dt.datetime(2024, 1, 10, 21, tzinfo=UTC)):
            got = every_period(cond, [1, 5, 21, 400], after, "1d").row(0, named=True)
            for h in (1, 5, 21, 400):
                n, total, up = by_loop(cond, h, after)
                assert (got[f"n_{h}"], got[f"up_{h}"]) == (n, up), (seed, h, after)
                assert math.isclose(got[f"sum_{h}"], total, abs_tol=1e-9), (seed, h, after)


def test_every_period_counts_each_period_once_whatever_the_variants() -> None:
    """A drawdown's two variants repeat every period of its symbols: counted once."""
    cond = cond_frame(3)
    both = pl.concat(
        [cond.with_columns(pl.lit(v).alias("variant")) for v in ("near_high", "below_high")]
    ).sort("symbol", "variant", maintain_order=True)
    assert every_period(both, [1, 5], None, "1d").equals(every_period(cond, [1, 5], None, "1d"))


def test_a_minute_return_counts_only_within_its_session() -> None:
    """For `1m`, a return whose `h`-th period is in a later session is not known (a loop over
    the same session's periods); for `1d`, the same frame counts across sessions, as before."""
    fewer = 0  # (evaluations where the session made a difference)
    for seed in range(20):
        # (sessions of 7 periods: the frame's periods taken for a symbol's minutes)
        cond = cond_frame(seed).with_columns(
            (pl.lit(dt.date(2024, 1, 2)) + pl.duration(days=pl.col("idx") // 7)).alias("session")
        )
        for after in (None, dt.datetime(2024, 1, 10, 21, tzinfo=UTC)):
            minute = every_period(cond, [1, 5, 21], after, "1m").row(0, named=True)
            daily = every_period(cond, [1, 5, 21], after, "1d").row(0, named=True)
            for h in (1, 5, 21):
                for got, in_session in ((minute, True), (daily, False)):
                    n, total, up = by_loop(cond, h, after, in_session)
                    assert (got[f"n_{h}"], got[f"up_{h}"]) == (n, up), (seed, h, after)
                    assert math.isclose(got[f"sum_{h}"], total, abs_tol=1e-9), (seed, h, after)
            fewer += minute["n_5"] < daily["n_5"]
    assert fewer > 20
