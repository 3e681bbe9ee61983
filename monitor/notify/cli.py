"""`market-monitor notify ...` and `market-monitor silence ...`: argparse wiring and entry points.

monitor/cli.py hooks these in with `add_parsers(sub)` and dispatches `notify` to `main_notify`,
`silence` to `main_silence`. `python -m monitor.notify` runs them without monitor/cli.py.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from monitor import logs
from monitor.clock import SystemClock
from monitor.errors import EX_CONFIG, EX_UNAVAILABLE, ConfigError, TransientError
from monitor.notify import config as ncfg
from monitor.notify.parsers import add_parsers
from monitor.terminal import printable

if TYPE_CHECKING:
    from monitor.notify.seen_alerts import SeenAlerts

__all__ = ["add_parsers", "main", "main_notify", "main_silence"]


def _load(args: argparse.Namespace, *, urls: bool = True) -> ncfg.NotifyConfig:
    if not getattr(args, "config", None):
        raise ConfigError("--config: a notifier config file is required")
    return ncfg.load(args.config, urls=urls)


def _default_redis() -> ncfg.RedisSection:
    """The notifier's default `[redis]`, with the `MARKET_MONITOR_NOTIFY__REDIS__*` variables
    set (the URL, the stream, the login), as a config file's would be overridden."""
    from monitor.config_env import apply_env

    raw: dict[str, Any] = {}
    environ = dict(os.environ)
    apply_env(raw, environ, ncfg.ENV_PREFIX)
    try:
        return msgspec.convert(raw.get("redis", {}), ncfg.RedisSection)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{ncfg.ENV_PREFIX}REDIS__...: {exc}") from None


