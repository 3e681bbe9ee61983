"""Which Redis errors pass by themselves, for everything that talks to Redis and waits them
out (the notifier, `tail`): Redis unreachable (refused, lost, timed out, still loading), or
answering and refusing for now (out of memory, read-only after a failover, too few replicas, a
failed snapshot, a script running...). Not a refused login or command, nor a key of another
type: no wait fixes those."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)  # unreachable (LOADING is one too)
# Redis answers but refuses for now: out of memory (OOM), a replica after a failover
# (READONLY), too few replicas (NOREPLICAS), a failed snapshot (MISCONF), a script running
# (BUSY), a replica without its master (MASTERDOWN), a cluster resharding (TRYAGAIN), a blocked
# read ended by a failover (UNBLOCKED ... state changed). Each passes without anyone touching
# the notifier (or `tail`), so each is waited out as an outage is.
REFUSED_FOR_NOW = (OutOfMemoryError, ReadOnlyError, MasterDownError, TryAgainError)
REFUSAL_PREFIXES = ("OOM", "READONLY", "NOREPLICAS", "MISCONF", "BUSY ", "MASTERDOWN", "TRYAGAIN")


def is_temporary(exc: BaseException) -> bool:
    """Whether a Redis error passes by itself: Redis unreachable, or refusing for now
    (REFUSED_FOR_NOW). Not a refused login or command, nor a key of another type."""
    if isinstance(exc, REDIS_ERRORS + REFUSED_FOR_NOW):
        return True
    if not isinstance(exc, ResponseError):
        return False
    said = _reply(exc)
    return said.startswith(REFUSAL_PREFIXES) or (
        said.startswith("UNBLOCKED") and "state changed" in said
    )


def _reply(exc: ResponseError) -> str:
    """Redis's error reply, without the `Command # 1 (...) of pipeline caused error: ` that
    redis-py puts before it for a command of a pipeline."""
    said = str(exc)
    _, cut, reply = said.partition(" of pipeline caused error: ")
    return reply.lstrip("('\"") if cut else said
