"""Counters and gauges for /metrics: a plain in-process registry, rendered as Prometheus text."""

from __future__ import annotations

import threading
from collections.abc import Iterable

LabelSet = tuple[tuple[str, str], ...]


class Counters:
    """Named counters (monotonic) and gauges (set), each with optional string labels.

    Thread-safe, because polars work may run in a worker thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, LabelSet], float] = {}
        self._gauges: dict[tuple[str, LabelSet], float] = {}
        self._help: dict[str, str] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add `value` to counter `name` with these labels."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def add(self, name: str, value: float, labels: dict[str, str]) -> None:
        """`inc` with the labels as a dict (for callers that carry them around)."""
        self.inc(name, value, **labels)

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set gauge `name` with these labels."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._gauges[key] = value

    def zero(self, name: str, **labels: str) -> None:
        """Counter `name` with these labels at 0 unless it has a value: /metrics shows it before
        its first event (a Prometheus `rate()` needs the series to exist)."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters.setdefault(key, 0.0)

    def replace(self, name: str, series: Iterable[tuple[dict[str, str], float]]) -> None:
        """Gauge `name` as exactly these series (labels, value): any other of its series goes,
        and /metrics shows the old set or the new, never a mix."""
        fresh = {(name, tuple(sorted(labels.items()))): value for labels, value in series}
        with self._lock:
            for key in [k for k in self._gauges if k[0] == name]:
                del self._gauges[key]
            self._gauges.update(fresh)

    def describe(self, name: str, text: str) -> None:
        """Attach a HELP line to `name`."""
        self._help[name] = text

    def get(self, name: str, **labels: str) -> float:
        """The current value of a counter or gauge (0 when never touched)."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            return self._counters.get(key, self._gauges.get(key, 0.0))

    def total(self, name: str) -> float:
        """The sum of counter `name` over all its label sets."""
        with self._lock:
            return sum(v for (n, _), v in self._counters.items() if n == name)

    def render(self, prefix: str = "market_monitor") -> str:
        """Prometheus text exposition format."""
        lines: list[str] = []
        with self._lock:
            items = [("counter", self._counters), ("gauge", self._gauges)]
            for kind, table in items:
                names = sorted({n for n, _ in table})
                for name in names:
                    full = f"{prefix}_{name}"
                    if name in self._help:
                        lines.append(f"# HELP {full} {self._help[name]}")
                    lines.append(f"# TYPE {full} {kind}")
                    for (n, labels), value in sorted(table.items()):
                        if n != name:
                            continue
                        lines.append(f"{full}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: LabelSet) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)
