"""`market-monitor watch`: the board in the terminal, from a running daemon."""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console

from monitor.cli import main
from monitor.core.rules.context import pct
from monitor.watch import bar, frame, measure, new_york, sparkline
from monitor.watch import pct as watch_pct
from tests.cli_here import cli_here
from tests.conftest import ROOT, RUT
from tests.test_commands import cli
from tests.test_service import daemon_running, write_config

STATE = {
    "now": "2024-07-16T20:00:05+00:00",
    "rules": [
        {"id": "streak.daily", "kind": "streak", "timeframe": "1d", "description": ""},
        {"id": "surge.5d", "kind": "surge", "timeframe": "1d", "description": ""},
    ],
    "progress": [
        {"rule": "streak.daily", "kind": "streak", "symbol": "^RUT", "variant": None,
         "session": "2024-07-15", "value": 4.0, "threshold": 5.0, "unit": "periods",
         "progress": 0.8, "holds": False},
        {"rule": "surge.5d", "kind": "surge", "symbol": "^RUT", "variant": None,
         "session": "2024-07-15", "value": 0.0761, "threshold": 0.1, "unit": "fraction",
         "progress": 0.761, "holds": False},
    ],
    "alerts": [],
}  # fmt: skip


def render(state: dict[str, object], closes: dict[str, object] | None = None) -> str:
    """A frame as plain text, 120 columns wide."""
    console = Console(width=120, record=True, color_system=None)
    console.print(frame(state, closes, source="http://daemon"))  # type: ignore[arg-type]
    return console.export_text()


def test_frame_shows_each_rule_with_its_bar_and_measure() -> None:
    """A state with two rules on their way gives one line each, with a bar filled in proportion
    and the value against the threshold."""
    lines = [line.rstrip() for line in render(STATE).splitlines()]
    assert lines[0] == (
        "market-monitor live   last session 2024-07-15   clock 2024-07-16 16:00:05 New York   "
        "● http://daemon"
    )
    assert lines[1:7] == [
        "Nearest to firing",
        f" ^RUT  streak.daily (1d)  {'█' * 16}{'░' * 4}           4 of 5",
        f" ^RUT  surge.5d (1d)      {'█' * 15}{'░' * 5}  +7.6% of +10.0%",
        "Rules",
        f" streak.daily  ^RUT  {'█' * 16}{'░' * 4}           4 of 5",
        f" surge.5d      ^RUT  {'█' * 15}{'░' * 5}  +7.6% of +10.0%",
    ]
    assert "no alerts yet" in lines[8]


def test_nearest_to_firing_tells_no_progress_from_every_rule_holding() -> None:
    """With no progress at all the board says the rules need closed sessions; with every rule
    holding it says so, not that there is no progress."""
    empty = {**STATE, "progress": []}
    assert "no progress yet: the rules need closed sessions" in render(empty)
    holding = [{**p, "progress": 1.0, "holds": True} for p in STATE["progress"]]  # type: ignore[attr-defined]
    text = render({**STATE, "progress": holding})
    assert "every rule holds now" in text and "no progress yet" not in text


def test_measures_bars_and_sparklines_for_people() -> None:
    """Values read as a trader says them; bars clip to [0, 1]; an alert session is one cell."""
    assert measure(
        {"value": -0.073, "threshold": -0.1, "unit": "fraction", "kind": "drawdown"}
    ) == ("-7.3% · line -10.0%")
    assert bar(1.4, True, width=4).plain == "████"
    assert bar(-1.0, False, width=4).plain == "░░░░"
    spark = sparkline([1.0, 2.0, 3.0, 4.0], ["a", "b", "c", "d"], [{"session": "d", "kind": "x"}])
    assert spark.plain == "▁▃▅█"


def test_rules_say_how_many_more_from_the_rules_own_counts() -> None:
    """On a universe larger than /api/state carries, "+ N more" and "hold now" come from each
    rule's counts, not from the rows it was sent (which may be none of a rule's: it then still
    says how many it has, not "no data yet"); "no data yet" is for a rule with no rows at all."""
    rules = [
        {**STATE["rules"][0], "symbol_count": 17_000, "row_count": 17_000,  # type: ignore[dict-item]
         "holding_count": 12},
        {**STATE["rules"][1], "symbol_count": 17_000, "row_count": 17_000,  # type: ignore[dict-item]
         "holding_count": 0},
        {"id": "drawdown.high", "kind": "drawdown", "timeframe": "1d", "description": "",
         "symbol_count": 0, "row_count": 0, "holding_count": 0},
    ]  # fmt: skip
    text = render({**STATE, "rules": rules, "progress": STATE["progress"][:1]})  # type: ignore[index]
    lines = [line.rstrip() for line in text.splitlines()]
    start = lines.index("Rules")
    assert lines[start + 1 : start + 5] == [
        f" streak.daily   ^RUT                         {'█' * 16}{'░' * 4}  4 of 5",
        "                + 16,999 more · 12 hold now",
        " surge.5d       + 17,000 more",
        " drawdown.high  no data yet",
    ]


