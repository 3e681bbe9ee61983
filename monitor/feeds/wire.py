"""Raw wire messages on their way to the engine loop, decoded there in micro-batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Wire(NamedTuple):
    """One message as received: which feed, its bytes, and how to acknowledge it once the engine
    has processed it (QoS 1 MQTT: the broker redelivers what a crash left unacknowledged)."""

    feed: str
    payload: bytes
    ack: Callable[[], object] | None = None
