"""What `replay` says on stderr besides the alerts: rules that cannot fire, rules files that
likely do not say what was meant, rows rejected, a `--from` past the data, and a report it
cannot write."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main
from tests.conftest import RULES, RUT, SQUEEZE

# Ten sessions of one symbol, with a Saturday (2024-07-06) and a holiday (2024-07-04) among them.
BARS = """date,close
2024-07-01,10
2024-07-02,10.5
2024-07-03,11
2024-07-04,11.2
2024-07-05,11.5
2024-07-06,11.6
2024-07-08,12
2024-07-09,12.5
2024-07-10,13
2024-07-11,13.5
"""

SURGE = '[[rules]]\nid = "s"\nkind = "surge"\nsymbols = ["X"]\nwindow = 2\nmin_return = 0.05\n'


def replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: str, *args: str
) -> tuple[int, str, str]:
    """`replay` of `rules` over BARS (as X): exit code, stdout, stderr."""
    (tmp_path / "rules.toml").write_text(rules)
    (tmp_path / "x.csv").write_text(BARS)
    data = f"X={tmp_path / 'x.csv'}"
    code = main(["replay", "--rules", str(tmp_path / "rules.toml"), "--data", data, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_universe_rules_left_empty_by_exclude_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    """^RUT alone through the shipped rules: the squeeze, breadth and movers rules watch a
    universe that excludes ^RUT, so they cannot fire and are named, as the rotation is."""
    code = main(["replay", "--rules", str(RULES), "--data", f"^RUT={RUT}", "--to", "1990-01-01"])
    err = capsys.readouterr().err
    assert code == 0
    empty = "cannot fire: its universe is empty: every symbol of the data (^RUT) is in exclude"
    assert err.splitlines() == [
        f"market-monitor: rule squeeze.daily {empty}",
        "market-monitor: rule rotation.iwm_qqq cannot fire: IWM, QQQ not in the data",
        f"market-monitor: rule breadth.5d {empty}",
        f"market-monitor: rule movers.5d {empty}",
    ]


def test_a_minute_rule_in_a_replay_of_daily_bars_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `1m` rule sees no bars in a replay of daily bars: replay says it cannot fire."""
    code, out, err = replay(tmp_path, capsys, SURGE + 'timeframe = "1m"\n')
    assert (code, out) == (0, "")
    assert (
        "market-monitor: rule s cannot fire: it is a 1m rule and the data has daily bars only"
        " (no minute or tick file)\n"
    ) in err


def test_a_breadth_rule_with_fewer_symbols_than_min_symbols_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A breadth rule over a universe of one symbol, wanting three, cannot fire: said so."""
    rules = '[[rules]]\nid = "b"\nkind = "breadth"\nuniverse = true\nmin_symbols = 3\n'
    code, _, err = replay(tmp_path, capsys, rules)
    assert code == 0
    assert (
        "market-monitor: rule b cannot fire: its universe has 1 symbol in the data, fewer"
        " than min_symbols (3)\n"
    ) in err


@pytest.mark.parametrize(
    ("parameter", "warning"),
    [
        (
            "min_return = 10",
            'rules[0] (id "s").min_return: 10 is 1,000%; it is a fraction, 0.10 means 10%:'
            " did you mean 0.1?",
        ),
        ("min_return = 0.5", None),
    ],
)
def test_a_percent_written_for_a_fraction_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], parameter: str, warning: str | None
) -> None:
    """`min_return = 10` (1,000%) is likely 10% written as a percent: replay runs it, and warns;
    a plausible fraction gives no warning."""
    rules = SURGE.replace("min_return = 0.05", parameter)
    code, _, err = replay(tmp_path, capsys, rules)
    assert code == 0
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert lines == (
        [f"market-monitor: warning: {tmp_path / 'rules.toml'}: {warning}"] if warning else []
    )


def test_an_empty_rules_file_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rules file with no rules replays nothing: replay says so."""
    code, out, err = replay(tmp_path, capsys, "# nothing yet\n")
    assert (code, out) == (0, "")
    assert err.splitlines()[0] == (
        f"market-monitor: warning: {tmp_path / 'rules.toml'}: no rules: the file has no"
        " [[rules]] table"
    )


def test_rows_on_days_that_are_no_session_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A holiday's and a Saturday's rows are counted, and named (by symbol and date) among the
    first rows rejected."""
    code, _, err = replay(tmp_path, capsys, SURGE)
    assert code == 0
    assert err.splitlines() == [
        "market-monitor: rows rejected or fixed: not_a_session=2",
        "market-monitor: the first rows rejected: X 2024-07-04 (not_a_session),"
        " X 2024-07-06 (not_a_session)",
    ]


def test_from_after_the_last_bar_says_there_is_nothing_to_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--from` past the data's last session prints no alert, and says why."""
    code, out, err = replay(tmp_path, capsys, SURGE, "--from", "2025-01-02")
    assert (code, out) == (0, "")
    assert (
        "market-monitor: --from 2025-01-02 is after the data's last session (2024-07-11):"
        " no alerts to print\n"
    ) in err


