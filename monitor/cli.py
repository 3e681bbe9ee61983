"""Command line: argv -> config -> service / replay; exit codes.

Exit codes: 0 ok, 2 usage, 64 an argument the command rejects after parsing, 65 unreadable
data file, 69 a service the command needs (Redis, the MQTT broker) unreachable, 71 the daemon
cannot listen on its `[http]` address (a port in use, most often by its previous process still
stopping: systemd restarts it), 73 an output file that cannot be written (replay's --report),
74 an error naming a file (the store, the outbox), 75 the store is held by another
market-monitor process, 78 bad configuration, 130 stopped by Ctrl-C (SIGINT), 141 a reader of
stdout gone (`| head`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from monitor import __version__
from monitor.errors import (
    EX_CONFIG,
    EX_DATAERR,
    EX_IOERR,
    EX_OSERR,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    ConfigError,
    DataError,
    MonitorError,
    TransientError,
)
from monitor.notify.parsers import text
from monitor.replay_command import demo, replay
from monitor.replay_command import load_rules as load_rules  # (re-exported: tests import it here)

if TYPE_CHECKING:
    from monitor.store import Store

EX_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away
EX_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C
# --timeout, --interval: more than a day is surely a typo (and past about 300 years, the socket
# or the sleep raises OverflowError).
LONGEST_WAIT_S = 86_400
_ENTRY_ID = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from None


def _seconds(text: str) -> float:
    """A wait in seconds, finite and above 0: a socket or a sleep refuses the others with a
    traceback, and `0` would spin."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= LONGEST_WAIT_S:  # (nan too)
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 and at most {LONGEST_WAIT_S}, not {text!r}"
        )
    return seconds


