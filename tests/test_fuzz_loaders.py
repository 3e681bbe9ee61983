"""Fuzzing the loaders: no input makes them raise anything but their documented errors."""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import config as cfg
from monitor.core.model import Alert, History, HorizonStats, decode_alert, encode_alert
from monitor.core.rules.spec import RuleError, parse_rules
from monitor.datafiles import DataSpec, read_daily
from monitor.errors import ConfigError, DataError

toml_scalars = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=12).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
    st.sampled_from(["true", "false", "[]", '["IWM", "QQQ"]', "{}", "1e999", "nan"]),
)
keys = st.sampled_from(
    ["id", "kind", "symbols", "universe", "timeframe", "count", "min_return", "window",
     "cooldown", "severity", "horizons", "small", "large", "min_spread", "rise", "drop",
     "max_below_high", "top", "since", "bogus", "volume_ratio", "min_short_interest"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(keys, toml_scalars, max_size=8), max_size=4))
def test_rules_loader_raises_only_rule_errors(tables: list[dict[str, str]]) -> None:
    """Random [[rules]] tables either load or raise RuleError."""
    text = "".join("[[rules]]\n" + "".join(f"{k} = {v}\n" for k, v in t.items()) for t in tables)
    with contextlib.suppress(RuleError):
        parse_rules(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_rules_loader_survives_arbitrary_bytes(raw: bytes) -> None:
    """Arbitrary bytes either load or raise RuleError."""
    with contextlib.suppress(RuleError):
        parse_rules(raw)


sections = st.sampled_from(["store", "redis", "rules", "http", "engine", "shutdown", "log", "x"])
config_keys = st.sampled_from(
    ["path", "url", "channel", "stream", "maxlen", "port", "host", "file", "queue_size",
     "grace_s", "level", "password_env", "late_ticks", "universe", "bogus"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(sections, st.dictionaries(config_keys, toml_scalars, max_size=5), max_size=5)
)
def test_config_loader_raises_only_config_errors(doc: dict[str, dict[str, str]]) -> None:
    """Random daemon configs either load or raise ConfigError naming what is wrong."""
    path = Path(tempfile.mkdtemp()) / "c.toml"
    path.write_text(
        "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in t.items()) for s, t in doc.items())
    )
    try:
        cfg.load(path, environ={})
    except ConfigError as exc:
        assert str(exc).startswith(str(path))


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
stats = st.builds(
    HorizonStats,
    periods=st.integers(1, 300),
    count=st.integers(0, 100),
    mean=st.none() | finite,
    median=st.none() | finite,
    share_positive=st.none() | st.floats(0, 1),
    min=st.none() | finite,
    max=st.none() | finite,
)
alerts = st.builds(
    Alert,
    id=st.text(min_size=1, max_size=30),
    rule=st.text(max_size=30),
    kind=st.sampled_from(["streak", "surge", "squeeze", "feed_stale"]),
    symbol=st.text(max_size=10),
    timeframe=st.sampled_from(["1m", "1d", "1w"]),
    session=st.dates().map(dt.date.isoformat),
    ts=st.text(max_size=30),
    severity=st.sampled_from(["info", "notice", "warning", "critical"]),
    title=st.text(max_size=80),
    text=st.text(max_size=200),
    metrics=st.dictionaries(
        st.text(max_size=15),
        st.none() | finite | st.integers() | st.text(max_size=10) | st.booleans(),
        max_size=6,
    ),
    history=st.none()
    | st.builds(
        History,
        prior_occurrences=st.integers(0, 99),
        prior_dates=st.lists(st.dates().map(dt.date.isoformat), max_size=5),
        forward=st.lists(stats, max_size=3),
        summary=st.text(max_size=100),
    ),
)


@settings(max_examples=300, deadline=None)
@given(alerts)
def test_alert_payload_round_trips(alert: Alert) -> None:
    """Any alert survives encode then decode unchanged."""
    assert decode_alert(encode_alert(alert)) == alert


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_alert_decoder_raises_only_msgspec_errors(raw: bytes) -> None:
    """Arbitrary bytes decode to an alert or raise msgspec's DecodeError/ValidationError."""
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        decode_alert(raw)


_HEADER = ["symbol", "date", "open", "high", "low", "close", "volume"]
_CELLS = st.sampled_from(["", "1", "2.5", '"3"', '""'])
_SYMBOLS = st.sampled_from(["X", '"X"', '"A,B"', '"Y ""Z"""'])
_CSV_ROWS = st.lists(
    st.one_of(
        st.just(""),  # a blank line
        st.tuples(_SYMBOLS, st.lists(_CELLS, min_size=len(_HEADER) - 2, max_size=len(_HEADER) - 2)),
        st.integers(1, len(_HEADER) - 1),  # a short row of that many fields
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(
    _CSV_ROWS,
    st.sampled_from(["\n", "\r\n"]),
    st.sampled_from(["", "\ufeff"]),
    st.booleans(),
)
def test_short_rows_are_found_at_their_line(
    rows: list[str | tuple[str, list[str]] | int], newline: str, bom: str, last_newline: bool
) -> None:
    """A CSV file (quoted fields, blank lines, CRLF, a BOM, with or without a last line feed)
    whose rows are all as wide as the header loads; else a DataError names the first short
    row's line and its fields."""
    lines, first_short = [",".join(_HEADER)], None
    for number, row in enumerate(rows):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=number)
        if isinstance(row, str):
            lines.append(row)
        elif isinstance(row, tuple):
            lines.append(",".join([row[0], day.isoformat(), *row[1]]))
        else:
            lines.append(",".join(["X", day.isoformat(), "1", "2", "0.5", "1.5"][:row]))
            first_short = first_short or (len(lines), row)
    path = Path(tempfile.mkdtemp()) / "rows.csv"
    path.write_bytes((bom + newline.join(lines) + (newline if last_newline else "")).encode())
    if first_short is None:
        try:
            read_daily(DataSpec(str(path)))
        except DataError:  # (a file of blank lines only: no rows)
            assert not any(lines[1:])
        return
    line, fields = first_short
    noun = "field" if fields == 1 else "fields"
    with pytest.raises(DataError) as info:
        read_daily(DataSpec(str(path)))
    assert str(info.value) == f"{path}, line {line}: {fields} {noun} but the header has 7"