def test_from_after_the_last_bar_up_to_to_names_the_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--from 2024-07-06 --to 2024-07-07` over data running to 2024-07-11 (the Saturday
    left out) says 2024-07-05 is the last session up to --to, not the data's last. (It said
    "after the data's last session (2024-07-05)".)"""
    (tmp_path / "rules.toml").write_text(SURGE)
    (tmp_path / "x.csv").write_text(BARS.replace("2024-07-06,11.6\n", ""))
    argv = ["replay", "--rules", str(tmp_path / "rules.toml"), "--data", f"X={tmp_path / 'x.csv'}"]
    code = main([*argv, "--from", "2024-07-06", "--to", "2024-07-07"])
    out, err = capsys.readouterr()
    assert (code, out) == (0, "")
    assert (
        "market-monitor: --from 2024-07-06 is after the data's last session up to --to 2024-07-07"
        " (2024-07-05): no alerts to print\n"
    ) in err


def test_a_report_that_cannot_be_written_exits_73(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--report` into a missing directory is an output error (73, EX_CANTCREAT), not a data
    error, and said before the replay (here before the data file is found missing); a
    directory where the file should be, too."""
    target = tmp_path / "missing" / "r.html"
    code, _, err = replay(tmp_path, capsys, SURGE, "--report", str(target))
    assert code == 73
    assert f"market-monitor: cannot write the report {target}: No such file or directory\n" in err
    assert "data error" not in err
    argv = ["replay", "--rules", str(RULES), "--data", f"X={tmp_path / 'none.csv'}"]
    assert main([*argv, "--report", str(target)]) == 73
    assert main([*argv, "--report", str(tmp_path)]) == 73
    assert "Is a directory" in capsys.readouterr().err


def test_a_squeeze_rule_without_short_interest_figures_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A squeeze rule that skips symbols without a short-interest figure, replayed without
    `--short-interest`, cannot fire: replay says so and how to mend it; one that fires on an
    unknown figure is not named."""
    squeeze = (
        '[[rules]]\nid = "q"\nkind = "squeeze"\nsymbols = ["X"]\nmin_return = 0.2\n'
        "volume_ratio = 2\nvolume_window = 3\nmin_short_interest = 0.2\n"
    )
    code, out, err = replay(tmp_path, capsys, squeeze)
    assert (code, out) == (0, "")
    assert err.splitlines()[0] == (
        "market-monitor: rule q cannot fire: no short-interest figures are given, and its "
        'unknown_short_interest is "skip" (the default): give them (replay --short-interest, '
        'the daemon\'s [rules] short_interest) or set unknown_short_interest = "fire"'
    )
    code, out, err = replay(tmp_path, capsys, squeeze + 'unknown_short_interest = "fire"\n')
    assert "short-interest" not in err


def test_a_session_under_way_is_not_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file downloaded during the session of 2024-07-11 holds the day so far: replayed at
    15:00 UTC that day, the bar is refused (`session_not_closed`, named) and nothing fires on
    it; replayed after the close, it is the session's and fires."""
    import datetime as dt

    from monitor.datafiles import DataSpec, read_many
    from monitor.replay_command import run_replay

    (tmp_path / "rules.toml").write_text(SURGE.replace("0.05", "0.3"))
    (tmp_path / "x.csv").write_text(BARS.replace("2024-07-11,13.5", "2024-07-11,20"))
    loaded = read_many([DataSpec(path=str(tmp_path / "x.csv"), symbol="X")])
    said = []
    for now in (
        dt.datetime(2024, 7, 11, 15, tzinfo=dt.UTC),
        dt.datetime(2024, 7, 12, tzinfo=dt.UTC),
    ):
        code = run_replay(
            rules_path=tmp_path / "rules.toml", bars=loaded.bars, counts=loaded.counts,
            short_interest=None, start=dt.date(2024, 7, 11), fmt="jsonl", now=now,
        )  # fmt: skip
        assert code == 0
        said.append(capsys.readouterr())
    during, after = said
    assert during.out == "" and "session_not_closed=1" in during.err and "2024-07-11" in during.err
    assert '"session":"2024-07-11"' in after.out and "session_not_closed" not in after.err


