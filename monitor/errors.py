"""The exception tree of market-monitor.

```
MonitorError
├── ConfigError        bad config or missing secret; the message names the field path (exit 78)
├── DataError          a history file that cannot be read; names file, line and column (exit 65)
├── TransientError     retried with backoff by the adapter that raised it
│   ├── FeedDisconnected
│   └── SinkUnavailable
├── DeliveryError      one alert on one channel failed for good: logged, counted, dead-lettered
├── StoreError         (monitor.store) a store file that cannot be read or written (exit 74)
│   └── StoreLocked    another process holds the store (exit 75)
└── OutboxError        (monitor.alerts.outbox) the outbox cannot be written (exit 74)
```

Bad input on a live stream is not an exception: it becomes a `Rejection` value, counted and logged.
"""

from __future__ import annotations

EX_USAGE = 64  # sysexits: the command was used incorrectly
EX_DATAERR = 65
EX_UNAVAILABLE = 69  # a service the command needs did not answer
EX_OSERR = 71  # the system refused a resource: the daemon's [http] port (in use: restarted)
EX_CANTCREAT = 73  # an output file cannot be created (replay's --report)
EX_IOERR = 74
EX_TEMPFAIL = 75  # try again later (another process holds the store)
EX_CONFIG = 78


class MonitorError(Exception):
    """Base of every error market-monitor raises on purpose."""


class ConfigError(MonitorError):
    """Bad configuration or a missing secret; the message names the field path."""


class DataError(MonitorError):
    """A history file that cannot be read as bars."""

    def __init__(
        self, path: str, message: str, *, line: int | None = None, column: str | None = None
    ):
        where = path
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.column = column


class TransientError(MonitorError):
    """A failure the adapter that raised it retries with backoff."""


class FeedDisconnected(TransientError):
    """A feed lost its connection (broker restart, network, provider cut us off)."""


class SinkUnavailable(TransientError):
    """Redis (or another sink) cannot take alerts right now."""


class DeliveryError(MonitorError):
    """One alert on one channel failed for good. `accepted`: the targets of the channel (the
    chats or channels of one receiver URL) that took the message before it failed."""

    accepted: tuple[str, ...] = ()
