"""Reconnect delays: exponential, capped, with full jitter. Pure: the random source is passed in."""

from __future__ import annotations

import random
from collections.abc import Iterator


class Backoff:
    """Delays for attempt 0, 1, 2, ...: `min(cap_s, base_s * factor**attempt)` scaled by jitter.

    `jitter` is the fraction of the delay that is random (0 = none, 1 = full jitter).
    """

    def __init__(
        self,
        base_s: float = 0.2,
        cap_s: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if base_s <= 0 or cap_s < base_s or factor < 1 or not 0 <= jitter <= 1:
            raise ValueError("backoff needs 0 < base_s <= cap_s, factor >= 1, 0 <= jitter <= 1")
        self.base_s = base_s
        self.cap_s = cap_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """The delay before retry number `attempt` (0-based), in seconds."""
        ceiling = min(self.cap_s, self.base_s * self.factor ** min(attempt, 64))
        return ceiling * (1 - self.jitter) + ceiling * self.jitter * self._rng.random()

    def delays(self) -> Iterator[float]:
        """An endless sequence of delays, attempt 0 first."""
        attempt = 0
        while True:
            yield self.delay(attempt)
            attempt += 1
