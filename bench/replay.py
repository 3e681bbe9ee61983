"""Replay against its limit: `market-monitor replay` vs a one-shot polars pass vs a pandas loop.

    .venv/bin/python bench/replay.py [--repeat 3] [--budget-s 540]

Three data sets, each measured three ways as whole processes (wall time and peak RSS of the
child from `os.wait4`):

- ^RUT 1987-2026 (one symbol, ~9,700 sessions);
- the ~1,700-symbol universe of 2023-2024 (wide CSV, ~500 sessions);
- the same universe ten times wider (each symbol again as `ABC_1`..`ABC_9`, ~17,000 symbols),
  generated once with polars into bench/.cache/.

Methods: (a) `python -m monitor replay --format jsonl --no-cache` with bench/rules_bench.toml (a
daily streak and a daily surge over the whole universe; for ^RUT also config/rules.toml), alerts
counted per rule id; (a') the same with the data file in replay's cache (files of 1 MB or more;
a run before the first round fills it, in bench/.cache/market-monitor), as a user replaying a
file again gets it; (a'') the first replay of such a file, which parses it and writes its cache
entry (an emptied cache before each run); (s) the parsed replay with `--format summary`, the
same engine and firings with a few lines per rule instead of every alert's payload;
(b) bench/oneshot_polars.py, the limit, which parses its file every time; (c)
bench/pandas_loop.py. The firings of all of them must agree; a
MISMATCH line says when not.

Runs go round-robin (every cell once per round) so that a noisy spell on this shared machine
hits all methods alike; a repeat that would take the bench past `--budget-s` is skipped (the
`n` column says how many runs a median is of). Compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SHARED = ROOT.parent / "shared" / "data"
CACHE = BENCH / ".cache"
RULES_BENCH = BENCH / "rules_bench.toml"
RULES_ALL = ROOT / "config" / "rules.toml"
RUT_NAME = "rut_index_daily_1987_2026.csv"
UNIVERSE_NAME = "r2k_approx_constituents_close_2023_2024.csv"
COPIES = 9  # extra names per symbol in the wide copy: ten times the symbols
PARSED = "(a) replay bench rules"  # the file parsed (--no-cache), as every earlier stop measured
CACHED = "(a') same, file cached"  # the file as read before, from replay's data cache
FIRST = "(a'') first, caching it"  # the first replay of the file: parses it, writes the entry
SUMMARY = "(s) replay, summary"  # parsed; the same firings, no alert payloads
DATA_CACHE_MIN_BYTES = 1 << 20  # (monitor.datacache.MIN_BYTES: smaller files are not cached)
STREAK_ID, SURGE_ID = "streak.daily", "surge.5d"
TARGET_RATIO = 2.0  # the target: replay within 2x of the one-shot pass (17k symbols)
CHILD_TIMEOUT_S = 1200


@dataclass(frozen=True)
class DataSet:
    """A data file, what to pass to `--data`, and its size for the table."""

    label: str
    path: Path
    spec: str
    symbols: int
    sessions: int


@dataclass
class Cell:
    """One (data set, method) of the table and its runs."""

    data: DataSet
    method: str
    argv: list[str]
    is_replay: bool
    compared: bool  # must agree with the other compared cells of its data set
    walls: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    firings: tuple[int, int] | None = None
    others: int = 0  # replay alerts of rules other than the two compared ones
    error: str | None = None
    env: dict[str, str] | None = None  # (None: the bench's own environment)
    warm_up: bool = False  # run once unmeasured before the first round (fills a cache)
    fresh_cache: Path | None = None  # a cache folder emptied before each run


class _AlertRule(msgspec.Struct):
    rule: str


# ---- data sets ------------------------------------------------------------------------------


def _size(path: Path, wide: bool) -> tuple[int, int]:
    with path.open("rb") as f:
        columns = f.readline().count(b",") + 1
        rows = sum(1 for line in f if line.strip())
    return (columns - 1 if wide else 1), rows


def widened(source: Path) -> Path:
    """The universe with every symbol under COPIES more names; built once, kept in CACHE."""
    target = CACHE / f"{source.stem}_x{COPIES + 1}.csv"
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    CACHE.mkdir(exist_ok=True)
    print(f"generating {target.relative_to(ROOT)} ...", flush=True)
    # In a child: a forked child's peak RSS starts from its parent's, so the parent stays small.
    subprocess.run([sys.executable, __file__, "--widen", str(source), str(target)], check=True)
    return target


def widen(source: str, target: str) -> None:
    """Write `source` with every symbol column again under COPIES more names (`ABC_1`, ...)."""
    import polars as pl

    frame = pl.read_csv(source, infer_schema=False)  # text kept as written: same numbers
    date, symbols = frame.columns[0], frame.columns[1:]
    copies = [pl.col(s).alias(f"{s}_{i}") for i in range(1, COPIES + 1) for s in symbols]
    fd, tmp = tempfile.mkstemp(dir=Path(target).parent, suffix=".csv")
    os.close(fd)
    frame.select(date, *symbols, *copies).write_csv(tmp)
    os.replace(tmp, target)


def data_sets() -> tuple[list[DataSet], list[str]]:
    """The data sets found, and a line for each one skipped."""
    found: list[DataSet] = []
    skipped: list[str] = []
    rut = SHARED / RUT_NAME
    if not rut.exists():
        rut = ROOT / "monitor" / "demo" / RUT_NAME
    symbols, sessions = _size(rut, wide=False)
    found.append(DataSet("^RUT 1987-2026", rut, f"^RUT={rut}", symbols, sessions))
    universe = SHARED / UNIVERSE_NAME
    if not universe.exists():
        skipped.append(
            f"skipped: universe 2023-2024 and its x{COPIES + 1} copy: {universe} not found "
            "(../shared is absent; they are not shipped in the repository)"
        )
        return found, skipped
    symbols, sessions = _size(universe, wide=True)
    found.append(DataSet("universe 23-24", universe, str(universe), symbols, sessions))
    wide = widened(universe)
    symbols, sessions = _size(wide, wide=True)
    found.append(DataSet(f"universe x{COPIES + 1}", wide, str(wide), symbols, sessions))
    return found, skipped


def cells(sets: list[DataSet], python: str) -> list[Cell]:
    """Every (data set, method), the slowest kind last within a data set."""
    out: list[Cell] = []
    for d in sets:
        replay = [python, "-m", "monitor", "replay", "--data", d.spec, "--format", "jsonl"]
        for method, script in (
            ("(b) one-shot polars", "oneshot_polars.py"),
            ("(c) pandas loop", "pandas_loop.py"),
        ):
            argv = [python, str(BENCH / script), str(d.path)]
            out.append(Cell(d, method, argv, is_replay=False, compared=True))
        if d.symbols == 1:
            argv = [*replay, "--rules", str(RULES_ALL)]
            out.append(Cell(d, "(a) replay rules.toml", argv, is_replay=True, compared=False))
        argv = [*replay, "--rules", str(RULES_BENCH)]
        out.append(Cell(d, PARSED, [*argv, "--no-cache"], is_replay=True, compared=True))
        summary = [*argv, "--no-cache", "--format", "summary"]  # (the later --format wins)
        out.append(Cell(d, SUMMARY, summary, is_replay=True, compared=True))
        if d.path.stat().st_size >= DATA_CACHE_MIN_BYTES:
            env = {**os.environ, "MARKET_MONITOR_CACHE_DIR": str(CACHE / "market-monitor")}
            cached = Cell(d, CACHED, argv, is_replay=True, compared=True, env=env, warm_up=True)
            fresh = CACHE / "market-monitor-first"
            env = {**os.environ, "MARKET_MONITOR_CACHE_DIR": str(fresh)}
            first = Cell(d, FIRST, argv, is_replay=True, compared=True, env=env, fresh_cache=fresh)
            out += [cached, first]
    return out


# ---- running --------------------------------------------------------------------------------


def run_once(cell: Cell, scratch: Path) -> None:
    """Run the cell's process once; record wall time, peak RSS and firings."""
    out_path = scratch / "stdout"
    if cell.fresh_cache is not None:
        shutil.rmtree(cell.fresh_cache / "data", ignore_errors=True)  # (the calendar stays)
    with out_path.open("wb") as out, (scratch / "stderr").open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cell.argv, cwd=ROOT, stdout=out, stderr=err, env=cell.env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (scratch / "stderr").read_text(errors="replace").strip().splitlines()[-3:]
        cell.error = f"exit {proc.returncode}: {' | '.join(tail)}"
        return
    cell.walls.append(wall)
    cell.rss_mb.append(usage.ru_maxrss / 1024)  # kilobytes on Linux; at least the parent's
    if not cell.is_replay:
        firings = _script_firings(out_path)
    elif cell.method == SUMMARY:
        firings = _summary_firings(out_path)
    else:
        firings = _replay_firings(cell, out_path)
    if cell.firings is not None and firings != cell.firings:
        cell.error = f"firings changed between runs: {cell.firings} then {firings}"
    cell.firings = firings