def test_a_stale_row_reads_its_session_and_is_not_holding() -> None:
    """A stale row (its symbol missed the rule's latest session) says so with its date, in
    "Nearest to firing" and under its rule, and is not among the rows holding now."""
    old = {**STATE["progress"][0], "symbol": "IWM", "session": "2024-07-12",  # type: ignore[index]
           "value": 5.0, "progress": 1.0, "holds": False, "stale": True}  # fmt: skip
    text = render({**STATE, "progress": [*STATE["progress"], old]})  # type: ignore[list-item]
    lines = [line.rstrip() for line in text.splitlines()]
    assert "holding now" not in text
    assert f" IWM   streak.daily (1d)  {'█' * 19}░  5 of 5 · as of 2024-07-12" in lines
    assert f"               IWM   {'█' * 19}░  5 of 5 · as of 2024-07-12" in lines


def row(symbol: str, rule: str, value: float, progress: float, **more: object) -> dict[str, object]:
    """A progress row of /api/state: streak.wide's counts to 4, squeeze.daily's a return."""
    streak = rule == "streak.wide"
    return {
        "rule": rule, "kind": rule.split(".")[0], "symbol": symbol, "variant": "",
        "session": "2024-07-16", "value": value, "threshold": 4.0 if streak else 0.15,
        "unit": "periods" if streak else "fraction", "progress": progress,
        "holds": progress == 1.0, "stale": False, "blocked": None, **more,
    }  # fmt: skip


def test_a_row_that_does_not_hold_never_fills_its_bar_and_says_what_blocks_it() -> None:
    """A row that does not hold stops a cell short of a full bar, in grey with what blocks it
    beside its measure when something does; a rule that many symbols hold keeps a line for its
    nearest that does not ("3 of 4")."""
    rules = [
        {"id": "streak.wide", "kind": "streak", "timeframe": "1d", "description": "",
         "symbol_count": 2500, "row_count": 2500, "holding_count": 189},
        {"id": "squeeze.daily", "kind": "squeeze", "timeframe": "1d", "description": "",
         "symbol_count": 2500, "row_count": 2500, "holding_count": 0},
    ]  # fmt: skip
    rows = [
        *(row(f"S{i}", "streak.wide", 4.0, 1.0) for i in range(3)),
        row("NEAR", "streak.wide", 3.0, 0.75),
        row("CRBU", "squeeze.daily", 0.40, 0.99, blocked="short interest unknown"),
    ]
    lines = [
        line.rstrip() for line in render({**STATE, "rules": rules, "progress": rows}).split("\n")
    ]
    start = lines.index("Rules")
    blocked = f"{'█' * 19}░  +40.0% of +15.0% · short interest unknown"
    assert lines[start - 2 : start + 7] == [
        f" NEAR  streak.wide (1d)    {'█' * 15}{'░' * 5}{' ' * 37}3 of 4",
        f" CRBU  squeeze.daily (1d)  {blocked}",
        "Rules",
        f" streak.wide    S0{' ' * 27}{'█' * 20}{' ' * 35}4 of 4 ✓",
        f"                S1{' ' * 27}{'█' * 20}{' ' * 35}4 of 4 ✓",
        f"                NEAR{' ' * 25}{'█' * 15}{'░' * 5}{' ' * 37}3 of 4",
        "                + 2,497 more · 189 hold now",
        f" squeeze.daily  CRBU{' ' * 25}{blocked}",
        "                + 2,499 more",
    ]
    assert bar(1.0, False, width=4).plain == "███░"


