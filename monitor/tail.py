"""`market-monitor tail`: alerts from the Redis stream as they come, or since an entry id, or
(`--channel`) as they are published on the pub/sub channel.

By default it reads the stream rather than the channel so that nothing is lost to an outage:
when Redis goes away (a restart, a network cut) it says so once, retries with backoff and reads
on after the last entry it printed, skipping and repeating nothing. At start, an unreachable
Redis is an error (exit 69): there is nothing yet to resume.

`--channel [NAME]` subscribes to the channel the daemon PUBLISHes each alert's JSON on
(`[redis] channel`, or NAME). Pub/sub keeps nothing for a subscriber that is away: when Redis
goes away tail says so once, retries with backoff and subscribes again, then says that the
alerts published meanwhile were not seen and which `tail --since` reads them from the stream.
A subscription that hears nothing for `PING_S` PINGs Redis; a PING unanswered for `TIMEOUT_S`
counts as a lost connection (a Redis that stops answering, a cut no one resets).

Either way, a message or entry that is not an alert is said in one line on stderr and skipped.
While it waits, tail looks every `stdout_reader.CHECK_S` at whether the reader of its output has
gone (`tail --json | head -1`, head exited after the first alert) and then exits as a write to
it would (BrokenPipeError: exit 141, nothing said), not at the next alert, hours later maybe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import msgspec

from monitor import stdout_reader
from monitor.core.backoff import Backoff
from monitor.core.model import Alert, decode_alert, encode_alert
from monitor.errors import ConfigError, SinkUnavailable
from monitor.streams import entry_id, text
from monitor.terminal import printable
from monitor.urls import mask_url

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_NAME = "market-monitor:alerts"  # the stream's and the channel's, without --config
BLOCK_MS = 1000
TIMEOUT_S = 5.0  # per command (above BLOCK_MS): a Redis that stops answering is retried too
PING_S = 5.0  # a subscription silent this long PINGs Redis (answered within TIMEOUT_S)


def tail(args: argparse.Namespace) -> int:
    """Entry point of the `tail` command."""
    if args.channel is not None and args.stream is not None:
        # (argparse's groups cannot say "--channel excludes --since and --stream" and no more)
        print(
            "market-monitor tail: error: argument --stream: not allowed with argument --channel",
            file=sys.stderr,
        )
        return 2
    url, stream, channel = DEFAULT_URL, DEFAULT_NAME, DEFAULT_NAME
    password: str | None = None
    options: dict[str, str] = {}
    if args.config:
        from monitor import config as cfg
        from monitor import credentials

        config = cfg.load(args.config)
        url, stream, channel = config.redis.url, config.redis.stream, config.redis.channel
        password = credentials.secret(
            "redis.password",
            env_name=config.redis.password_env,
            file_name=config.redis.password_file,
        )
        r = config.redis
        username = credentials.login_name(
            "redis.username", r.username, r.username_env, r.username_file
        )
        if username:
            options["username"] = username
        if config.redis.ca_file:
            options["ssl_ca_certs"] = str(cfg.resolve(config, config.redis.ca_file))
    # (`is not None`: a --url given empty, by an unset shell variable, is refused, not the default)
    url = args.url if args.url is not None else url
    stream = args.stream or stream  # (never empty: the parser refuses it)
    if isinstance(args.channel, str):  # (True for a bare --channel: the config's)
        channel = args.channel
    try:
        return asyncio.run(_tail(url, password, stream, channel, args, options))
    except KeyboardInterrupt:
        return 0


async def _tail(
    url: str,
    password: str | None,
    stream: str,
    channel: str,
    args: argparse.Namespace,
    options: dict[str, str],
) -> int:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    try:
        client = aioredis.Redis.from_url(
            url,
            password=password,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),  # `_entries`/`_published` own retries and messages
            **options,  # type: ignore[arg-type]
        )
    except ValueError as exc:  # (only --url: the config's was checked when it was loaded)
        raise ConfigError(f"--url: {exc}") from None
    where = mask_url(url)
    seen = 0
    try:
        alerts: AsyncIterator[tuple[bytes, str | None]]
        if args.channel is not None:
            alerts, name = _on_channel(_published(client, channel, where)), channel
        else:
            last = args.since if args.since is not None else await _last_id(client, stream, where)
            if args.since is None:
                print(f"listening on {stream} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            entries = _entries(client, stream, last, where, known=args.since is None)
            alerts, name = _in_stream(entries), stream
        async with stdout_reader.until_gone(sys.stdout), contextlib.aclosing(alerts) as found:
            async for raw, entry in found:
                seen += _show(raw, args.json, entry, name)
                if args.count is not None and seen >= args.count:
                    break
    finally:
        await client.aclose()
    return 0


async def _in_stream(
    entries: AsyncGenerator[tuple[str, dict[bytes, bytes]]],
) -> AsyncGenerator[tuple[bytes, str | None]]:
    """The stream's entries as (payload, entry id)."""
    async with contextlib.aclosing(entries) as found:
        async for entry, fields in found:
            yield fields.get(b"alert", b""), entry


