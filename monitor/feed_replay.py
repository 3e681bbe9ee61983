"""`market-monitor feed-replay`: publish bars and ticks from history files to MQTT, as a data
provider would: daily bars (`timeframe` "1d", `session`) or, from files whose time column has
times of day, minute bars (`timeframe` "1m", `start` in epoch ms; which files those are, and how
their times are read, naive ones in New York time: `monitor.minutefiles`), or, from tick files
(a `price` column and no open, high, low or close: `monitor.tickfiles`), ticks in the generic
feed's shape, `{"symbol", "ts", "price", "size", "id"}` (`ts` in epoch ms, with a fraction for a
time finer than a millisecond; no `id` for a tick without one). Minute bars and ticks go out in
time order, ticks of one time in file order. Rows any kind of file rejects are counted and named
on stderr, as `replay` names them. Paced by `--rate` messages per second or by `--speed`,
simulated seconds per real second (minute bars and ticks). For demos, tests and benchmarks. A
broker that refuses anonymous clients: `--username` with `--password-env` (a variable's name) or
`--password-file`, never the password itself on the command line; mqtts:// verifies the broker
against `--ca-file`, else the system's CAs."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import logging
import sys
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import msgspec
import polars as pl

from monitor.config_problems import unreadable
from monitor.core.sessions import NEW_YORK
from monitor.credentials import Secret, secret
from monitor.datafiles import parse_data_arg, read_many
from monitor.errors import EX_USAGE, ConfigError, DataError, SinkUnavailable
from monitor.urls import mask_url, split_url

if TYPE_CHECKING:
    from monitor.core.model import Rejection


class WireBar(msgspec.Struct):
    """The generic bar message of the MQTT feed."""

    symbol: str
    timeframe: str
    session: str
    open: float
    high: float
    low: float
    close: float
    volume: float | None


# The MQTT client's own log (paho's "failed to receive on socket: [Errno 104] Connection reset
# by peer"), which Python's last-resort handler wrote to stderr before the command's one line
# about the lost connection: that line says it, with how far it got.
_QUIET = logging.getLogger("monitor.feed_replay.mqtt")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def bar_messages(bars: pl.DataFrame) -> list[bytes]:
    """One JSON message per daily bar, in session order."""
    enc = msgspec.json.Encoder()
    out = []
    for row in bars.sort("session", "symbol").iter_rows(named=True):
        out.append(
            enc.encode(
                WireBar(
                    symbol=row["symbol"],
                    timeframe="1d",
                    session=row["session"].isoformat(),
                    open=row["open"],
                    high=row["high"],
                    low=row["low"],
                    close=row["close"],
                    volume=row["volume"],
                )
            )
        )
    return out


class WireMinute(msgspec.Struct):
    """The generic minute-bar message of the MQTT feed."""

    symbol: str
    timeframe: str
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None


def minute_messages(bars: pl.DataFrame) -> list[tuple[int, bytes]]:
    """(start in epoch ms, message) per minute bar, in time order."""
    enc = msgspec.json.Encoder()
    out = []
    frame = bars.sort("start", "symbol").with_columns(pl.col("start").dt.epoch("ms").alias("ms"))
    for row in frame.iter_rows(named=True):
        ms = int(row["ms"])
        wire = WireMinute(row["symbol"], "1m", ms, row["open"], row["high"], row["low"],
                          row["close"], row["volume"])  # fmt: skip
        out.append((ms, enc.encode(wire)))
    return out


class WireTick(msgspec.Struct, omit_defaults=True):
    """The generic tick message of the MQTT feed (`monitor.feeds.generic`)."""

    symbol: str
    ts: int | float  # epoch ms (a fraction for microseconds)
    price: float
    size: float
    id: str | None = None


def tick_messages(ticks: pl.DataFrame) -> list[tuple[int, bytes]]:
    """(ts in whole epoch ms, message) per tick (TICK_SCHEMA), in the frame's order."""
    enc = msgspec.json.Encoder()
    out = []
    frame = ticks.with_columns(pl.col("ts").dt.epoch("us").alias("us"))
    for symbol, us, price, size, trade in frame.select(
        "symbol", "us", "price", "size", "id"
    ).iter_rows():
        ms, part = divmod(int(us), 1000)
        wire = WireTick(symbol, ms + part / 1000 if part else ms, price, size, trade)
        out.append((ms, enc.encode(wire)))
    return out


