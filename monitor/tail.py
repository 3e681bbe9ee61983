"""`market-monitor tail`: alerts live from the Redis channel, or from the stream since an id."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from monitor.core.model import Alert, decode_alert, encode_alert
from monitor.errors import ConfigError

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def tail(args: argparse.Namespace) -> int:
    """Entry point of the `tail` command."""
    url, channel, stream = DEFAULT_URL, "market-monitor:alerts", "market-monitor:alerts"
    password: str | None = None
    options: dict[str, str] = {}
    if args.config:
        from monitor import config as cfg

        config = cfg.load(args.config)
        url, channel, stream = config.redis.url, config.redis.channel, config.redis.stream
        password = cfg.secret(
            "redis.password",
            env_name=config.redis.password_env,
            file_name=config.redis.password_file,
        )
        if config.redis.username:
            options["username"] = config.redis.username
        if config.redis.ca_file:
            options["ssl_ca_certs"] = str(cfg.resolve(config, config.redis.ca_file))
    url = args.url or url
    try:
        return asyncio.run(_tail(url, password, channel, stream, args, options))
    except KeyboardInterrupt:
        return 0


async def _tail(
    url: str,
    password: str | None,
    channel: str,
    stream: str,
    args: argparse.Namespace,
    options: dict[str, str],
) -> int:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(url, password=password, **options)  # type: ignore[arg-type]
    seen = 0
    try:
        if args.since is not None:
            last = args.since
            while args.count is None or seen < args.count:
                reply: Any = await client.xread({stream: last}, block=1000, count=100)
                for _, entries in reply:
                    for entry_id, fields in entries:
                        last = entry_id
                        seen += _show(fields.get(b"alert", b""), args.json, entry_id.decode())
                        if args.count is not None and seen >= args.count:
                            return 0
        else:
            pubsub = client.pubsub()
            await pubsub.subscribe(channel)
            print(f"listening on {channel} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                seen += _show(message["data"], args.json, None)
                if args.count is not None and seen >= args.count:
                    break
            await pubsub.aclose()  # type: ignore[no-untyped-call]
    except RedisError as exc:
        raise ConfigError(f"redis {url.split('@')[-1]}: {exc}") from None
    finally:
        await client.aclose()
    return 0


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
    """An alert for people, in a few lines."""
    where = f"  [{entry_id}]" if entry_id else ""
    lines = [
        f"{alert.session} {alert.severity.upper():8} {alert.rule} {alert.symbol}{where}",
        f"    {alert.title}",
        f"    {alert.text}",
    ]
    if alert.history is not None and alert.history.summary:
        lines.append(f"    History: {alert.history.summary}")
    return "\n".join(lines) + "\n"