def test_a_file_ending_on_a_saturday_still_fires(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """BARS with a last row on Saturday 2024-07-13 (refused, not a session): the sessions
    before it close and fire as without it. (Replay advanced only to a last date that was a
    session: a file ending on a weekend printed no alert at all.)"""
    rules = SURGE
    (tmp_path / "rules.toml").write_text(rules)
    alerts = []
    for text in (BARS, BARS + "2024-07-13,13.6\n"):
        (tmp_path / "x.csv").write_text(text)
        data = f"X={tmp_path / 'x.csv'}"
        assert main(["replay", "--rules", str(tmp_path / "rules.toml"), "--data", data]) == 0
        alerts.append(capsys.readouterr().out)
    assert alerts[0] and alerts[1] == alerts[0]


SQUEEZE_RULE = (
    '[[rules]]\nid = "q"\nkind = "squeeze"\nsymbols = ["GME"]\nmin_return = 0.15\n'
    "volume_ratio = 3\nvolume_window = 20\nmin_short_interest = 0.2\n"
)


def squeeze_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], figures: str
) -> tuple[int, str, str]:
    """`replay` of SQUEEZE_RULE over GME's bars of the squeeze file (tests/data) with a
    short-interest file of `figures` (CSV lines after the header): exit code, stdout, stderr."""
    (tmp_path / "rules.toml").write_text(SQUEEZE_RULE)
    si = tmp_path / "si.csv"
    si.write_text(f"symbol,short_interest_date,percent_of_float\n{figures}")
    argv = ["replay", "--rules", str(tmp_path / "rules.toml"), "--data", f"GME={SQUEEZE}"]
    code = main([*argv, "--short-interest", str(si)])
    out, err = capsys.readouterr()
    return code, out, err


WRITTEN = ": symbols are matched as written, and the file writes GME as "


@pytest.mark.parametrize(
    ("figures", "hint"),
    [
        ("gme,2020-12-31,138.4\n", f"{WRITTEN}'gme'"),
        ("AMC,2020-12-31,20.1\nKOSS,2020-12-31,30\n", ""),
        ("G.M.E,2020-12-31,138.4\n", f"{WRITTEN}'G.M.E'"),
    ],
    ids=["lowercase", "other symbols", "punctuation"],
)
def test_a_squeeze_rule_whose_symbols_have_no_figure_in_the_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], figures: str, hint: str
) -> None:
    """A short-interest file with figures of none of a squeeze rule's symbols (GME written
    `gme`, other tickers only) leaves the rule unable to fire: replay says so, with the file's
    spelling of the symbol when it differs only in case or punctuation, and how many symbols
    the figures are of. (It said nothing: no squeeze alert, exit 0.)"""
    code, out, err = squeeze_replay(tmp_path, capsys, figures)
    symbols = figures.count("\n")
    assert (code, out, err.splitlines()) == (
        0,
        "",
        [
            f"market-monitor: short-interest file: figures of {symbols} symbol"
            f"{'s' if symbols > 1 else ''}, settled 2020-12-31; 0 of them in the data",
            "market-monitor: rule q cannot fire: the short-interest file has no figure for any"
            f' of its symbols (GME), and its unknown_short_interest is "skip"{hint}',
        ],
    )


def test_a_figure_of_the_rules_symbol_lets_it_fire_and_its_coverage_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With GME's figure of 2020-12-31 (138.4%) the rule fires on GME's squeezes while the
    figure counts (January 13 and 22, February 25, 2021), and stderr says only which symbols
    the figures cover."""
    code, out, err = squeeze_replay(tmp_path, capsys, "GME,2020-12-31,138.4\nAMC,2020-12-31,20\n")
    sessions = [line.split('"session":"')[1][:10] for line in out.splitlines()]
    assert (code, err) == (
        0,
        "market-monitor: short-interest file: figures of 2 symbols, settled 2020-12-31;"
        " 1 of them in the data\n",
    )
    assert sessions == ["2021-01-13", "2021-01-22", "2021-02-25"]


def test_a_bad_rules_file_is_said_before_the_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rules file with a misspelt parameter exits 78 naming it, before the data is read: a
    missing data file is not said. (The data was read first: exit 65 for the missing file, and
    a warning of the data came before a rules file's error.)"""
    (tmp_path / "rules.toml").write_text(SURGE.replace("min_return", "min_retrun"))
    argv = ["replay", "--rules", str(tmp_path / "rules.toml")]
    assert main([*argv, "--data", f"X={tmp_path / 'missing.csv'}"]) == 78
    err = capsys.readouterr().err
    assert err.startswith(f"market-monitor: config error: {tmp_path / 'rules.toml'}: ")
    assert "min_retrun" in err and "missing.csv" not in err and len(err.splitlines()) == 1