def feed_replay(args: argparse.Namespace) -> int:
    """Entry point of the `feed-replay` command."""
    from monitor.minutefiles import is_minute_file, read_minute_files
    from monitor.replay_command import rejected_lines
    from monitor.tickfiles import is_tick_file, read_tick_files

    if not args.topic or "+" in args.topic or "#" in args.topic:  # (before reading the files)
        print(
            f"market-monitor: usage error: --topic {args.topic!r}: a topic to publish to cannot "
            "be empty or contain + or # (wildcards are for subscribing)",
            file=sys.stderr,
        )
        return EX_USAGE
    if args.start is not None and args.end is not None and args.start > args.end:
        print(f"market-monitor: --from {args.start} is after --to {args.end}", file=sys.stderr)
        return 2  # (as `replay` says it: argparse's status for a usage error)
    login = _login(args)
    if isinstance(login, str):
        print(f"market-monitor: usage error: {login}", file=sys.stderr)
        return EX_USAGE
    specs = [parse_data_arg(a) for a in args.data]
    tick_specs = [s for s in specs if is_tick_file(s.path)]
    minute_specs = [s for s in specs if s not in tick_specs and is_minute_file(s.path)]
    daily_specs = [s for s in specs if s not in tick_specs and s not in minute_specs]
    messages: list[tuple[int, bytes]] = []
    timed: list[tuple[int, bytes]] = []  # (minute bars and ticks, merged by time below)
    counts: Counter[str] = Counter()
    rejections: list[Rejection] = []
    if daily_specs:
        loaded = read_many(daily_specs, adjusted=args.adjusted, start=args.start, end=args.end)
        for note in loaded.notes:
            print(f"market-monitor: {note}", file=sys.stderr)
        messages += [(0, m) for m in bar_messages(loaded.bars)]
        counts.update(loaded.counts)
        rejections += loaded.rejections
    if minute_specs:
        minutes = read_minute_files(minute_specs, start=args.start, end=args.end)
        timed += minute_messages(minutes.bars)
        counts.update(minutes.counts)
        rejections += minutes.rejections
    n_bars = len(messages) + len(timed)
    if tick_specs:
        ticks = read_tick_files(tick_specs, start=args.start, end=args.end)
        timed += tick_messages(ticks.ticks)
        counts.update(ticks.counts)
        rejections += ticks.rejections
    messages += sorted(timed, key=lambda m: m[0]) if minute_specs and tick_specs else timed
    for line in rejected_lines(counts, rejections):
        print(f"market-monitor: {line}", file=sys.stderr)
    if minute_specs or tick_specs:  # (naive UTC times read as New York's: said before sending)
        from monitor.core.model import MINUTE_SCHEMA, TICK_SCHEMA, empty
        from monitor.intraday_checks import warnings_of

        bars = minutes.bars if minute_specs else empty(MINUTE_SCHEMA)
        trades = ticks.ticks if tick_specs else empty(TICK_SCHEMA)
        for line in warnings_of(bars, trades, dt.datetime.now(dt.UTC)):
            print(f"market-monitor: warning: {line}", file=sys.stderr)
    if not messages:  # (it said "published 0 bars" and exited 0: a --from past the data, say)
        said = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        why = f"rows rejected or fixed: {said}; " if said else ""
        raise DataError("--data", f"nothing to publish ({why}check the files, --from and --to)")
    pace = {"rate": args.rate, "speed": args.speed}
    sessions = loaded.bars.sort("session", "symbol")["session"] if daily_specs else None
    where = functools.partial(_where, sessions)
    asyncio.run(
        publish(args.url, args.topic, messages, qos=args.qos, login=login, where=where, **pace)
    )
    said = _published(n_bars, len(messages) - n_bars)
    print(f"published {said} to {args.topic}", file=sys.stderr)
    return 0


def _where(sessions: pl.Series | None, messages: list[tuple[int, bytes]], sent: int) -> str:
    """How far a publish cut off after `sent` of `messages` got (the daily bars first, of
    `sessions` in order, then the minute bars and ticks by time), and how to go on from there."""
    if not sent:
        return f"none of the {len(messages)} messages was published"
    days = 0 if sessions is None else sessions.len()
    if sent <= days:
        assert sessions is not None
        last: dt.date = sessions[sent - 1]
        when = f"a bar of {last.isoformat()}"
    else:
        at = dt.datetime.fromtimestamp(messages[sent - 1][0] / 1000, dt.UTC)
        local = at.astimezone(ZoneInfo(NEW_YORK))
        last = local.date()
        stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        when = f"{stamp} ({local:%H:%M:%S} New York)"
    return (
        f"published {sent} of {len(messages)} messages, the last of {when}; to go on, run "
        f"again with --from {last.isoformat()} (what is sent again of that day is a duplicate "
        "the daemon rejects, or a bar that replaces itself)"
    )


def _published(bars: int, ticks: int) -> str:
    """`12 bars`, `5 ticks`, or `12 bars and 5 ticks` (bars of a run without ticks too)."""
    if not ticks:
        return f"{bars} bars"
    return f"{bars} bars and {ticks} ticks" if bars else f"{ticks} ticks"


class Login(msgspec.Struct, frozen=True):
    """How feed-replay logs in to the broker: a user and password (None: anonymous) and, for
    mqtts://, the CA file to verify it against (None: the system's)."""

    username: str | None = None
    password: Secret | None = None
    ca_file: str | None = None