def _count(text: str) -> int:
    """A count of alerts above 0: `tail` stops only once it reaches it."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, not {text!r}")
    return count


def _since(text: str) -> str:
    """`tail --since`: 0, $, or an entry id `MS` or `MS-SEQ` in digits (each below 2**64), as
    given: the ids XREAD takes, checked here so that a typo is not Redis's "Invalid stream ID",
    reported as a config error."""
    found = _ENTRY_ID.fullmatch(text)
    parts = found.groups(default="0") if found else ()
    # (the length first: int() refuses more than 4,300 digits)
    if text != "$" and (not parts or any(len(n) > 20 or int(n) >= 2**64 for n in parts)):
        raise argparse.ArgumentTypeError(
            f"must be 0, $ or an entry id (MS or MS-SEQ, in digits), not {text!r}"
        )
    return text


def _not_empty(value: str) -> str:
    """A name given empty (an unset shell variable) is not left to mean the default; one that
    is not UTF-8 is refused (see `monitor.notify.parsers.text`)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="market-monitor", description="Streaming monitor of US small-cap rallies."
    )
    p.add_argument("--version", action="version", version=f"market-monitor {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("replay", help="run the rules over history and print every alert")
    r.add_argument("--rules", required=True, help="rules TOML file")
    r.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[SYMBOL=]PATH",
        help="daily bars, CSV or Parquet (repeatable); also minute bars or ticks, replayed day"
        " by day; SYMBOL= names a file of one symbol",
    )
    r.add_argument(
        "--short-interest",
        metavar="PATH",
        help="short interest CSV (symbol, short_interest_date, percent_of_float) for squeezes",
    )
    r.add_argument(
        "--from",
        dest="start",
        type=_date,
        metavar="DATE",
        help="print alerts from this session on (earlier history still counts)",
    )
    r.add_argument("--to", dest="end", type=_date, metavar="DATE", help="stop at this session")
    r.add_argument(
        "--format",
        choices=["jsonl", "table", "summary"],
        default="jsonl",
        help="jsonl: an alert per line; table: alerts for people; summary: per rule, how many "
        "alerts and what followed them, printing no alert",
    )
    r.add_argument("--adjusted", action="store_true", help="use the Adj Close column")
    r.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="parse the data files even when the cache holds them as read before",
    )
    r.add_argument("--batch-sessions", type=int, default=None, help=argparse.SUPPRESS)
    r.add_argument(
        "--report", metavar="FILE.html", help="also write an HTML report: charts, returns"
    )

    d = sub.add_parser("demo", help="replay the July 2024 small-cap rally from shipped data")
    d.add_argument("--format", choices=["jsonl", "table"], default="table")

    w = sub.add_parser("watch", help="the live board in the terminal, from a running daemon")
    w.add_argument("--config", help="daemon config TOML (for the [http] host and port)")
    w.add_argument("--url", help="daemon HTTP base URL (default http://127.0.0.1:9108)")
    w.add_argument(
        "--interval",
        type=_seconds,
        default=2.0,
        help=f"seconds between refreshes (above 0, at most {LONGEST_WAIT_S})",
    )
    w.add_argument("--once", action="store_true", help="print one frame and exit")

    run = sub.add_parser("run", help="run the daemon until SIGTERM or SIGINT")
    run.add_argument("--config", required=True, help="daemon config TOML")

    b = sub.add_parser("backfill", help="import daily history into the daemon's store")
    b.add_argument("--config", required=True, help="daemon config TOML")
    b.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[SYMBOL=]PATH",
        help="daily bars, CSV or Parquet, as replay reads them (repeatable); minute bars or"
        " ticks go in as the sessions they make",
    )
    b.add_argument("--to", dest="end", type=_date, metavar="DATE", help="bars up to DATE only")
    b.add_argument("--adjusted", action="store_true", help="use the Adj Close column")

    t = sub.add_parser(
        "tail",
        help="print alerts from the Redis stream as they come, or since ID, or from the channel",
        description="Print alerts live from the Redis stream (nothing lost when Redis restarts), "
        "or the stream's since an entry id (--since), or live from the pub/sub channel "
        "(--channel: alerts published while tail is disconnected are not seen).",
    )
    t.add_argument("--config", help="daemon config TOML (for the Redis URL, stream and channel)")
    t.add_argument("--url", help="Redis URL (default from --config, else redis://127.0.0.1:6379/0)")
    t.add_argument(
        "--stream",
        type=_not_empty,
        help="the alert stream (default from --config, else market-monitor:alerts)",
    )
    # (--channel excludes --stream too: tail refuses that pair itself)
    source = t.add_mutually_exclusive_group()
    source.add_argument(
        "--since",
        metavar="ID",
        type=_since,
        help="read the stream after this entry id, MS or MS-SEQ (0 = all, $ = new ones only)",
    )
    source.add_argument(
        "--channel",
        nargs="?",
        const=True,  # (bare: the config's channel; not a str, which argparse would type-check)
        metavar="NAME",
        type=_not_empty,
        help="subscribe to the pub/sub channel instead of reading the stream (NAME, else from "
        "--config, else market-monitor:alerts); it keeps no alert for a tail that is away",
    )
    t.add_argument("--json", action="store_true", help="one JSON alert per line")
    t.add_argument("--count", type=_count, default=None, help="exit after this many alerts")

    f = sub.add_parser("feed-replay", help="publish history to MQTT at a chosen speed")
    f.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[SYMBOL=]PATH",
        help="daily or minute bars, or ticks (a price column, no open/high/low/close), CSV or"
        " Parquet (repeatable); times of day without an offset are New York time",
    )
    f.add_argument("--url", default="mqtt://127.0.0.1:1883")
    f.add_argument("--topic", default="market/bars")
    f.add_argument("--from", dest="start", type=_date, metavar="DATE")
    f.add_argument("--to", dest="end", type=_date, metavar="DATE")
    f.add_argument("--rate", type=float, default=0.0, help="messages per second (0 = no limit)")
    f.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="minute bars and ticks: simulated seconds per real second",
    )
    f.add_argument("--qos", type=int, choices=[0, 1], default=1)
    f.add_argument("--adjusted", action="store_true")
    f.add_argument("--username", help="log in as this user (a broker refusing anonymous clients)")
    password = f.add_mutually_exclusive_group()
    password.add_argument(
        "--password-env", metavar="NAME", help="the environment variable holding the password"
    )
    password.add_argument(
        "--password-file", metavar="PATH", help="the file holding the password (a credential)"
    )
    f.add_argument(
        "--ca-file",
        metavar="PATH",
        help="mqtts://: the CA that signed the broker's certificate (default: the system's)",
    )

    c = sub.add_parser("config", help="check a daemon config file")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", help="validate, resolve secrets, print the effective config")
    cc.add_argument("--config", required=True, help="daemon config TOML")
    cc.add_argument("--format", choices=["toml", "json"], default="toml")

    s = sub.add_parser("status", help="health and figures of a running daemon")
    s.add_argument("--config", help="daemon config TOML (for the [http] host and port)")
    s.add_argument("--url", help="daemon HTTP base URL (default http://127.0.0.1:9108)")
    s.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        help=f"seconds to wait for an answer (above 0, at most {LONGEST_WAIT_S})",
    )

    from monitor.notify.parsers import add_parsers as add_notify_parsers

    add_notify_parsers(sub)  # notify [test --receiver N | digest]; silence add|list|expire
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `market-monitor` console script."""
    # numpy's OpenBLAS starts a thread per core that spins for a while; nothing here uses BLAS,
    # and on a small machine those threads take CPU from polars (before numpy is imported).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = _parser().parse_args(argv)
    try:
        if args.command == "replay":
            return replay(args)
        if args.command == "demo":
            return demo(args)
        if args.command == "run":
            return _run(args)
        if args.command == "backfill":
            from monitor.backfill import backfill

            return backfill(args, _lock)
        if args.command == "tail":
            return _tail(args)
        if args.command == "watch":
            from monitor.watch import watch

            return watch(args)
        if args.command == "feed-replay":
            from monitor.feed_replay import feed_replay

            return feed_replay(args)
        if args.command == "config":
            from monitor.config_check import config_check

            return config_check(args)
        if args.command == "status":
            from monitor.status import status

            return status(args)
        if args.command == "notify":
            from monitor.notify.cli import main_notify

            return main_notify(args)
        if args.command == "silence":
            from monitor.notify.cli import main_silence

            return main_silence(args)
    except ConfigError as exc:
        print(f"market-monitor: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except DataError as exc:
        print(f"market-monitor: data error: {exc}", file=sys.stderr)
        return EX_DATAERR
    except TransientError as exc:
        # Retried by a running adapter; a command that meets one has no connection yet.
        print(f"market-monitor: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except MonitorError as exc:
        print(f"market-monitor: error: {exc}", file=sys.stderr)
        return EX_IOERR
    except BrokenPipeError:
        # The reader went away (`replay ... | head`): stop quietly, as cat or grep would, with
        # SIGPIPE's status; stdout goes to /dev/null so that exiting does not flush into it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_PIPE
    except KeyboardInterrupt:
        # Ctrl-C in a replay, a backfill or a feed-replay (the daemon and the notifier take
        # SIGINT as their stop): one line and SIGINT's status, not a traceback of wherever it
        # landed (polars, an import, asyncio's runner).
        print("market-monitor: interrupted", file=sys.stderr)
        return EX_INTERRUPTED
    except BaseExceptionGroup as group:
        # A component of the daemon failed for good (e.g. the outbox cannot be written): say
        # what, exit non-zero, and let systemd restart us. Anything else is a bug: re-raise.
        ours, rest = group.split(lambda e: isinstance(e, MonitorError))
        if ours is None or rest is not None:  # (a bug beside ours: its traceback, all said)
            raise
        failures = _leaves(ours)
        for failure in failures:
            print(f"market-monitor: error: {failure}", file=sys.stderr)
        return EX_CONFIG if all(isinstance(e, ConfigError) for e in failures) else EX_IOERR
    return 2


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def _tail(args: argparse.Namespace) -> int:
    """`tail`; a Redis that refuses it for its password says where the password comes from."""
    from monitor.tail import tail

    try:
        return tail(args)
    except ConfigError as exc:
        from redis.exceptions import AuthenticationError

        if not isinstance(exc.__cause__, AuthenticationError):
            raise
        message = str(exc).rstrip(".")  # (Redis ends some of its errors with a full stop)
        raise ConfigError(f"{message}; fix: {_tail_password_fix(args)}") from exc.__cause__


def _tail_password_fix(args: argparse.Namespace) -> str:
    """What to do about a password Redis refused to `tail`: the daemon's `redis_auth_failed`
    fix, and where tail took the password from, or, when it had none, what supplies one. The
    shipped systemd unit gives the daemon its password in the unit's own environment
    (MARKET_MONITOR__REDIS__PASSWORD_FILE), which a shell does not have."""
    from monitor import config as cfg
    from monitor import config_env
    from monitor.alerts.redis_sink import AUTH_FIX
    from monitor.urls import url_password

    if url_password(args.url or ""):  # (user info or ?password=: the client sends it)
        return "the password in --url was refused: check it" + (
            ""
            if args.config
            else " (or pass --config, whose [redis] password_env or password_file tail then uses)"
        )
    if not args.config:
        return "tail takes the password from --config's [redis] password_env or password_file"
    config = cfg.load(args.config)
    redis = config.redis
    variables = config_env.env_overrides(dict(os.environ))
    if redis.password_env or redis.password_file:
        field = "password_env" if redis.password_env else "password_file"
        value = redis.password_env or redis.password_file
        origin = variables.get(("redis", field), args.config)
        return f"{AUTH_FIX}: tail sent the password of [redis] {field} = {value!r} ({origin})"
    if url_password(redis.url):
        return f"{AUTH_FIX}: tail sent the password of [redis] url ({args.config})"
    prefix = config_env.ENV_PREFIX
    variable = f"{prefix}REDIS__PASSWORD_FILE"
    return (
        f"{AUTH_FIX}: {args.config} sets none, nor does a {prefix}REDIS__PASSWORD_ENV or "
        f"{variable} variable here (the shipped systemd unit sets {variable} in its own "
        f"environment, which a shell does not have; as root: {variable}="
        f"/etc/market-monitor/credentials/redis-password market-monitor tail --config "
        f"{args.config})"
    )


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from monitor import config as cfg

    config = cfg.load(args.config)  # (before the daemon's modules: a config error says so at once)

    from monitor import credentials, logs
    from monitor.http import PortUnavailable
    from monitor.service import run
    from monitor.store import Store
    from monitor.systemd import notifier

    logs.configure(level=config.log.level, json=config.log.json)
    log = logs.get("cli")
    if credentials.writable_by_others(args.config):
        log.warning("config_writable_by_others", path=args.config, fix=f"chmod go-w {args.config}")
    for path in cfg.credential_files(config):
        # (only a file of the daemon's own user: another's, such as a compose secret, is read
        # through group or others on purpose, and `chmod go-rwx` would lock the daemon out)
        if credentials.credential_too_open(path):
            log.warning("credential_readable_by_others", path=path, fix=f"chmod go-rwx {path}")
    lock = _lock(Store(cfg.resolve(config, config.store.path)))
    if lock is None:
        return EX_TEMPFAIL
    with lock:  # before the history is read: a second daemon stops at once
        try:
            return asyncio.run(run(config, notify=notifier()))
        except PortUnavailable as exc:  # (not 74, a store's: restarted, it may free up)
            print(f"market-monitor: error: {exc}", file=sys.stderr)
            return EX_OSERR


def _lock(store: Store) -> TextIO | None:
    """The store's lock, held until the returned file is closed; None (having said which store
    and who holds it) when another market-monitor process does: two daemons must not write the
    same files, and a daemon would overwrite a backfill at its next snapshot."""
    from monitor.store import StoreLocked

    try:
        return store.lock()
    except StoreLocked as exc:
        print(f"market-monitor: {exc}", file=sys.stderr)
        return None
