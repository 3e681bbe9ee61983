"""The delivery log: which alerts each receiver already has, so none is sent twice; and the
dead letters: what a receiver could not be given, and why.

A Redis key per (receiver, alert id), `{stream}:notify:sent:{receiver}:{id}`, set (with a TTL)
only after a successful send and checked before every send. A digest, which every notifier of a
group builds, is also claimed before it is sent (`claim`, `{stream}:notify:sending:...`: SET NX
with an expiry), so that of two notifiers only one sends it. It lives in Redis rather than a local
file because the notifier that takes over after a crash may run on another host, and Redis
already holds the stream and the group. Reads and writes are retried until Redis answers: a send
is never made without asking, and never forgotten once made.

Dead letters are retried the same way: the stream entry stays pending (unacknowledged) until its
dead letter is written, so a Redis outage while a delivery gives up loses nothing and does not
stop the notifier."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, RedisError

from monitor.clock import Clock
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import Alert, encode_alert
from monitor.redis_errors import is_temporary

RETRY_CAP_S = 30.0
_RETRY = Backoff(base_s=0.4, cap_s=RETRY_CAP_S, jitter=0)  # 0.4 s, 0.8 s, ... 30 s
DEAD_MAXLEN = 10_000  # the default of `[redis] dead_maxlen`
T = TypeVar("T")


async def retrying(op: Callable[[], Awaitable[T]], log: Any, event: str) -> T:
    """`op()` until Redis answers, logging `event` and backing off (capped at RETRY_CAP_S).

    For writes that must happen before a stream entry may be acknowledged: giving up would
    either lose the record or crash the notifier, while waiting only delays this receiver (the
    caller's task is cancelled at shutdown, leaving the entry pending for the next start).
    Redis refusing for now (out of memory, read-only...: `is_temporary`) is waited out too."""
    attempt = 0
    while True:
        try:
            return await op()
        except RedisError as exc:
            if not is_temporary(exc):
                raise
            log.warning(event, error=f"{type(exc).__name__}: {exc}", attempt=attempt + 1)
            await asyncio.sleep(_RETRY.delay(attempt))
            attempt += 1


class DeliveryLog:
    """`sent(receiver, ids)` and `mark(receiver, ids)` on one stream's delivery log."""

    def __init__(self, redis: aioredis.Redis, stream: str, ttl_s: int, log: Any) -> None:
        self._redis = redis
        self._stream = stream
        self._ttl_s = ttl_s
        self._log = log

    def key(self, receiver: str, alert_id: str) -> str:
        """The key of one alert on one receiver."""
        return f"{self._stream}:notify:sent:{receiver}:{alert_id}"

    async def sent(self, receiver: str, ids: list[str]) -> list[bool]:
        """Per id, whether `receiver` already has it."""

        async def read() -> list[bool]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for alert_id in ids:
                    pipe.exists(self.key(receiver, alert_id))
                return [bool(x) for x in await pipe.execute()]

        return await retrying(read, self._log, "delivery_log_unavailable")

    async def mark(self, receiver: str, ids: list[str]) -> None:
        """Record that `receiver` has these ids (after the provider accepted the message)."""

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for alert_id in ids:
                    pipe.set(self.key(receiver, alert_id), "1", ex=self._ttl_s)
                await pipe.execute()

        await retrying(write, self._log, "delivery_log_unavailable")

    def claim_key(self, receiver: str, alert_id: str) -> str:
        """The key of one notifier's claim to send one alert (the digest) to one receiver."""
        return f"{self._stream}:notify:sending:{receiver}:{alert_id}"

    async def claim(self, receiver: str, alert_id: str, ttl_s: int) -> bool:
        """Claim the send of `alert_id` to `receiver` across notifiers: False while another
        holds it. The claim lapses after `ttl_s` (its holder died mid-send) unless released."""
        key, token = self.claim_key(receiver, alert_id), uuid.uuid4().hex

        async def take() -> bool:
            if await self._redis.set(key, token, nx=True, ex=ttl_s):
                return True
            return bool(await self._redis.get(key) == token.encode())  # (set, reply lost)

        return await retrying(take, self._log, "delivery_log_unavailable")

    async def release(self, receiver: str, alert_id: str) -> None:
        """Give up a claim (the send is over), so a retry or another notifier may take it."""

        async def drop() -> None:
            await self._redis.delete(self.claim_key(receiver, alert_id))

        await retrying(drop, self._log, "delivery_log_unavailable")


def told(alerts: Sequence[Alert]) -> dict[str, Any]:
    """What a log line about a message says of its alerts besides their ids, so that on-call
    can grep a rule or a symbol ("did the IWM surge go out?"): `rule` and `symbol` for one
    alert, `alerts`, the (rule, symbol) of each, for a group."""
    if len(alerts) == 1:
        return {"rule": alerts[0].rule, "symbol": alerts[0].symbol}
    return {"alerts": [(a.rule, a.symbol) for a in alerts]}


class DeadLetters:
    """Alerts that could not be delivered, XADDed to `stream` (capped at about `maxlen`
    entries) with the receiver, reason, attempts and the payload; counted and logged. A letter
    whose XADD trims older ones says how many (the warning `dead_letters_trimmed`, and a
    counter). `notify dead` lists them (`letters`) and removes those re-sent (`remove`):
    monitor/notify/dead.py."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        counters: Counters,
        log: Any,
        clock: Clock,
        maxlen: int = DEAD_MAXLEN,
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._counters = counters
        self._log = log
        self._clock = clock
        self._maxlen = maxlen
        self._count_trims = True  # (False once Redis refuses XINFO STREAM: see `_xadd`)

    async def add(
        self,
        entry: str | None,
        alert: Alert | None,
        receiver: str,
        reason: str,
        attempts: int,
        fields: dict[bytes, bytes] | None = None,
        accepted: Sequence[str] = (),
    ) -> None:
        """Dead-letter `alert` (or, when it could not be decoded, the entry's raw `fields`),
        waiting for Redis if it is down: the caller acknowledges the entry only after this. A
        letter Redis refuses for good (the dead stream's key holds another type, an ACL without
        XADD on it) is logged whole instead (`dead_letter_unwritten`, the alert's payload
        included), so that neither the notifier stops nor the entry blocks its reader.
        `accepted`: the receiver's targets (chats, channels) that took the alert all the same,
        the field `accepted` (a JSON list; absent when none), which `dead resend` skips."""
        payload = (
            encode_alert(alert)
            if alert is not None
            else msgspec.json.encode(
                {
                    k.decode(errors="replace"): v.decode(errors="replace")
                    for k, v in (fields or {}).items()
                }
            )
        )
        letter: dict[Any, Any] = {
            "id": alert.id if alert is not None else "",
            "entry": entry or "",
            "receiver": receiver,
            "reason": reason,
            "attempts": attempts,
            "ts": self._clock.now().isoformat(),
            "alert": payload,
        }
        if accepted:
            letter["accepted"] = msgspec.json.encode(list(accepted))

        try:
            trimmed = await retrying(
                lambda: self._xadd(letter), self._log, "dead_letters_unavailable"
            )
        except RedisError as exc:  # (WRONGTYPE, NOPERM: no retry writes it; the log keeps it)
            trimmed = 0
            self._log.error(
                "dead_letter_unwritten",
                stream=self._stream,
                error=f"{type(exc).__name__}: {exc}",
                letter={k: v for k, v in letter.items() if k != "alert"},
                alert=payload.decode(errors="replace"),
            )
        if trimmed:
            self._counters.inc("notify_dead_letters_trimmed", trimmed)
            self._log.warning(
                "dead_letters_trimmed",
                stream=self._stream,
                count=trimmed,
                maxlen=self._maxlen,
                hint="the oldest dead letters are gone: resend or remove letters "
                "(`notify dead`), or raise [redis] dead_maxlen",
            )
        self._counters.inc("notify_dead_lettered", receiver=receiver)
        self._log.error(
            "alert_dead_lettered",
            receiver=receiver,
            id=alert.id if alert else None,
            **(told([alert]) if alert is not None else {"rule": None, "symbol": None}),
            entry=entry,
            reason=reason,
            attempts=attempts,
            **({"accepted": list(accepted)} if accepted else {}),
        )

    async def _xadd(self, letter: dict[Any, Any]) -> int:
        """XADD `letter`, trimming the stream to about `maxlen`; how many older letters that
        trimmed: the stream's length before and after (XINFO STREAM), in one round trip. Not a
        transaction: a MULTI refused (a narrower ACL, a proxy) would have the XADD run and then
        fail the whole, which a retry would add twice; another notifier's letter in between
        makes the count short by one, no more. A user without XINFO adds letters all the same,
        uncounted (`dead_letters_trim_check_refused`, once)."""
        count = self._count_trims
        async with self._redis.pipeline(transaction=False) as pipe:
            if count:
                pipe.xinfo_stream(self._stream)
            pipe.xadd(self._stream, letter, maxlen=self._maxlen, approximate=True)
            if count:
                pipe.xinfo_stream(self._stream)
            results = await pipe.execute(raise_on_error=False)
        added = results[1] if count else results[0]
        if isinstance(added, Exception):
            raise added
        if not count:
            return 0
        before, after = results[0], results[2]
        refused = [r for r in (before, after) if isinstance(r, NoPermissionError)]
        if refused:
            self._count_trims = False
            self._log.warning("dead_letters_trim_check_refused", error=str(refused[0]))
            return 0
        if isinstance(after, Exception):
            return 0  # (the letter is in: what it trimmed is not known)
        length = 0 if isinstance(before, Exception) else int(before["length"])  # (no stream)
        return max(0, length + 1 - int(after["length"]))

    async def letters(self) -> list[tuple[str, dict[bytes, bytes]]]:
        """Every dead letter, oldest first: (its id in the dead stream, its fields)."""
        found: list[tuple[str, dict[bytes, bytes]]] = []
        start = "-"
        while True:
            page: Any = await self._redis.xrange(self._stream, min=start, count=1000)
            found += [(key.decode(), fields) for key, fields in page]
            if len(page) < 1000:
                return found
            start = "(" + found[-1][0]

    async def accepted_since(
        self, key: str, fields: Mapping[bytes, bytes], accepted: Sequence[str]
    ) -> str:
        """Replace the letter `key` (its `fields`) by one naming the targets in `accepted` (a
        resend reached more of them before failing again); the new letter's id. XADD and XDEL
        in one transaction: both or neither (an ACL refusing either queues an error, and EXEC
        then runs none), so a letter is never lost nor doubled."""
        letter: dict[Any, Any] = {**fields, b"accepted": msgspec.json.encode(sorted(accepted))}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self._stream, letter, maxlen=self._maxlen, approximate=True)
            pipe.xdel(self._stream, key)
            added, _ = await pipe.execute()
        return str(added.decode() if isinstance(added, bytes) else added)

    async def remove(self, keys: Sequence[str]) -> None:
        """Delete these letters from the dead stream (XDEL)."""
        if keys:
            await self._redis.xdel(self._stream, *keys)