def _login(args: argparse.Namespace) -> Login | str:
    """The login the options ask for, before any file is read; a usage error's message for
    options that do not go together; ConfigError (exit 78) for a password variable that is not
    set or a password or CA file that cannot be read, naming the option."""
    username = getattr(args, "username", None)
    password_env = getattr(args, "password_env", None) or ""
    password_file = getattr(args, "password_file", None) or ""
    ca_file = getattr(args, "ca_file", None)
    if (password_env or password_file) and not username:
        option = "--password-env" if password_env else "--password-file"
        return f"{option}: needs --username (MQTT sends a password only with a user name)"
    parts = split_url(args.url)
    if isinstance(parts, str):
        return f"--url: {parts}"
    if parts.username or parts.password:  # (they would be ignored: the daemon refuses them too)
        return (
            "--url: credentials belong in --username and --password-env or --password-file, "
            f"not the url: {mask_url(args.url)!r}"
        )
    if ca_file is not None and parts.scheme != "mqtts":
        return f"--ca-file: needs an mqtts:// --url, not {mask_url(args.url)!r}"
    password = secret(
        "--password",
        env_name=password_env,
        file_name=password_file,
        fields=("--password-env", "--password-file"),
    )
    if ca_file is not None:
        problem = unreadable(ca_file)
        if problem is not None:
            raise ConfigError(f"--ca-file: {problem}")
    return Login(username or None, password, ca_file)


async def publish(
    url: str,
    topic: str,
    messages: list[tuple[int, bytes]],
    *,
    qos: int,
    rate: float,
    speed: float = 0.0,
    login: Login | None = None,
    where: Callable[[list[tuple[int, bytes]], int], str] | None = None,
) -> None:
    """Publish `(ms, message)` pairs in order: at most `rate` per second (0 = no limit), and
    with `speed` > 0 spaced by their timestamps divided by `speed` (`ms` 0: untimed, a daily
    bar, sent at once). SinkUnavailable when the broker refuses the connection or drops it
    (once connected, saying how far it got: `where` of the messages and how many were
    published, acknowledged with QoS 1); ConfigError when it refuses the login or its
    certificate is not trusted (trying again will not help)."""
    import aiomqtt
    from aiomqtt.exceptions import MqttConnectError
    from paho.mqtt.reasoncodes import ReasonCode

    from monitor.feeds.mqtt_client import tls_context

    login = login or Login()
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"--url: expected mqtt://host[:port], got {url!r}")
    tls = parts.scheme == "mqtts"
    client = aiomqtt.Client(
        parts.hostname,
        parts.port or (8883 if tls else 1883),
        username=login.username,
        password=str(login.password) if login.password is not None else None,
        tls_context=tls_context(login.ca_file) if tls else None,
        logger=_QUIET,
    )
    sent = -1  # (-1: not connected yet)
    try:
        async with client:
            sent = 0
            gap = 1.0 / rate if rate > 0 else 0.0
            previous: int | None = None
            for ms, message in messages:
                if speed > 0 and ms:  # (0: a daily bar, untimed: never waited for or after)
                    if previous is not None and ms > previous:
                        await asyncio.sleep((ms - previous) / 1000 / speed)
                    previous = ms
                await client.publish(topic, message, qos=qos)
                sent += 1
                if gap:
                    await asyncio.sleep(gap)
    except asyncio.CancelledError:
        # Ctrl-C (asyncio.run cancels us, then raises KeyboardInterrupt): say how far it got
        # and how to go on, as for a lost broker; the cancellation goes on.
        if sent >= 0 and where is not None:
            print(f"market-monitor: stopped: {where(messages, sent)}", file=sys.stderr)
        raise
    except MqttConnectError as exc:
        # Bad credentials or not authorised (3.1.1 codes 4 and 5, MQTT 5 reason codes 134 and
        # 135): trying again will not help.
        code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
        failed = ConfigError if code in (4, 5, 134, 135) else SinkUnavailable
        raise failed(f"mqtt broker at {mask_url(url)}: {exc}") from None
    except aiomqtt.MqttError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # (no retry makes the certificate trusted)
            raise ConfigError(
                f"mqtt broker at {mask_url(url)}: its TLS certificate is not trusted (give "
                f"--ca-file, the CA that signed it): {exc}"
            ) from None
        if sent < 0:
            raise SinkUnavailable(f"mqtt broker at {mask_url(url)}: {exc}") from None
        _read_disconnect(client)
        said = f"{where(messages, sent)}" if where is not None else f"published {sent}"
        raise SinkUnavailable(
            f"mqtt broker at {mask_url(url)}: connection lost ({exc}); {said}"
        ) from None


def _read_disconnect(client: object) -> None:
    """aiomqtt sets the error of a connection lost on a future of the client that nothing
    reads when a publish fails first (its `__aexit__` returns early): read here, so that
    asyncio does not print 'Future exception was never retrieved' and its traceback."""
    lost = getattr(client, "_disconnected", None)
    if isinstance(lost, asyncio.Future) and lost.done() and not lost.cancelled():
        lost.exception()