async def _on_channel(
    payloads: AsyncGenerator[bytes],
) -> AsyncGenerator[tuple[bytes, str | None]]:
    """The channel's messages as (payload, None): they have no entry id."""
    async with contextlib.aclosing(payloads) as found:
        async for payload in found:
            yield payload, None


async def _published(client: Any, channel: str, where: str) -> AsyncGenerator[bytes]:
    """The messages published on `channel` from now on, for ever. A first subscription that
    fails raises (see `_error`); later, Redis unreachable is said once on stderr, retried with
    backoff, and once subscribed again, the gap is said (see `_say_unseen`). Each subscription
    is a pub/sub connection of its own, closed when it fails: redis-py's own reconnect would
    subscribe again without a word."""
    from redis.exceptions import NoPermissionError, RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    delays: Iterator[float] | None = None
    heard = 0.0  # when Redis last answered, wall clock (stream entry ids are its milliseconds)
    first = True
    while True:
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                if await pubsub.get_message(timeout=TIMEOUT_S) is None:
                    raise RedisTimeoutError(f"no reply to SUBSCRIBE in {TIMEOUT_S} s")
                if first:
                    print(f"listening on {channel} (Ctrl-C to stop)", file=sys.stderr, flush=True)
                elif delays is not None:
                    print(f"market-monitor: redis at {where} reachable again", file=sys.stderr)
                    _say_unseen(channel, heard)
                first, delays = False, None
                heard = time.time()
                quiet_since, pinged = time.monotonic(), False
                while True:
                    try:
                        message = await pubsub.get_message(timeout=BLOCK_MS / 1000)
                    except NoPermissionError:
                        if not pinged:
                            raise
                        # (a viewer whose ACL rule has no PING: a refusal is an answer too)
                        message = {"type": "pong"}
                    if message is not None:  # (a "pong" too: Redis answers)
                        heard, quiet_since, pinged = time.time(), time.monotonic(), False
                        if message["type"] == "message":
                            yield message["data"]
                        continue
                    quiet_s = time.monotonic() - quiet_since
                    if pinged and quiet_s > PING_S + TIMEOUT_S:
                        raise RedisTimeoutError(f"no answer to PING in {TIMEOUT_S} s")
                    if not pinged and quiet_s > PING_S:
                        await pubsub.ping()
                        pinged = True
        except RedisError as exc:
            delays = await _retry_after(exc, where, first, delays)


async def _retry_after(
    exc: Exception, where: str, first: bool, delays: Iterator[float] | None
) -> Iterator[float]:
    """After `exc` from Redis: raise it as tail's error when it came first (nothing to resume
    yet) or is no outage (a refusal); else say once that Redis is unreachable, wait the next
    backoff delay, and give the delays to go on with (None: the first of an outage)."""
    if first or not _is_unreachable(exc):
        raise _error(exc, where) from exc
    if delays is None:
        print(f"market-monitor: redis at {where} {_how(exc)}, retrying", file=sys.stderr)
        delays = Backoff(base_s=0.2, cap_s=5.0).delays()
    await asyncio.sleep(next(delays))
    return delays


def _say_unseen(channel: str, heard: float) -> None:
    """After an outage, subscribed again: say that what was published on `channel` meanwhile
    is gone for tail (pub/sub keeps nothing for a subscriber that is away), and how to read it
    from the stream, which does keep it: from `heard`, when Redis last answered."""
    since_ms = int(heard * 1000)
    print(
        f"market-monitor: alerts published on {channel} while disconnected were not seen "
        f"(pub/sub keeps none); the stream keeps them: `market-monitor tail --since {since_ms}` "
        "(with this tail's --config or --url) prints those added since Redis last answered (by "
        "this machine's clock)",
        file=sys.stderr,
        flush=True,
    )


async def _last_id(client: Any, stream: str, where: str) -> str:
    """The id of the stream's last entry ("0" when empty): live alerts are those after it, and
    a reconnect before the first one resumes there. A viewer whose ACL does not allow XREVRANGE
    (docs/security.md) gets "$", and then an outage before its first alert may skip some."""
    from redis.exceptions import NoPermissionError, RedisError

    try:
        newest: Any = await client.xrevrange(stream, count=1)
    except NoPermissionError:
        return "$"
    except RedisError as exc:
        raise _error(exc, where) from exc
    return str(newest[0][0].decode()) if newest else "0"