def _replay_firings(cell: Cell, path: Path) -> tuple[int, int]:
    decoder = msgspec.json.Decoder(_AlertRule)
    with path.open("rb") as f:
        rules = Counter(decoder.decode(line).rule for line in f if line.strip())
    cell.others = sum(rules.values()) - rules[STREAK_ID] - rules[SURGE_ID]
    return rules[STREAK_ID], rules[SURGE_ID]


def _summary_firings(path: Path) -> tuple[int, int]:
    """The alert counts of the two rules from a summary's head lines."""
    found = {}
    for line in path.read_text().splitlines():
        rule, _, rest = line.partition(" (")
        if rule in (STREAK_ID, SURGE_ID):
            found[rule] = (
                0
                if rest.endswith("no alerts")
                else int(rest.split(": ", 1)[1].split(" ", 1)[0].replace(",", ""))
            )
    return found[STREAK_ID], found[SURGE_ID]


def _script_firings(path: Path) -> tuple[int, int]:
    words = dict(w.split("=", 1) for w in path.read_text().split())
    return int(words["streak"]), int(words["surge"])


def run_all(table: list[Cell], repeat: int, budget_s: float) -> None:
    """Round-robin over the cells; skip a repeat that would overrun the budget."""
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        scratch = Path(tmp)
        for cell in table:
            if cell.warm_up:  # output thrown away: capturing its 300 MB here would grow this
                # process, and every child's peak RSS counts this process's RSS at the fork
                subprocess.run(
                    cell.argv,
                    cwd=ROOT,
                    env=cell.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
        for round_no in range(1, repeat + 1):
            for cell in table:
                if cell.error is not None:
                    continue
                elapsed = time.perf_counter() - began
                if round_no > 1 and elapsed + max(cell.walls, default=0.0) > budget_s:
                    continue
                run_once(cell, scratch)
                wall = f"{cell.walls[-1]:.2f} s" if cell.error is None else cell.error
                print(
                    f"  round {round_no}  {cell.data.label:16} {cell.method:24} {wall}", flush=True
                )


# ---- report ---------------------------------------------------------------------------------


def report(table: list[Cell]) -> list[str]:
    """The table, then agreement and target lines."""
    head = (
        f"{'data set':16} {'symbols x sessions':>19}  {'method':24} {'n':>2} {'wall s':>8} "
        f"{'peak RSS MB':>11}  {'firings (streak, surge)':>24} {'x (b)':>7}"
    )
    lines = [head, "-" * len(head)]
    limit: dict[str, float] = {}
    for cell in table:
        if cell.method.startswith("(b)") and cell.walls:
            limit[cell.data.label] = statistics.median(cell.walls)
    for cell in table:
        d = cell.data
        size = f"{d.symbols:,} x {d.sessions:,}"
        if not cell.walls:
            lines.append(f"{d.label:16} {size:>19}  {cell.method:24} FAILED {cell.error}")
            continue
        wall = statistics.median(cell.walls)
        rss = statistics.median(cell.rss_mb)
        fired = f"{cell.firings[0]:,}, {cell.firings[1]:,}" if cell.firings else "?"
        if cell.others:
            fired += f" (+{cell.others:,} other)"
        ratio = f"{wall / limit[d.label]:.1f}x" if d.label in limit else "-"
        lines.append(
            f"{d.label:16} {size:>19}  {cell.method:24} {len(cell.walls):>2} {wall:>8.2f} "
            f"{rss:>11.0f}  {fired:>24} {ratio:>7}"
        )
    lines.append("")
    for label in dict.fromkeys(c.data.label for c in table):
        mine = [c for c in table if c.data.label == label and c.compared]
        seen = {c.method: c.firings for c in mine}
        agreed = next(iter(seen.values()))
        if agreed is None or len(set(seen.values())) > 1:
            detail = "; ".join(f"{m} {f}" for m, f in seen.items())
            lines.append(f"MISMATCH {label}: firings differ: {detail}")
        else:
            lines.append(f"firings agree on {label}: streak={agreed[0]} surge={agreed[1]}")
    for cell in table:
        if cell.is_replay and cell.compared and cell.data.symbols > 10_000 and cell.walls:
            ratio = statistics.median(cell.walls) / limit[cell.data.label]
            verdict = "MET" if ratio <= TARGET_RATIO else "NOT MET"
            how = {
                PARSED: "the file parsed",
                CACHED: "the file cached",
                SUMMARY: "the file parsed, summary (no alert payloads)",
            }.get(cell.method)
            if how is None:
                continue
            lines.append(
                f"target (replay within {TARGET_RATIO:g}x of the one-shot pass on "
                f"{cell.data.symbols:,} symbols), {how}: {verdict} ({ratio:.1f}x)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per cell (median taken)")
    p.add_argument("--budget-s", type=float, default=540.0, help="skip repeats past this")
    default_python = ROOT / ".venv" / "bin" / "python"
    p.add_argument(
        "--python", default=str(default_python if default_python.exists() else sys.executable)
    )
    p.add_argument("--widen", nargs=2, metavar=("SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.widen:
        widen(*args.widen)
        return 0
    sets, skipped = data_sets()
    for line in skipped:
        print(line)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"cpus: {os.cpu_count()}; load average at start: {load}; runs per cell: {args.repeat}")
    table = cells(sets, args.python)
    run_all(table, args.repeat, args.budget_s)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at end: {load}\n")
    lines = report(table)
    for line in skipped:
        lines.append(line)
    print("\n".join(lines))
    return 1 if any(line.startswith("MISMATCH") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
