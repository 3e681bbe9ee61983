"""Numbers for people: the polars text of alert payloads equals the Python text, digit for digit."""

from __future__ import annotations

import datetime as dt
import math

import msgspec
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.model import Alert, decode_alert, encode_alert
from monitor.core.payload import alert_lines, decode_lines
from monitor.core.rules.context import RuleContext, fixed, fixed_expr, pct, pct_expr
from monitor.core.rules.spec import parse_rules

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e7, max_value=1e7),
    st.floats(min_value=-2.0, max_value=2.0),
    st.none(),
)


@pytest.mark.parametrize(
    ("x", "decimals", "signed", "thousands", "want"),
    [
        (0.18611987, 1, True, False, "+0.2"),
        (1234567.891, 2, False, True, "1,234,567.89"),
        (-1234.5, 2, False, True, "-1,234.50"),
        (41.3, 2, False, True, "41.30"),
        (999.995, 2, False, True, "1,000.00"),
        (-0.0004, 1, True, False, "+0.0"),
        (12345, 0, False, True, "12,345"),
        (float("nan"), 2, False, False, "n/a"),
        (float("inf"), 1, True, False, "n/a"),
        (1e300, 2, False, False, "n/a"),
        (None, 1, False, False, "n/a"),
    ],
)
def test_fixed_examples(
    x: float | None, decimals: int, signed: bool, thousands: bool, want: str
) -> None:
    """Fixed decimals, a sign when asked, thousands grouped, 'n/a' for what is not a number."""
    assert fixed(x, decimals, signed=signed, thousands=thousands) == want
    frame = pl.DataFrame({"x": [x]}, schema={"x": pl.Float64})
    expr = fixed_expr(pl.col("x"), decimals, signed=signed, thousands=thousands)
    assert frame.select(expr).item() == want


def test_pct_examples() -> None:
    """Fractions read as percentages with one decimal: 0.115 -> 11.5%."""
    assert pct(0.115) == "11.5%"
    assert pct(0.115, signed=True) == "+11.5%"
    assert pct(-0.2071, signed=True) == "-20.7%"
    assert pct(None) == "n/a"


@settings(max_examples=300, deadline=None)
@given(st.lists(FLOATS, min_size=1, max_size=40), st.integers(0, 3), st.booleans(), st.booleans())
def test_polars_text_equals_python_text(
    xs: list[float | None], decimals: int, signed: bool, thousands: bool
) -> None:
    """Whatever the number, the vectorised formatting gives the Python formatting's string."""
    frame = pl.DataFrame({"x": xs}, schema={"x": pl.Float64})
    got = frame.select(
        fixed_expr(pl.col("x"), decimals, signed=signed, thousands=thousands).alias("f"),
        pct_expr(pl.col("x"), signed=signed).alias("p"),
    )
    assert got.get_column("f").to_list() == [
        fixed(x, decimals, signed=signed, thousands=thousands) for x in xs
    ]
    assert got.get_column("p").to_list() == [pct(x, signed=signed) for x in xs]


def test_fixed_agrees_with_format_away_from_ties() -> None:
    """Away from exact halves, `fixed` is Python's own `f"{x:,.2f}"` (bar the sign of zero)."""
    xs = [i * 0.37 + 0.001 for i in range(-5000, 5000)]
    for x in xs:
        want = f"{x:,.2f}"
        assert fixed(x, 2, thousands=True) == ("0.00" if want == "-0.00" else want)
    assert math.isclose(float(fixed(2.5, 0)), 2.0)  # half to even, as polars rounds


RULES = b"""
[names]
ABC = "Abc Corp"
[[rules]]
id = "surge.5d"
kind = "surge"
universe = true
window = 5
min_return = 0.10
"""