async def _entries(
    client: Any, stream: str, last: str, where: str, known: bool = True
) -> AsyncGenerator[tuple[str, dict[bytes, bytes]]]:
    """The stream's entries after `last`, as (id, fields), for ever. A first read that fails
    raises (see `_error`); later, Redis unreachable is said once on stderr, retried with backoff,
    and reading goes on after the last entry yielded; alerts removed from the stream during
    the outage are said too (see `_say_if_trimmed`; `known`: whether `last` is an entry's id,
    not a `--since` of the user's, which the stream may never have held)."""
    from redis.exceptions import RedisError

    delays: Iterator[float] | None = None
    first = True
    while True:
        try:
            reply: Any = await client.xread({stream: last}, block=BLOCK_MS, count=100)
        except RedisError as exc:
            delays = await _retry_after(exc, where, first, delays)
            continue
        if delays is not None:
            print(f"market-monitor: redis at {where} reachable again", file=sys.stderr)
            delays = None
            if known:
                await _say_if_trimmed(client, stream, last)
        first = False
        for _, batch in reply:
            for entry, fields in batch:
                last, known = entry, True
                yield entry.decode(), fields


async def _say_if_trimmed(client: Any, stream: str, last: str | bytes) -> None:
    """After an outage: say on stderr when the stream no longer holds entry `last` (the last
    read, or the newest at the start) while it holds later ones. The stream keeps its newest
    `maxlen` entries: those added after `last` and trimmed before this read are gone unread
    (how many, Redis does not tell a viewer), as are those a Redis restarted without its data
    lost."""
    from redis.exceptions import RedisError

    after = entry_id(last)
    if after is None or after == (0, 0):
        return
    try:
        oldest: Any = await client.xrange(stream, count=1)
    except RedisError:
        return  # (the read that follows reports it)
    first = entry_id(oldest[0][0]) if oldest else None
    if first is not None and first > after:
        shown = text(last)
        print(
            f"market-monitor: {stream} no longer holds {shown}, the last entry read: any alerts "
            f"added after it and before {first[0]}-{first[1]}, its oldest entry now, are gone "
            "unread (trimmed past [redis] maxlen, or lost by Redis)",
            file=sys.stderr,
        )


def _error(exc: Exception, where: str) -> SinkUnavailable | ConfigError:
    """Redis unreachable, or refusing for now (a failover under way, a script running: see
    `monitor.redis_errors`): SinkUnavailable (exit 69); Redis refusing us (password, ACL, a
    key of another type): ConfigError naming the URL (exit 78)."""
    if _is_unreachable(exc):
        return SinkUnavailable(f"redis at {where} {_how(exc)}: {exc}")
    return ConfigError(f"redis at {where}: {exc}")


def _is_unreachable(exc: Exception) -> bool:
    """An outage to wait out (`redis_errors.is_temporary`), not a failed login (redis-py counts
    those as connection errors too)."""
    from redis.exceptions import AuthenticationError, AuthorizationError

    from monitor.redis_errors import is_temporary

    refused = isinstance(exc, AuthenticationError | AuthorizationError)
    return is_temporary(exc) and not refused


def _how(exc: Exception) -> str:
    """How Redis is away: "unreachable", or "refusing for now" when it answers."""
    from monitor.redis_errors import REDIS_ERRORS

    return "unreachable" if isinstance(exc, REDIS_ERRORS) else "refusing for now"


def _show(raw: bytes, as_json: bool, entry_id: str | None, name: str) -> int:
    """Print the alert `raw` (entry `entry_id` of stream `name`, or a message on channel
    `name` when None); 1, or 0 for a payload that is not an alert, said in one line on stderr
    (what is wrong and its first bytes, control characters spelled out) and skipped."""
    try:
        alert = decode_alert(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        what = f"entry {entry_id} of {name}" if entry_id else f"a message on {name}"
        line = f"market-monitor: skipped {what}, not an alert ({exc}): {raw[:120]!r}"
        print(printable(line), file=sys.stderr, flush=True)
        return 0
    if as_json:
        sys.stdout.write(encode_alert(alert).decode() + "\n")
    else:
        sys.stdout.write(render(alert, entry_id))
    sys.stdout.flush()
    return 1


def render(alert: Alert, entry_id: str | None = None) -> str:
    """An alert for people, in a few lines; control characters in its words (escape sequences
    a writer to the stream could send to the terminal) shown as `\x1b`, not sent."""
    where = f"  [{entry_id}]" if entry_id else ""
    lines = [
        f"{alert.session} {alert.severity.upper():8} {alert.rule} {alert.symbol}{where}",
        f"    {alert.title}",
        f"    {alert.text}",
    ]
    if alert.history is not None and alert.history.summary:
        lines.append(f"    History: {alert.history.summary}")
    return "\n".join(printable(line) for line in lines) + "\n"
