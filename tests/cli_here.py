"""`market-monitor ARGS` run in the test's own process, for commands that end without leaving
a daemon, connection or thread behind: `config check`, `run` with a config it refuses, usage
errors, and commands that talk to Redis or a webhook and end (`silence`, `tail --count`,
`notify dead`, `backfill`), their connections closed.

A process per call costs 0.2-1 s of imports (more with the suite's workers sharing two cores);
`monitor.cli.main` called here costs milliseconds. What a user's process adds (the
`__main__` wrapper, Ctrl-C) is tested with real processes elsewhere (`tests.test_commands.cli`).
The call sees the repository root as its directory and `env` over the environment, as that
`cli` gives them; the process's environment, directory, logging and structlog set-up are put
back after it. main() runs an event loop of its own: an async test calls this in a thread
(`asyncio.to_thread`), one call at a time (output, environment and logging are the process's),
while its own loop serves nothing but what the command talks to (a webhook), never a daemon or
notifier that logs meanwhile.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout

import structlog

from monitor.cli import main
from tests.conftest import ROOT


def cli_here(
    *args: str,
    env: dict[str, str] | None = None,
    unset: Sequence[str] = (),
    entry: Callable[[list[str]], int] = main,
) -> subprocess.CompletedProcess[str]:
    """`main(ARGS)` with its standard output and error captured, as `tests.test_commands.cli`
    returns a process's (an argparse exit gives its status); `unset` variables taken out of
    the environment; `entry` another command's main, such as `monitor.notify.cli.main`
    (`python -m monitor.notify`)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    environ, cwd = dict(os.environ), os.getcwd()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog_config = structlog.get_config()
    try:
        os.environ.update(env or {})
        for name in unset:
            os.environ.pop(name, None)
        os.chdir(ROOT)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = entry(list(args))
            except SystemExit as exc:  # (argparse's usage errors)
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        root.handlers[:], root.level = handlers, level
        structlog.configure(**structlog_config)
    return subprocess.CompletedProcess(["market-monitor", *args], code, _text(out), _text(err))


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode()