def _failed(exc: ConfigError | TransientError) -> int:
    """One line on stderr and the exit code: 78 for config (and a Redis refusing us), 69 for a
    Redis that does not answer (a one-off command: the service waits for Redis instead)."""
    if isinstance(exc, ConfigError):
        print(f"market-monitor: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    print(f"market-monitor: {exc}", file=sys.stderr)
    return EX_UNAVAILABLE


def main_notify(args: argparse.Namespace) -> int:
    """`notify` (run the service), `notify test --receiver NAME`, `notify digest`, `notify
    dead list|resend`."""
    try:
        # (`dead`, `test` and `digest` resolve only the URLs of the receivers they send to:
        # `dead list` none, `test` the one it tests, `digest` the digest receivers; so the
        # other receivers' secrets, the service's, need not be set in an operator's shell)
        config = _load(args, urls=args.notify_command not in ("dead", "test", "digest"))
        # (after the config: a config error says so without the service's modules, 1.4 s)
        from monitor.notify.main import run, send_test
        from monitor.notify.service import Notifier

        logs.configure(level=config.log.level, json=config.log.json)
        if args.notify_command == "dead":
            return _dead(config, args)
        if args.notify_command == "test":
            outcome = asyncio.run(send_test(config, args.receiver))
            if outcome.ok:
                print(f"sent a test alert to {args.receiver} ({outcome.attempts} attempt(s))")
                return 0
            print(f"market-monitor: {args.receiver}: {outcome.reason}", file=sys.stderr)
            return 1
        if args.notify_command == "digest":

            async def digest() -> int:
                receivers = config.digest_receivers  # (only their secrets are needed)
                async with Notifier(config, receivers=receivers, consume=False) as notifier:
                    await notifier.reachable()  # (not joining the group: see send_test)
                    jobs = await notifier.send_digest(queue=False)
                    if not jobs:
                        print("no digest receivers: set [digest] receivers", file=sys.stderr)
                        return 1
                    failed = 0
                    for receiver, job in jobs:
                        said = await notifier.deliver_prepared(receiver, job)
                        print(f"{job.key} to {receiver}: {said}")
                        failed += said.startswith("failed")
                    return 1 if failed else 0

            return asyncio.run(digest())
        from monitor.notify.delivery import leave_hung_sends
        from monitor.systemd import notifier

        return leave_hung_sends(asyncio.run(run(config, notify=notifier())))
    except (ConfigError, TransientError) as exc:
        return _failed(exc)


def _dead(config: ncfg.NotifyConfig, args: argparse.Namespace) -> int:
    """`notify dead list [--receiver NAME]` and `notify dead resend (--id ENTRY ... | --all)
    [--receiver NAME]` (monitor/notify/dead.py). An unknown `--receiver` exits 78: for
    `resend` one not in the config, for `list` one not in the config, not `*` and with no
    letters (`dead.list_letters`). Redis away or refusing us: as `silence`. Only the URLs of
    the receivers sent to are resolved: none for `list`, for `resend` those of the letters
    it resends (their secrets must be set; the others' need not)."""
    from redis.exceptions import RedisError

    from monitor.notify import dead
    from monitor.notify.inbox import redis_failure
    from monitor.notify.service import Notifier

    resending = args.dead_command == "resend"
    if resending and not (args.ids or args.all or args.receiver):
        print("market-monitor: dead resend: say which letters: --id, --receiver or --all",
              file=sys.stderr)  # fmt: skip
        return 2  # (argparse's status for a usage error)
    if resending and args.receiver:
        config.receiver(args.receiver)  # (ConfigError when there is none)

    async def go() -> int:
        try:
            async with Notifier(config, consume=False, receivers=()) as notifier:
                if not resending:
                    for line in await dead.list_letters(notifier, args.receiver):
                        print(line)
                    return 0
                # (the receivers of the letters to resend: only their secrets are needed)
                found = await dead.letters(notifier, args.receiver)
                named = set(args.ids or [])
                chosen = {x.receiver for x in found if args.all or not named or x.key in named}
            async with Notifier(config, consume=False, receivers=chosen) as notifier:
                done = await dead.resend(notifier, args.ids or [], args.receiver, args.all)
                for line in done.lines:
                    print(line)
                if done.refused:
                    print(f"market-monitor: {done.refused}", file=sys.stderr)
                return 0 if done.ok else 1
        except RedisError as exc:
            raise redis_failure(exc, config.redis.url) from None

    return asyncio.run(go())


def main_silence(args: argparse.Namespace) -> int:
    """`silence add|list|expire`."""
    from redis.exceptions import RedisError

    from monitor.notify.inbox import redis_failure, section_client
    from monitor.notify.seen_alerts import seen_alerts
    from monitor.notify.silences import SilenceStore, new_silence, parse_duration

    configured = bool(getattr(args, "config", None))
    try:  # (without --config: the daemon's and notifier's default Redis and stream, as `tail`)
        # (its [redis] only: the receivers' secrets, the service's, need not be set here)
        redis = _load(args, urls=False).redis if configured else _default_redis()
    except ConfigError as exc:
        return _failed(exc)
    if not configured:  # (said: a silence on a Redis the notifier does not read silences nothing)
        from monitor.urls import mask_url

        print(
            f"market-monitor: silence: no --config: the default Redis {mask_url(redis.url)},"
            f" stream {redis.stream}",
            file=sys.stderr,
        )
    now = SystemClock().now()

    async def go() -> int:
        client = section_client(redis)
        store = SilenceStore(client, f"{redis.stream}:silences")
        try:
            if args.silence_command == "add":
                try:
                    duration = parse_duration(args.duration)
                except ValueError as exc:
                    print(f"market-monitor: --for: {exc}", file=sys.stderr)
                    return 2  # (argparse's status for a usage error)
                s = new_silence(
                    args.rule, args.symbol, duration, now, args.comment, getpass.getuser()
                )
                seen = await seen_alerts(client, redis.stream)
                await store.add(s)
                print(
                    f"{s.id} silences {s.rule}"
                    + (f" on {s.symbol}" if s.symbol else "")
                    + f" until {s.ends_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
                )
                _say_unmatched(s.id, args, seen)
                return 0
            if args.silence_command == "list":
                found = await store.all() if args.all else await store.active(now)
                for key, error in store.unreadable.items():
                    print(
                        printable(
                            f"market-monitor: silence {key} is unreadable ({error}): it silences"
                            f" nothing; `silence expire {key}` removes it"
                        ),
                        file=sys.stderr,
                    )
                for s in found:
                    state = "active" if s.is_active(now) else "expired"
                    line = (
                        f"{s.id}  {state:7}  {s.rule:20} {s.symbol or '*':10} "
                        f"until {s.ends_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC  "
                        f"{s.created_by}: {s.comment}"
                    )
                    print(printable(line))  # (a comment's escape sequences spelled out)
                if not found:
                    print(f"no {'' if args.all else 'active '}silences", file=sys.stderr)
                return 0
            ended = await store.expire(args.id, now)
            if ended is None:
                print(f"market-monitor: no silence {args.id}", file=sys.stderr)
                return 1
            if isinstance(ended, str):
                print(printable(f"{args.id} removed (unreadable: {ended})"))
                return 0
            print(f"{ended.id} expired")
            return 0
        except RedisError as exc:
            raise redis_failure(exc, redis.url) from None
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except (ConfigError, TransientError) as exc:
        return _failed(exc)


def _say_unmatched(silence_id: str, args: argparse.Namespace, seen: SeenAlerts | str) -> None:
    """After `silence add`: say on stderr when its rule (or symbol) matches none of the alerts
    in the stream, which a misspelt one does not (see `monitor.notify.seen_alerts`), or why
    they could not be read."""
    from monitor.notify.seen_alerts import unmatched

    if isinstance(seen, str):
        said = (
            "market-monitor: silence: --rule and --symbol not checked against the stream's"
            f" alerts, which Redis refused to read ({seen}; docs/security.md grants +xrevrange)"
        )
        print(printable(said), file=sys.stderr)
        return
    for line in unmatched(args.rule, args.symbol, seen):
        said = (
            f"market-monitor: warning: {line}. The silence is set all the same (a rule or symbol"
            f" may not have fired yet); if misspelt, `silence expire {silence_id}` ends it"
        )
        print(printable(said), file=sys.stderr)  # (the stream's words: anyone's to write)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m monitor.notify notify|silence ...` (the same sub-commands as market-monitor)."""
    p = argparse.ArgumentParser(prog="python -m monitor.notify")
    sub = p.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    args = p.parse_args(argv)
    return main_notify(args) if args.command == "notify" else main_silence(args)