def _fired(symbols: list[str]) -> pl.DataFrame:
    """Two surge firings (of `symbols`) with history, as `firing.firings` makes them."""
    ts = dt.datetime(2024, 7, 16, 20, tzinfo=dt.UTC)
    return pl.DataFrame(
        {
            "pos": [7, 9],
            "symbol": symbols,
            "session": [dt.date(2024, 7, 16)] * 2,
            "ts": [ts, ts],
            "idx": [7, 9],
            "ref": [12.0, 3.5],
            "variant": ["", ""],
            "cond": [True, True],
            "return": [0.1149, 0.25],
            "close": [12.0, 3.5],
            "history_start": [dt.date(2024, 7, 1)] * 2,
            "largest_since": [dt.date(2020, 4, 9), None],
            "prior_occurrences": [2, 0],
            "prior_dates": [[dt.date(2021, 1, 5), dt.date(2022, 3, 1)], []],
            **{
                f"{stat}_{h}": [0.05, None] if stat != "n" else [2, 0]
                for h in (5, 21, 63)
                for stat in ("fwd", "n", "mean", "median", "up", "min", "max")
            },
        }
    )


def test_alert_lines_are_alert_payloads() -> None:
    """Each line decodes to an Alert whose own encoding is the line (names and words included,
    quotes, backslashes and non-ASCII text escaped as JSON wants)."""
    rule = parse_rules(RULES).rules[0]
    ctx = RuleContext(names={"ABC": 'Abc "Q" Corp\\é'})
    lines = alert_lines(_fired(["ABC", 'X"Y']), rule, ctx)
    alerts = decode_lines(lines)
    assert [a.id for a in alerts] == lines.get_column("id").to_list()
    for alert, line in zip(alerts, lines.get_column("json"), strict=True):
        assert encode_alert(alert) == msgspec.json.encode(decode_alert(line))
    abc, xyz = alerts
    assert abc.title == 'Abc "Q" Corp\\é +11.5% in 5 sessions'
    assert abc.text == (
        'Abc "Q" Corp\\é rose 11.5% in 5 sessions, its largest 5-session gain since 2020-04-09.'
    )
    assert xyz.symbol == 'X"Y' and xyz.title.startswith('X"Y ')
    assert abc.metrics == {"return": 0.1149, "close": 12.0, "largest_since": "2020-04-09"}
    assert abc.history is not None and abc.history.prior_dates == ["2021-01-05", "2022-03-01"]
    assert abc.history.summary == (
        "2 earlier times since 2021; over the next 21 sessions, +5.0% on average "
        "(median +5.0%), 0 of 2 up."
    )
    assert [s.periods for s in abc.history.forward] == [5, 21, 63]
    assert xyz.text.endswith("its largest 5-session gain on record (since 2024-07-01).")
    assert xyz.history is not None and xyz.history.summary == "First time in the loaded history."


@pytest.mark.parametrize(
    ("name", "plain"),
    [("Abc Corp é/ü <&> 'x' ~", True), ("Tab\tCorp", False), ('Q"', False), ("B\\S", False)],
)
def test_words_without_escapes_are_written_as_the_json_writer_writes_them(
    monkeypatch: pytest.MonkeyPatch, name: str, plain: bool
) -> None:
    """Text fields with nothing to escape are written as they are; the lines equal those the
    JSON writer makes, and text with a control character, quote or backslash goes through the
    writer (and decodes back to itself)."""
    import monitor.core.payload as payload

    rule = parse_rules(RULES).rules[0]
    ctx = RuleContext(names={"ABC": name})
    fired = _fired(["ABC", "XY.Z"])
    seen: list[bool] = []
    check = payload._plain_text
    monkeypatch.setattr(payload, "_plain_text", lambda *a: seen.append(check(*a)) or seen[-1])
    lines = alert_lines(fired, rule, ctx)
    monkeypatch.setattr(payload, "_plain_text", lambda *a: False)
    assert lines.equals(alert_lines(fired, rule, ctx))
    assert seen == [plain]
    assert decode_lines(lines)[0].title.startswith(name + " ")


