"""Rejections are counted always and logged at most once per reason per interval, with how many
there were since the last line for that reason: counted, logged, never silent, never a flood."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from monitor.core.counters import Counters
from monitor.core.model import Rejection

# Reasons that are the market's normal traffic, not a fault: logged at info, not warning.
ROUTINE = frozenset({"trade_condition"})


class RejectionLog:
    """Counts rejections under `counter` (labels `reason` plus `labels`) and logs `tick_rejected`
    on `log`, rate-limited per reason to one line every `interval_s` of `clock()` seconds."""

    def __init__(
        self,
        log: Any,
        counters: Counters,
        *,
        counter: str,
        interval_s: float,
        clock: Callable[[], float],
        **labels: str,
    ) -> None:
        self._log = log
        self._counters = counters
        self._counter = counter
        self._interval_s = interval_s
        self._clock = clock
        self._labels = labels
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    def record(self, rejections: Iterable[Rejection], *, log: bool = True) -> None:
        """Count the rejections by reason; log the first of a reason (with an example), then at
        most one line per reason per interval. `log=False` counts only (rejections another
        RejectionLog, a feed's, has logged already)."""
        by_reason: dict[str, list[Rejection]] = {}
        for rejection in rejections:
            by_reason.setdefault(rejection.reason, []).append(rejection)
        if not by_reason:
            return
        now = self._clock()
        for reason, found in by_reason.items():
            self._counters.add(self._counter, float(len(found)), {"reason": reason, **self._labels})
            if not log:
                continue
            pending = self._unlogged.get(reason, 0) + len(found)
            last = self._logged_at.get(reason)
            if last is not None and now - last < self._interval_s:
                self._unlogged[reason] = pending
                continue
            self._unlogged[reason] = 0
            self._logged_at[reason] = now
            example = found[0]
            self._say(reason)(
                "tick_rejected",
                reason=reason,
                count=pending,
                symbol=example.symbol,
                raw=(example.raw or "")[:200],
            )

    def _say(self, reason: str) -> Any:
        """The log level of `reason`'s lines: info for ROUTINE reasons, else warning."""
        return self._log.info if reason in ROUTINE else self._log.warning

    def flush_due(self) -> None:
        """Log the rejections counted since their reason was last logged, for the reasons whose
        interval has passed: called periodically, so that the rest of a burst is said within an
        interval of it, not only when the reason comes again (or at the stop)."""
        now = self._clock()
        for reason, count in self._unlogged.items():
            if count and now - self._logged_at.get(reason, now) >= self._interval_s:
                self._say(reason)("tick_rejected", reason=reason, count=count)
                self._logged_at[reason] = now
                self._unlogged[reason] = 0

    def flush(self) -> None:
        """Log the rejections counted since their reason was last logged."""
        for reason, count in self._unlogged.items():
            if count:
                self._say(reason)("tick_rejected", reason=reason, count=count)
                self._logged_at[reason] = self._clock()
        self._unlogged.clear()
