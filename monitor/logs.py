"""structlog set-up: JSON lines for the service, a console renderer on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(*, level: str = "info", json: bool | None = None) -> None:
    """Configure structlog (and stdlib logging) once for the process.

    `json=None` picks JSON when stderr is not a terminal.
    """
    use_json = (not sys.stderr.isatty()) if json is None else json
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries' own warnings (apprise, APScheduler, asyncio, paho) go out as the same lines:
    # a plain-text line among JSON ones stops `jq` reading the rest of the journal.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*processors, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # (libraries' info lines are theirs to chatter: warnings up, or the configured level if higher;
    # the handler too, for a library logger set lower, as apprise's is while a send runs to
    # capture its reasons: monitor/notify/apprise_reasons.py)
    root.setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    handler.setLevel(root.level)


def get(name: str) -> Any:
    """A logger bound to a component name."""
    return structlog.get_logger(component=name)