def test_no_control_character_from_the_json_reaches_the_terminal() -> None:
    """ESC, BEL and C1 controls in any string of /api/state or /api/closes (a symbol, a label,
    an alert's text and history, a health reason, what blocks a row) are drawn spelled out, so
    none can retitle the window, clear the screen or colour the text."""
    evil = "\x1b]0;PWNED\x07\x1b[2J\x1b[41m\x9b2J"
    p = {**STATE["progress"][0], "symbol": f"^RUT{evil}", "blocked": f"why{evil}"}  # type: ignore[index]
    alert = {"severity": "notice", "session": "2024-07-16", "symbol": f"S{evil}",
             "rule": f"r{evil}", "kind": "streak", "text": f"Russell{evil}",
             "history": {"summary": f"h{evil}"}}  # fmt: skip
    state = {**STATE, "progress": [p], "alerts": [alert],
             "health": {"status": "degraded", "reasons": [f"feed{evil}"]}}  # fmt: skip
    chart = {"symbol": f"C{evil}", "sessions": ["a", "b"], "closes": [1.0, 2.0], "alerts": []}
    console = Console(width=400, record=True, force_terminal=True, color_system="truecolor")
    console.print(frame(state, {"symbols": [chart]}, source="http://daemon"))
    raw = console.export_text(styles=True)
    assert raw.count("\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[41m\\x9b2J") == 10
    for control in ("\x1b]", "\x1b[2J", "\x1b[41m", "\x07", "\x9b"):
        assert control not in raw


def test_an_error_a_server_sends_is_spelled_out_too() -> None:
    """A server at --url whose status line carries escape sequences: `watch --once` says it
    failed with them spelled out, none reaching the terminal."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # (the stdlib's name)
            self.send_response(500, "\x1b]0;PWNED\x07\x1b[2J")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        res = cli_here("watch", "--once", "--url", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert res.returncode == 69
    assert res.stderr.endswith(": \\x1b]0;PWNED\\x07\\x1b[2J\n")
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr


SHARE = {"value": 0.85, "threshold": 0.8, "unit": "fraction", "kind": "breadth"}
SPREAD = {"value": 0.071, "threshold": 0.05, "unit": "fraction", "kind": "rotation"}
MEASURES = [
    (SHARE, "85.0% of 80.0%"),
    ({**SHARE, "value": 1.0}, "100.0% of 80.0%"),
    (SPREAD, "7.1 of 5.0 points"),
    ({**SPREAD, "value": -0.0234}, "-2.3 of 5.0 points"),
    ({**SPREAD, "value": None}, "n/a of 5.0 points"),
]


def test_a_share_reads_without_a_sign_and_a_spread_in_points() -> None:
    """Breadth's share reads as a share ("85.0% of 80.0%", it was "+85.0% of +80.0%") and a
    rotation's spread in percentage points, as its alerts and issue 7 say it ("7.1 of 5.0
    points", it was "+7.1% of +5.0%")."""
    assert [measure(p) for p, _ in MEASURES] == [want for _, want in MEASURES]


def test_percentages_read_as_alert_texts_write_them() -> None:
    """watch writes a fraction as alert texts do (monitor.core.rules.context's `pct`, signed):
    -0.04% is "+0.0%", halves round to even, none is "n/a"."""
    values = [-0.0004, 0.0004, 0.0, -0.0, 0.0005, 0.0015, -0.0015, 0.0025, -0.0025, 0.115,
              -0.073, 12.3456, float("nan"), float("inf"), None]  # fmt: skip
    assert [watch_pct(x) for x in values] == [pct(x, signed=True) for x in values]
    row = {"value": -0.0004, "threshold": 0.1, "unit": "fraction", "kind": "surge"}
    assert measure(row) == "+0.0% of +10.0%"
    assert measure({**row, "value": None}) == "n/a of +10.0%"


def test_the_clock_is_new_york_time_as_on_the_board() -> None:
    """The daemon's UTC clock reads as New York's wall clock, named, in summer and winter."""
    assert new_york("2024-07-16T20:00:05+00:00") == "2024-07-16 16:00:05 New York"
    assert new_york("2026-02-23T21:00:00.123456+00:00") == "2026-02-23 16:00:00 New York"
    assert new_york("not a time") == "not a time"


