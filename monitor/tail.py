"""`market-monitor tail`: alerts from the Redis stream as they come, or since an entry id.

It reads the stream rather than the pub/sub channel so that nothing is lost to an outage: when
Redis goes away (a restart, a network cut) it says so once, retries with backoff and reads on
after the last entry it printed, skipping and repeating nothing. At start, an unreachable Redis
is an error (exit 69): there is nothing yet to resume.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import msgspec

from monitor.core.backoff import Backoff
from monitor.core.model import Alert, decode_alert, encode_alert
from monitor.errors import ConfigError, SinkUnavailable
from monitor.streams import entry_id, text
from monitor.urls import mask_url

DEFAULT_URL = "redis://127.0.0.1:6379/0"
BLOCK_MS = 1000
TIMEOUT_S = 5.0  # per command (above BLOCK_MS): a Redis that stops answering is retried too


def tail(args: argparse.Namespace) -> int:
    """Entry point of the `tail` command."""
    url, stream = DEFAULT_URL, "market-monitor:alerts"
    password: str | None = None
    options: dict[str, str] = {}
    if args.config:
        from monitor import config as cfg
        from monitor import credentials

        config = cfg.load(args.config)
        url, stream = config.redis.url, config.redis.stream
        password = credentials.secret(
            "redis.password",
            env_name=config.redis.password_env,
            file_name=config.redis.password_file,
        )
        if config.redis.username:
            options["username"] = config.redis.username
        if config.redis.ca_file:
            options["ssl_ca_certs"] = str(cfg.resolve(config, config.redis.ca_file))
    # (`is not None`: a --url given empty, by an unset shell variable, is refused, not the default)
    url = args.url if args.url is not None else url
    stream = args.stream or stream  # (never empty: the parser refuses it)
    try:
        return asyncio.run(_tail(url, password, stream, args, options))
    except KeyboardInterrupt:
        return 0


async def _tail(
    url: str,
    password: str | None,
    stream: str,
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
            retry=Retry(NoBackoff(), 0),  # `_entries` owns retries, their backoff and messages
            **options,  # type: ignore[arg-type]
        )
    except ValueError as exc:  # (only --url: the config's was checked when it was loaded)
        raise ConfigError(f"--url: {exc}") from None
    where = mask_url(url)
    seen = 0
    try:
        last = args.since if args.since is not None else await _last_id(client, stream, where)
        if args.since is None:
            print(f"listening on {stream} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        entries = _entries(client, stream, last, where, known=args.since is None)
        async with contextlib.aclosing(entries) as found:
            async for entry_id, fields in found:
                seen += _show(fields.get(b"alert", b""), args.json, entry_id)
                if args.count is not None and seen >= args.count:
                    break
    finally:
        await client.aclose()
    return 0


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
            if first or not _is_unreachable(exc):
                raise _error(exc, where) from exc
            if delays is None:
                print(f"market-monitor: redis at {where} unreachable, retrying", file=sys.stderr)
                delays = Backoff(base_s=0.2, cap_s=5.0).delays()
            await asyncio.sleep(next(delays))
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
    """Redis unreachable: SinkUnavailable (exit 69); Redis refusing us (password, ACL, a key of
    another type): ConfigError naming the URL (exit 78)."""
    if _is_unreachable(exc):
        return SinkUnavailable(f"redis at {where} unreachable: {exc}")
    return ConfigError(f"redis at {where}: {exc}")


def _is_unreachable(exc: Exception) -> bool:
    """A refused, lost or timed-out connection (not a failed login: redis-py counts those as
    connection errors too)."""
    from redis.exceptions import AuthenticationError, AuthorizationError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    refused = isinstance(exc, AuthenticationError | AuthorizationError)
    return isinstance(exc, RedisConnectionError | RedisTimeoutError) and not refused


def _show(raw: bytes, as_json: bool, entry_id: str | None) -> int:
    try:
        alert = decode_alert(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        print(f"(not an alert: {raw[:120]!r})", file=sys.stderr)
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
    return "\n".join(_CONTROL.sub(_shown, line) for line in lines) + "\n"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _shown(found: re.Match[str]) -> str:
    """A control character as its escape: `\x1b`."""
    return f"\\x{ord(found.group()):02x}"
