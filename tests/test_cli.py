"""The command line: replay output formats, exit codes and messages for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from monitor.cli import main
from monitor.core.model import Alert
from monitor.core.sessions import Sessions
from tests.conftest import DEMO, RULES, RUT, SHORT_INTEREST, SQUEEZE


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m monitor ARGS` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], capture_output=True, text=True, timeout=120
    )


def test_replay_jsonl_prints_one_alert_per_line() -> None:
    """`replay --format jsonl` writes one decodable alert per line, only from --from on."""
    res = run_cli(
        "replay", "--rules", str(RULES), "--data", f"^RUT={RUT}",
        "--from", "2024-07-01", "--to", "2024-07-31",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    alerts = [msgspec.json.decode(line, type=Alert) for line in res.stdout.splitlines()]
    assert {(a.rule, a.session) for a in alerts} == {
        ("drawdown.high", "2024-07-16"),
        ("streak.daily", "2024-07-16"),
        ("surge.5d", "2024-07-16"),
    }
    assert all(a.schema == "market-monitor.alert/1" for a in alerts)


def test_replay_in_process_writes_the_same_lines_to_a_text_stream() -> None:
    """Called from Python with stdout a plain text stream (no byte buffer under it), replay
    writes the same JSON lines as the command does."""
    import contextlib
    import io

    args = ["replay", "--rules", str(RULES), "--data", f"^RUT={RUT}", "--from", "2024-07-01"]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert main(args) == 0
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert text.getvalue() == res.stdout
    assert text.getvalue().count("\n") >= 3


def test_replay_with_short_interest_says_nothing_but_its_counts_on_stderr() -> None:
    """A replay of the squeeze file with short interest prints alerts, and on stderr only the
    line of the symbols the figures cover and that of rejected rows: no library warning
    (polars warned about the as-of join once)."""
    res = run_cli(
        "replay", "--rules", str(RULES), "--data", str(SQUEEZE),
        "--short-interest", str(SHORT_INTEREST), "--from", "2021-01-01", "--to", "2021-02-26",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert any('"kind":"squeeze"' in line for line in res.stdout.splitlines())
    expected = ("rows rejected", "cannot fire: ")  # (rules of ^RUT, IWM and QQQ: not here)
    assert [ln for ln in res.stderr.splitlines() if not any(e in ln for e in expected)] == [
        "market-monitor: short-interest file: figures of 14 symbols, settled 2020-11-30 to"
        " 2021-06-30; 14 of them in the data"
    ]
    assert "rule rotation.iwm_qqq cannot fire: IWM, QQQ not in the data" in res.stderr


# The two rows of shared/data/short_interest_us_2020-11_2021-06.csv (lines 75975 and 77220) with
# a negative percent_of_float, from a negative public float in the vendor's snapshot.
NEGATIVE_FIGURES = (
    "SFUN,NYSE,2021-03-31,6570000.0,-7820000.0,47151.0,-5.74,-0.6,2021-04-24\n"
    "VLRS,NYSE,2021-03-31,107790000.0,-60550000.0,806893.0,-2.84,-1.33,2021-04-24\n"
)


def test_replay_leaves_out_short_interest_rows_it_cannot_use_and_says_where(
    tmp_path: Path,
) -> None:
    """The published file has two negative figures among its 132,268 rows: replay leaves them
    out, names them on stderr, and the squeeze rule runs on the rest (GME and AMC in January
    2021, as from the file without them)."""
    figures = tmp_path / "short_interest.csv"
    figures.write_text(SHORT_INTEREST.read_text() + NEGATIVE_FIGURES)
    args = ["replay", "--rules", str(RULES), "--data", str(SQUEEZE), "--to", "2021-01-29"]
    res = run_cli(*args, "--short-interest", str(figures))
    assert res.returncode == 0, res.stderr
    lines = len(SHORT_INTEREST.read_text().splitlines())
    assert (
        f"market-monitor: short-interest file: 2 rows left out (bad_short_interest=2): "
        f"{figures}:{lines + 1} SFUN (bad_short_interest), "
        f"{figures}:{lines + 2} VLRS (bad_short_interest)\n"
    ) in res.stderr
    squeezes = {
        (a.symbol, a.session[:7])
        for a in (msgspec.json.decode(line, type=Alert) for line in res.stdout.splitlines())
        if a.kind == "squeeze"
    }
    assert {("GME", "2021-01"), ("AMC", "2021-01")} <= squeezes
    clean = run_cli(*args, "--short-interest", str(SHORT_INTEREST))
    assert clean.returncode == 0, clean.stderr
    assert res.stdout == clean.stdout


def test_replay_says_which_rules_cannot_fire_for_want_of_data() -> None:
    """^RUT alone through config/rules.toml: the rotation (IWM against QQQ) and the universe
    rules (whose exclude leaves no symbol) cannot fire and replay says so on stderr; rules
    naming ^RUT and IWM can, and are not mentioned."""
    res = run_cli("replay", "--rules", str(RULES), "--data", f"^RUT={RUT}", "--to", "2024-07-31")
    assert res.returncode == 0, res.stderr
    empty = "cannot fire: its universe is empty: every symbol of the data (^RUT) is in exclude"
    assert res.stderr.splitlines() == [
        f"market-monitor: rule squeeze.daily {empty}",
        "market-monitor: rule rotation.iwm_qqq cannot fire: IWM, QQQ not in the data",
        f"market-monitor: rule breadth.5d {empty}",
        f"market-monitor: rule movers.5d {empty}",
    ]


def test_a_disabled_rule_neither_fires_nor_is_warned_about(tmp_path: Path) -> None:
    """`enabled = false` keeps a rule in the file, switched off: replay emits none of its
    alerts and does not say it cannot fire (the rotation, here), while the rules left on run."""
    text = RULES.read_text()
    off = tmp_path / "rules.toml"
    off_rules = ("streak.daily", "rotation.iwm_qqq", "squeeze.daily", "breadth.5d", "movers.5d")
    for rule_id in off_rules:
        text = text.replace(f'id = "{rule_id}"', f'id = "{rule_id}"\nenabled = false', 1)
    off.write_text(text)
    res = run_cli("replay", "--rules", str(off), "--data", f"^RUT={RUT}", "--to", "2024-07-31")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    rules = {msgspec.json.decode(line, type=Alert).rule for line in res.stdout.splitlines()}
    assert "streak.daily" not in rules and "rotation.iwm_qqq" not in rules
    assert {"streak.weekly", "surge.5d"} <= rules


def test_replay_from_after_to_is_a_usage_error() -> None:
    """`--from` after `--to` leaves nothing to replay: said so, status 2, nothing printed."""
    res = run_cli(
        "replay", "--rules", str(RULES), "--data", f"^RUT={RUT}",
        "--from", "2024-07-16", "--to", "2024-07-01",
    )  # fmt: skip
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == "market-monitor: --from 2024-07-16 is after --to 2024-07-01\n"


def test_replay_says_a_squeeze_cannot_fire_on_closes_without_volume(tmp_path: Path) -> None:
    """The squeeze file without its volume column: the squeeze rule (abnormal volume is part of
    its condition) is named on stderr as unable to fire, and fires nothing."""
    import polars as pl

    closes = tmp_path / "closes.csv"
    pl.read_csv(SQUEEZE).drop("volume").write_csv(closes)
    res = run_cli(
        "replay", "--rules", str(RULES), "--data", str(closes),
        "--short-interest", str(SHORT_INTEREST),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    line = "market-monitor: rule squeeze.daily cannot fire: no volume in the data for its symbols"
    assert line in res.stderr.splitlines()
    assert '"kind":"squeeze"' not in res.stdout
    res = run_cli(
        "replay", "--rules", str(RULES), "--data", str(SQUEEZE),
        "--short-interest", str(SHORT_INTEREST),
    )  # fmt: skip
    assert line not in res.stderr and '"kind":"squeeze"' in res.stdout


def test_replay_names_sessions_missing_inside_a_history(tmp_path: Path) -> None:
    """^RUT without 2024-07-11, and a second symbol without 2024-07-03 and 2024-07-05 (a
    holiday between them, which is no gap) and a bad close on 2024-07-09: each gap is counted,
    with its first session, on one stderr line. A symbol whose history starts later has none."""
    import polars as pl

    rut = tmp_path / "rut.csv"
    lines = RUT.read_text().splitlines(keepends=True)
    rut.write_text("".join(ln for ln in lines if not ln.startswith("2024-07-11")))
    other = tmp_path / "other.csv"
    days = ["2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05", "2024-07-08", "2024-07-09",
            "2024-07-10"]  # fmt: skip
    closes = [10.0, 10.0, None, None, 10.0, -1.0, 10.0]
    frame = pl.DataFrame({"date": days, "close": closes}).drop_nulls()
    frame.write_csv(other)
    late = tmp_path / "late.csv"
    frame.filter(pl.col("date") >= "2024-07-10").write_csv(late)
    res = run_cli(
        "replay", "--rules", str(RULES), "--data", f"^RUT={rut}", "--data", f"AAA={other}",
        "--data", f"BBB={late}", "--from", "2024-07-01", "--to", "2024-07-12",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (
        "market-monitor: 4 sessions missing inside the history of 2 symbols (AAA 3 from "
        "2024-07-03, ^RUT 1 from 2024-07-11): a window or streak does not reach across them"
    ) in res.stderr.splitlines()
    res = run_cli("replay", "--rules", str(RULES), "--data", f"^RUT={RUT}", "--to", "2024-07-31")
    assert "missing inside" not in res.stderr


def test_replay_names_the_first_rows_it_rejected_and_why(tmp_path: Path) -> None:
    """Rows rejected while reading (a NaN close, a negative price, a bar whose open is above
    its high, a date given twice) are counted by reason, and the first of them named by file
    and line; of a repeated date the first row is kept, and the line says so."""
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "date,open,high,low,close,volume\n"
        "2024-07-01,10,11,9,10.5,100\n"
        "2024-07-02,10,11,9,NaN,100\n"
        "2024-07-03,10,11,9,-1,100\n"
        "2024-07-05,10,11,9,10.8,100\n"
        "2024-07-05,10,11,9,10.9,100\n"
        "2024-07-08,12,11,9,10,100\n"
    )
    res = run_cli("replay", "--rules", str(RULES), "--data", f"BAD={bad}")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert "market-monitor: rows rejected or fixed: bad_bar=1, bad_price=2, duplicate=1" in lines
    assert (
        f"market-monitor: the first rows rejected: {bad}:3 BAD (bad_price), {bad}:4 BAD "
        f"(bad_price), {bad}:7 BAD (bad_bar), {bad}:6 BAD (duplicate); of rows with the same "
        "symbol and date, the first is kept"
    ) in lines


def test_replay_from_a_date_in_batches_prints_what_one_batch_prints() -> None:
    """`--from` with `--batch-sessions`: the first batches end long before `--from`, and
    nothing of theirs is printed; the alerts are those of one batch, in the same order."""
    args = ["replay", "--rules", str(RULES), "--data", f"^RUT={RUT}", "--from", "2024-07-01"]
    whole = run_cli(*args)
    batches = run_cli(*args, "--batch-sessions", "250")
    assert whole.returncode == batches.returncode == 0, batches.stderr
    sessions = [msgspec.json.decode(line, type=Alert).session for line in whole.stdout.splitlines()]
    assert sessions and min(sessions) >= "2024-07-01"
    assert batches.stdout == whole.stdout


def test_a_day_that_is_no_session_hides_no_gap(sessions: Sessions) -> None:
    """^RUT without 2024-07-03 and with a bar dated 2024-07-04 (a holiday, rejected later):
    the missing session is still found."""
    import polars as pl

    from monitor.datafiles import DataSpec, read_many
    from monitor.replay import gaps

    bars = read_many([DataSpec(path=str(RUT), symbol="^RUT")]).bars
    holed = bars.filter(pl.col("session") != pl.date(2024, 7, 3))
    holiday = holed.filter(pl.col("session") == pl.date(2024, 7, 5)).with_columns(
        session=pl.date(2024, 7, 4)
    )
    frame = pl.concat([holed, holiday]).sort("symbol", "session")
    assert [(g.symbol, g.missing, str(g.first)) for g in gaps(frame, sessions)] == [
        ("^RUT", 1, "2024-07-03")
    ]


def test_replay_into_a_reader_that_goes_away_stops_quietly() -> None:
    """`replay ... | head -1`: when the reader closes the pipe, replay stops with SIGPIPE's
    status (141, as cat or grep would) and no traceback."""
    command = [sys.executable, "-m", "monitor", "replay", "--rules", str(RULES)]
    with subprocess.Popen(
        [*command, "--data", f"^RUT={RUT}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:  # (138 alerts, about 180 kB: more than a pipe holds)
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # the reader goes away after one line
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141, err
    assert first.startswith(b'{"schema":"market-monitor.alert/1"')
    assert "Traceback" not in err


def test_ctrl_c_stops_a_command_with_one_line_and_sigints_status() -> None:
    """Ctrl-C (SIGINT) while a command waits (here `status` on a daemon that never answers)
    ends it with 130, as a shell reports an interrupted command, and one line: before, a
    KeyboardInterrupt traceback of wherever it landed (httpx, polars, asyncio's runner)."""
    import signal
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with subprocess.Popen(
            [sys.executable, "-m", "monitor", "status", "--url", url, "--timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        ) as proc:  # fmt: skip
            conn, _ = server.accept()
            with conn:
                assert conn.recv(4096).startswith(b"GET /")  # (it waits for the answer now)
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (130, "", "market-monitor: interrupted\n")


def test_demo_shows_the_july_2024_rally() -> None:
    """`demo` prints the July 2024 rally in words, with the history line."""
    res = run_cli("demo")
    assert res.returncode == 0, res.stderr
    assert (
        "Russell 2000 rose 11.5% in 5 sessions, its largest 5-session gain since 2020-04-29."
        in (res.stdout)
    )
    assert "4 earlier times since 1998" in res.stdout


def test_demo_rules_are_the_shipped_config() -> None:
    """The rules the package's demo uses are config/rules.toml, byte for byte."""
    assert (DEMO / "rules.toml").read_bytes() == RULES.read_bytes()


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            '[[rules]]\nid = "x"\nkind = "nope"\nsymbols = ["A"]\n',
            "rules[0] (id \"x\").kind: Invalid value 'nope';"
            " a rule's kind is one of streak, surge,",
        ),
        ('[[rules]]\nid = "x"\nkind = "streak"\nsymbols = ["A"]\nbogus = 1\n', "unknown field"),
        (
            '[[rules]]\nid = "x"\nkind = "surge"\nuniverse = true\nwindw = 5\n',
            'rules[0] (id "x"): Object contains unknown field `windw`; did you mean `window`?',
        ),
        (
            '[[rules]]\nid = "x"\nkind = "streak"\nsymbols = ["A"]\ncount = "5"\n',
            'rules[0] (id "x").count',
        ),
        (
            '[[rules]]\nid = "x"\nkind = "surge"\nsymbols = ["A"]\nwindow = 0\n',
            'rules[0] (id "x").window',
        ),
        ('[[rules]]\nid = "x"\nkind = "streak"\n', 'rules[0] (id "x").symbols'),
        ("[[rules]\n", "not valid TOML"),
    ],
)
def test_bad_rules_exit_78_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rules: str, message: str
) -> None:
    """A bad rules file exits 78 with the file and the field path, never a traceback."""
    path = tmp_path / "rules.toml"
    path.write_text(rules)
    code = main(["replay", "--rules", str(path), "--data", f"^RUT={RUT}", "--to", "1988-01-01"])
    err = capsys.readouterr().err
    assert code == 78
    assert message in err
    assert str(path) in err
    assert "Traceback" not in err


def test_bad_data_file_exits_65_with_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A price that is not a number exits 65 naming file, line and column."""
    path = tmp_path / "x.csv"
    path.write_text("date,close\n2024-07-15,10\n2024-07-16,ten\n")
    code = main(["replay", "--rules", str(RULES), "--data", f"X={path}"])
    err = capsys.readouterr().err
    assert code == 65
    assert f"{path}, line 3, column 'close'" in err