@pytest.mark.integration
async def test_watch_once_prints_the_board_of_a_running_daemon(tmp_path: Path) -> None:
    """`watch --once --url` prints one frame from the daemon (streak.daily 3 of 5 on ^RUT after
    2024-07-12) and exits 0, as does `--config` naming the daemon's [http] port; with no daemon
    at the URL it exits 69 naming it."""
    prefix = f"mm-watch-{uuid.uuid4().hex[:8]}"
    conf = write_config(tmp_path, prefix)
    args = ["backfill", "--config", str(conf), "--data", f"^RUT={RUT}", "--to", "2024-07-12"]
    assert main(args) == 0
    async with daemon_running(conf) as daemon:
        url = f"http://127.0.0.1:{int(daemon.counters.get('http_port'))}"
        res = await asyncio.to_thread(cli, "watch", "--once", "--url", url, env={"COLUMNS": "120"})
        port = daemon.counters.get("http_port")
        at_port = tmp_path / "at_port.toml"
        at_port.write_text(conf.read_text().replace("port = 0", f"port = {port:.0f}"))
        by_config = await asyncio.to_thread(cli, "watch", "--once", "--config", str(at_port))
    assert by_config.returncode == 0, by_config.stderr
    assert "3 of 5" in by_config.stdout
    assert res.returncode == 0, res.stderr
    assert "last session 2024-07-12" in res.stdout
    assert "streak.daily (1d)" in res.stdout and "3 of 5" in res.stdout
    assert "Recent closes" in res.stdout and "^RUT" in res.stdout
    gone = await asyncio.to_thread(cli, "watch", "--once", "--url", f"http://127.0.0.1:{port:.0f}")
    assert gone.returncode == 69
    assert f"no daemon at http://127.0.0.1:{port:.0f}" in gone.stderr


def test_a_login_in_the_url_goes_as_basic_authorization_not_to_the_resolver() -> None:
    """`watch --url http://user:password@host` (a proxy before the daemon): the login goes as
    Basic authorization and the request reaches the host. urllib took `user:password@host` for
    the host name and asked the resolver for it, and watch could never connect."""
    from monitor.watch import fetch

    with serving(lambda path: {"ok": True}) as (url, _, seen):
        with_login = url.replace("http://", "http://bob:p%40ss@")
        assert fetch(f"{with_login}/api/state") == {"ok": True}
        assert fetch(f"{url}/api/state") == {"ok": True}
    assert seen == ["Basic Ym9iOnBAc3M=", None]  # (bob:p@ss)


@contextmanager
def serving(
    answer: Callable[[str], object],
) -> Iterator[tuple[str, list[str], list[str | None]]]:
    """A local HTTP server answering each GET with `answer(path)` as JSON: its base URL, and
    the paths asked of it so far and their Authorization headers."""
    asked: list[str] = []
    logins: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # (the stdlib's name)
            asked.append(self.path)
            logins.append(self.headers.get("Authorization"))
            body = json.dumps(answer(self.path)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked, logins
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def board() -> Iterator[tuple[str, list[str]]]:
    """A daemon's HTTP API serving STATE and no closes: its base URL, and the paths asked of it
    so far."""
    with serving(lambda path: STATE if path == "/api/state" else {"symbols": []}) as served:
        yield served[0], served[1]


def watching(url: str, *args: str) -> subprocess.Popen[str]:
    """`market-monitor watch --url URL ARGS` as a child process, its stdout and stderr pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "watch", "--url", url, *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_watch_once_into_a_pipe_whose_reader_has_gone_exits_141_saying_nothing() -> None:
    """`watch --once` whose stdout's reader has gone before the frame is drawn (`| head -0`)
    exits quietly with a broken pipe's 141, as replay and tail do (rich's own handling exited
    1)."""
    with board() as (url, _):
        proc = watching(url, "--once")
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # (before the child has even imported rich)
        code = proc.wait(30)
        said = proc.stderr.read()
        proc.stderr.close()
    assert (code, said) == (141, "")


def test_watch_exits_within_seconds_of_the_reader_of_its_output_going() -> None:
    """`watch --interval 60` piped into a reader that goes (`watch | less`, quit) exits within
    seconds with a broken pipe's 141, saying nothing, having asked the daemon once: to a pipe
    rich writes only as watch stops, so it asked every interval for ever."""
    with board() as (url, asked):
        proc = watching(url, "--interval", "60")
        assert proc.stdout is not None and proc.stderr is not None
        deadline = time.monotonic() + 30
        while len(asked) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.stdout.close()
        try:
            code = proc.wait(5)
        finally:
            proc.kill()
            proc.wait(10)
            said = proc.stderr.read()
            proc.stderr.close()
    assert (code, said, asked) == (141, "", ["/api/state", "/api/closes"])
