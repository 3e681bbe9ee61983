"""Raw wire messages on their way to the engine loop, decoded there in micro-batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Wire(NamedTuple):
    """Messages as received, in order: which feed, their bytes, and what to call once the engine
    has processed them (acknowledge QoS 1 MQTT messages: the broker redelivers what a crash left
    unacknowledged; and let the feed read more: its backlog of unprocessed messages is bounded)."""

    feed: str
    payloads: list[bytes]
    ack: Callable[[], object] | None = None
