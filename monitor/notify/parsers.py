"""The `notify` and `silence` sub-command parsers, apart from their entry points in
monitor/notify/cli.py: building the main parser must not import what running them needs
(structlog, asyncio, the notifier config: a tenth of a second before every `replay`)."""

from __future__ import annotations

import argparse


def _config_arg(p: argparse.ArgumentParser, *, top: bool) -> None:
    # `--config` is accepted before or after the sub-command (`notify test --config F ...`).
    if top:
        p.add_argument("--config", help="notifier config TOML")
    else:
        p.add_argument("--config", help="notifier config TOML", default=argparse.SUPPRESS)


def text(value: str) -> str:
    """Text that goes to Redis or a terminal: bytes that are not UTF-8 (the shell passes them
    as they are) are refused, not a UnicodeEncodeError traceback when they are sent."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not UTF-8 text: {value!a}") from None
    return value


def _pattern(value: str) -> str:
    # (An unset shell variable: an empty --rule matches nothing, an empty --symbol was listed
    # as `*`: neither is what was meant.)
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text(value)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `notify` and `silence` sub-commands to the main parser's subparsers."""
    n = sub.add_parser("notify", help="deliver alerts from the Redis stream to chat and email")
    _config_arg(n, top=True)
    nsub = n.add_subparsers(dest="notify_command")
    t = nsub.add_parser("test", help="send a sample alert to one receiver")
    _config_arg(t, top=False)
    t.add_argument("--receiver", required=True, metavar="NAME")
    d = nsub.add_parser("digest", help="send today's digest now")
    _config_arg(d, top=False)
    dead = nsub.add_parser("dead", help="list or re-send the alerts a receiver could not be given")
    _config_arg(dead, top=False)
    dsub = dead.add_subparsers(dest="dead_command", required=True)
    dl = dsub.add_parser("list", help="list the dead letters, oldest first")
    _config_arg(dl, top=False)
    dl.add_argument("--receiver", metavar="NAME", help="only this receiver's")
    dr = dsub.add_parser("resend", help="re-send dead letters; those that go are removed")
    _config_arg(dr, top=False)
    which = dr.add_mutually_exclusive_group()
    which.add_argument(
        "--id", dest="ids", action="append", metavar="ENTRY", help="a letter, as listed (repeat)"
    )
    which.add_argument("--all", action="store_true", help="every letter (of --receiver)")
    dr.add_argument("--receiver", metavar="NAME", help="only this receiver's letters")

    s = sub.add_parser("silence", help="silence alerts of a rule (kept in Redis)")
    _config_arg(s, top=True)
    ssub = s.add_subparsers(dest="silence_command", required=True)
    a = ssub.add_parser("add", help="add a silence")
    _config_arg(a, top=False)
    a.add_argument("--rule", required=True, type=_pattern, help="rule id (glob patterns allowed)")
    a.add_argument("--symbol", type=_pattern, help="only this symbol (glob patterns allowed)")
    a.add_argument("--for", dest="duration", required=True, help="30m, 2h, 1d, ... (at most 366d)")
    a.add_argument("--comment", type=text, default="")
    ls = ssub.add_parser("list", help="list silences")
    _config_arg(ls, top=False)
    ls.add_argument("--all", action="store_true", help="include expired ones")
    e = ssub.add_parser("expire", help="end a silence now")
    _config_arg(e, top=False)
    e.add_argument("id", type=text)