def test_large_frames_built_in_two_halves_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past PARALLEL_ROWS the halves are built side by side: the same lines, in the same order."""
    import monitor.core.payload as payload
    from monitor.calendar import nyse_sessions
    from monitor.cli import load_rules
    from monitor.datafiles import DataSpec, read_daily
    from monitor.replay import build_engine, replay_steps
    from tests.conftest import RULES, RUT

    bars = read_daily(DataSpec(str(RUT), "^RUT")).bars
    rules = load_rules(RULES)

    def lines() -> pl.DataFrame:
        engine = build_engine(rules, nyse_sessions(dt.date(1987, 1, 1)))  # type: ignore[arg-type]
        return pl.concat([step.lines for step in replay_steps(engine, bars)])

    whole = lines()
    monkeypatch.setattr(payload, "PARALLEL_ROWS", 2)
    halves = lines()
    assert whole.height > 100
    assert halves.equals(whole)


def _one_firing(rule_toml: str, metrics: dict[str, object], horizons: tuple[int, ...]) -> Alert:
    """The alert of one firing of the rule `rule_toml` (a `[[rules]]` table's body) on ABC
    with `metrics`, one earlier firing whose outcome is known over every horizon."""
    rule = parse_rules(f"[[rules]]\n{rule_toml}\n").rules[0]
    ts = dt.datetime(2024, 7, 12, 20, tzinfo=dt.UTC)
    fired = pl.DataFrame(
        {
            "pos": [3],
            "symbol": ["ABC"],
            "session": [dt.date(2024, 7, 12)],
            "ts": [ts],
            "idx": [3],
            "ref": [12.0],
            "variant": [""],
            "cond": [True],
            **{k: [v] for k, v in metrics.items()},
            "history_start": [dt.date(2024, 1, 5)],
            "prior_occurrences": [1],
            "prior_dates": [[dt.date(2024, 3, 1)]],
            **{
                f"{stat}_{h}": [1 if stat == "n" else 1.0 if stat == "up" else 0.02]
                for h in horizons
                for stat in ("fwd", "n", "mean", "median", "up", "min", "max")
            },
        }
    )
    (alert,) = decode_lines(alert_lines(fired, rule, RuleContext()))
    return alert


@pytest.mark.parametrize(
    ("rule", "metrics", "title", "text"),
    [
        (
            'id = "w"\nkind = "streak"\nsymbols = ["ABC"]\ntimeframe = "1w"\ncount = 1\n'
            "min_return = 0.07\nhorizons = [1]",
            {"streak": 1, "return": 0.073, "min_period_return": 0.073, "close": 12.0},
            "ABC: up more than 7.0% in the week",
            "ABC rose more than 7.0% in the week (+7.3%), closing at 12.00.",
        ),
        (
            'id = "w"\nkind = "streak"\nsymbols = ["ABC"]\ntimeframe = "1w"\ncount = 2\n'
            "min_return = 0.07\nhorizons = [1]",
            {"streak": 2, "return": 0.16, "min_period_return": 0.073, "close": 12.0},
            "ABC: 2 straight weeks up more than 7.0%",
            "ABC rose more than 7.0% in each of 2 weeks (+16.0% in all), closing at 12.00.",
        ),
        (
            'id = "s"\nkind = "surge"\nsymbols = ["ABC"]\ntimeframe = "1w"\nwindow = 1\n'
            "horizons = [1]",
            {"return": 0.12, "close": 12.0, "largest_since": dt.date(2024, 3, 1)},
            "ABC +12.0% in one week",
            "ABC rose 12.0% in one week, its largest one-week gain since 2024-03-01.",
        ),
        (
            'id = "m"\nkind = "movers"\nuniverse = true\ntimeframe = "1w"\nwindow = 1\n'
            "horizons = [1]",
            {"return": 0.12, "rank": 1, "close": 12.0},
            "Top mover #1: ABC +12.0%",
            "ABC is the #1 gainer over one week: +12.0%.",
        ),
        (
            'id = "r"\nkind = "rotation"\nsmall = "ABC"\nlarge = "QQQ"\ntimeframe = "1w"\n'
            "window = 1\nhorizons = [1]",
            {
                "spread": 0.06,
                "return": 0.05,
                "large_return": -0.01,
                "large": "QQQ",
                "close": 12.0,
                "large_close": 400.0,
            },
            "Rotation: ABC beat QQQ by 6.0 points in one week",
            "ABC beat QQQ by 6.0 percentage points over one week (+5.0% against -1.0%).",
        ),
        (
            'id = "b"\nkind = "breadth"\nuniverse = true\ntimeframe = "1w"\nwindow = 1\n'
            "horizons = [1]",
            {"share": 1.0, "up": 2, "counted": 2},
            "Breadth: 100.0% of the universe up over one week",
            "100.0% of the universe (2 of 2) rose over the last week.",
        ),
    ],
)
def test_words_for_one_period_read_as_english(
    rule: str, metrics: dict[str, object], title: str, text: str
) -> None:
    """Counts and windows of one say "in the week", "one week", "the last week" (not "each of
    1 week", "1 weeks"); the default breadth label reads "the universe"; a horizon of one is
    "over the next week"."""
    alert = _one_firing(rule, metrics, (1,))
    assert (alert.title, alert.text) == (title, text)
    assert alert.history is not None
    assert alert.history.summary == (
        "1 earlier time since 2024; over the next week, +2.0% on average (median +2.0%), 1 of 1 up."
    )


@pytest.mark.parametrize(
    ("setting", "want"),
    [(0.01, "1.0%"), (0.0025, "0.25%"), (0.00125, "0.125%"), (0.015, "1.5%"), (0.1, "10.0%")],
)
def test_a_rules_threshold_is_written_with_its_own_decimals(setting: float, want: str) -> None:
    """A threshold in a title is the setting, not a measurement to round: min_return = 0.0025
    reads "up more than 0.25%" (it read "0.2%", half to even), 0.01 still "1.0%"."""
    from monitor.core.rules.context import pct_setting

    assert pct_setting(setting) == want
    rule = 'id = "s"\nkind = "streak"\nsymbols = ["ABC"]\ncount = 2\nhorizons = [1]\n'
    rule += f"min_return = {setting}"
    metrics = {"streak": 2, "return": 0.2, "min_period_return": 0.1, "close": 12.0}
    alert = _one_firing(rule, metrics, (1,))
    assert alert.title == f"ABC: 2 straight sessions up more than {want}"


@pytest.mark.parametrize(
    ("rule", "metrics", "text"),
    [
        (
            'id = "s"\nkind = "surge"\nsymbols = ["ABC"]\nwindow = 5\nmin_return = -0.05\n'
            "horizons = [1]",
            {"return": -0.039, "close": 12.0, "largest_since": dt.date(2024, 3, 1)},
            "ABC fell 3.9% in 5 sessions, its largest 5-session return since 2024-03-01.",
        ),
        (
            'id = "s"\nkind = "surge"\nsymbols = ["ABC"]\nwindow = 5\nmin_return = -0.05\n'
            "horizons = [1]",
            {"return": 0.039, "close": 12.0, "largest_since": dt.date(2024, 3, 1)},
            "ABC rose 3.9% in 5 sessions, its largest 5-session gain since 2024-03-01.",
        ),
        (
            'id = "q"\nkind = "squeeze"\nsymbols = ["ABC"]\nmin_return = -0.05\n'
            'unknown_short_interest = "fire"\nhorizons = [1]',
            {
                "return": -0.039,
                "close": 12.0,
                "volume_ratio": 3.0,
                "short_interest": None,
                "short_interest_known": False,
            },
            "ABC fell 3.9% to 12.00 on 3.0x its 20-session average volume, short interest unknown.",
        ),
    ],
)
def test_a_negative_return_is_a_fall_in_words(
    rule: str, metrics: dict[str, object], text: str
) -> None:
    """A rule with a negative `min_return` fires on falls: the sentence says "fell 3.9%" (it
    said "jumped -3.9%", "rose -3.9% ..., its largest 5-session gain"); a gain reads as before."""
    assert _one_firing(rule, metrics, (1,)).text == text
