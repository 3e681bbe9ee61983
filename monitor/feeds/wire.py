"""Raw wire messages on their way to the engine loop, decoded there in micro-batches."""

from __future__ import annotations

from typing import NamedTuple


class Wire(NamedTuple):
    """One message as received: which feed, and its bytes."""

    feed: str
    payload: bytes
