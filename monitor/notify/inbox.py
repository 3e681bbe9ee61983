"""The notifier's inbox: its consumer in the alert stream's consumer group. Entries come in
(read, or claimed from a notifier that died) and go out acknowledged; what happens in between
is routing (monitor/notify/service.py) and delivery (monitor/notify/dispatch.py). Apart from
them because this is the Redis protocol that makes delivery exactly once per channel:

- Alerts are read with XREADGROUP; an entry is XACKed only when every receiver it was routed to
  has it (`Inbox.complete`), or at once when it goes to none (`Inbox.ack`).
- Alerts trimmed from the stream before the group read them (a notifier stopped for longer
  than the stream holds) are counted and logged (monitor/notify/trimming.py).
- While an entry waits (grouping, quiet hours, retries) the notifier re-claims it every
  `claim_interval_s` (XCLAIM JUSTID, which resets its idle time), so a live notifier's entries are
  never idle for `claim_idle_s`. A notifier that died stops doing that: another takes its
  entries over with XAUTOCLAIM and delivers them.

Redis faults: at start, an unreachable Redis, or one refusing writes for now (out of memory,
read-only...: `ledger.is_temporary`), is `SinkUnavailable` (exit 69) and a refused login or
command a `ConfigError` (exit 78), see `redis_failure`. Once running, reads wait and retry;
the XACK is retried until Redis answers (monitor/notify/ledger.py `retrying`), so an outage
delays but never loses or crashes. A stream or consumer group deleted under us (or lost with a
Redis restarted empty) is created again, never at `start` ("$"): `Inbox._recreate`.

The stream key replaced by a key of another type while running (`DEL` then `SET`): reading
waits and retries as in an outage, logging the error `notify_stream_wrong_type` (the key, its
type, what to do) at each retry, backing off to 30 s, and /healthz says down
(`Inbox.stream_problem`); the daemon's XADD is refused meanwhile (its outbox keeps the
alerts). Once the key is a stream again (deleted, then written by the daemon), the group is
created again and reading goes on. The entries read before are gone with the stream they were
in: their XACK, refused, is dropped (logged). At start the same key is a config error naming
the key (exit 78): `wrong_type_error`.

At a clean stop the notifier's consumer leaves the group (XGROUP DELCONSUMER) if it holds no
pending entry: with the default `hostname-pid` name every restart added one to `XINFO
CONSUMERS`, and nothing removed them. The check and the delete are one try (WATCH on the
stream, XPENDING of this consumer, MULTI/EXEC): a stream changed in between (an XADD, a trim)
aborts it, and it is tried again; a consumer holding entries stays, for another notifier's
XAUTOCLAIM. The WATCH does not see an entry handed to this consumer in between (XREADGROUP,
XCLAIM and XAUTOCLAIM do not touch the key for WATCH, Redis 7.0): only a process reading under
the same consumer name could do that (our own reader and claimer have stopped; other notifiers
claim under their own names), so two notifiers must not share a `consumer` name (one starting
before the other has stopped: its entries read in that moment could go with the delete).
`Inbox.leave`.

A notifier killed (kill -9, a crash, the machine lost) does not leave, nor does one that stops
holding entries (another claims them later, and its consumer then holds none): so at start the
notifier sweeps the group, deleting every other consumer that holds no pending entry and has
been idle (XINFO CONSUMERS) longer than `claim_idle_s`, each checked and deleted in the same
WATCH transaction as `leave`. A consumer holding entries is never deleted; one of a live
notifier is idle for `block_ms` at most and is kept (and were it deleted, holding nothing, its
next read would make it again). `Inbox.sweep`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
    WatchError,
)

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.credentials import login_name, secret
from monitor.errors import ConfigError, SinkUnavailable
from monitor.notify.config import NotifyConfig, RedisSection
from monitor.notify.grouping import Batch
from monitor.notify.ledger import retrying
from monitor.notify.trimming import TrimWatch
from monitor.redis_errors import REDIS_ERRORS, is_temporary
from monitor.streams import EntryId, entry_id, text
from monitor.urls import mask_url
from monitor.waiting import raise_if_cancelled, wait_any

Entries = Sequence[tuple[bytes, dict[bytes, bytes]]]  # (entry id, fields), as XREADGROUP gives
SOCKET_TIMEOUT_S = 10.0  # a Redis that takes the connection but does not answer: an outage
BLOCK_MARGIN_S = 5.0  # past `block_ms`, how long a blocked read's answer may take
LEAVE_S = 5.0  # stopping: how long deleting our consumer from the group may take
LEAVE_TRIES = 5  # ... and how many times the stream may change under the check
# A read that failed (Redis away, the stream key of another type) is tried again after 1 s,
# doubling to 30 s, however many failed in a row (an exponent left to grow overflowed a float
# after 1,024 of them: an outage of eight and a half hours stopped the notifier).
_READ_RETRY = Backoff(base_s=1.0, cap_s=30.0, jitter=0.0)
SWEEP_S = 5.0  # starting: how long deleting the idle consumers of others may take


def redis_client(config: NotifyConfig, environ: dict[str, str] | None = None) -> aioredis.Redis:
    """A client for the configured Redis (password from `password_env` / `password_file`)."""
    return section_client(config.redis, environ)


def section_client(r: RedisSection, environ: dict[str, str] | None = None) -> aioredis.Redis:
    """A client for the Redis of a `[redis]` section: a command unanswered for 10 s (for a read
    blocked `block_ms`, that plus 5 s) is an outage."""
    password = secret(
        "redis.password", env_name=r.password_env, file_name=r.password_file, environ=environ
    )
    kwargs: dict[str, Any] = {
        # (a blocked XREADGROUP answers after `block_ms`: a timeout shorter than that took
        # every idle read for an outage, logged and reconnected every ~11 s)
        "socket_timeout": max(SOCKET_TIMEOUT_S, r.block_ms / 1000 + BLOCK_MARGIN_S),
        "socket_connect_timeout": 5.0,
    }
    if password is not None:
        kwargs["password"] = str(password)
    username = login_name("redis.username", r.username, r.username_env, r.username_file, environ)
    if username:
        kwargs["username"] = username
    if r.ca_file:
        kwargs["ssl_ca_certs"] = r.ca_file
    return aioredis.Redis.from_url(r.url, **kwargs)


def redis_failure(exc: RedisError, url: str) -> SinkUnavailable | ConfigError:
    """What a command that cannot start on Redis reports: unreachable (refused, lost, timed out)
    or refusing for now (out of memory, read-only, too few replicas...) is SinkUnavailable,
    exit 69, worth a retry later; a refused login or command (password, ACL,
    a key of another type) is a ConfigError, exit 78, which no restart fixes."""
    where = mask_url(url)
    if isinstance(exc, AuthenticationError | AuthorizationError):
        return ConfigError(
            f"redis at {where} refused the login (check [redis] password_env / password_file): "
            f"{exc}"
        )
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # (no retry makes the certificate trusted)
        return ConfigError(
            f"redis at {where}: its TLS certificate is not trusted (set [redis] ca_file to the "
            f"CA that signed it): {exc}"
        )
    if is_temporary(exc):  # (unreachable, or refusing for now: out of memory, read-only...)
        said = "unreachable" if isinstance(exc, REDIS_ERRORS) else "refusing for now"
        return SinkUnavailable(f"redis at {where} {said}: {exc}")
    return ConfigError(f"redis at {where}: {exc}")


def read_retry_s(failures: int) -> float:
    """How long the reader waits after the `failures`-th failed read in a row (1 s, 2 s, ...
    30 s at most, for as long as the failures last)."""
    return _READ_RETRY.delay(failures - 1)


def is_wrong_type(exc: RedisError) -> bool:
    """Whether Redis says a key holds another type (`WRONGTYPE ...`)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE")


async def key_type(redis: aioredis.Redis, key: str) -> str:
    """What `key` holds (TYPE), or "another type" when Redis will not say."""
    try:
        return text(await redis.type(key)) or "another type"
    except RedisError:
        return "another type"


def wrong_type_hint(stream: str) -> str:
    """What to do about a stream key that holds another type."""
    return (
        f"delete the key {stream!r} (redis-cli DEL) if nothing needs it: the daemon writes the "
        f"stream again with its next alert; or set [redis] stream (notify.toml and the "
        f"daemon's config alike) to another key"
    )


async def wrong_type_error(redis: aioredis.Redis, stream: str, url: str) -> ConfigError:
    """The config error of a stream key that holds another type, naming the key."""
    held = await key_type(redis, stream)
    return ConfigError(
        f"redis at {mask_url(url)}: [redis] stream: the key {stream!r} holds a {held}, not a "
        f"stream: {wrong_type_hint(stream)}"
    )


def is_group_gone(exc: RedisError) -> bool:
    """Whether Redis says our stream or consumer group no longer exists (deleted, or flushed):
    `NOGROUP ...`, or `UNBLOCKED ... no longer exists` for a read blocked at that moment."""
    if not isinstance(exc, ResponseError):
        return False
    said = str(exc)
    return said.startswith("NOGROUP") or (
        said.startswith("UNBLOCKED") and "no longer exists" in said
    )


class Inbox:
    """One consumer (`consumer`) of `section.stream` in the group `section.group`: hands what it
    reads or claims to `process`, keeps claiming the entries it holds (`outstanding`), and
    acknowledges them."""

    def __init__(
        self,
        redis: aioredis.Redis,
        section: RedisSection,
        consumer: str,
        process: Callable[[Entries], Awaitable[None]],
        counters: Counters,
        log: Any,
    ) -> None:
        self._redis = redis
        self._section = section
        self.stream = section.stream
        self.group = section.group
        self.consumer = consumer
        self._process = process
        self._counters = counters
        self._log = log
        # Entries read and not yet acknowledged: the receivers each still waits for.
        self.outstanding: dict[str, set[str]] = {}
        self._last_read: EntryId | None = None  # the highest entry id read (ms, seq)
        # Where the group stood when this notifier created or joined it: a group deleted later
        # is created again from here at the earliest, never from `start` ("$").
        self._joined_at: EntryId = (0, 0)
        self.trims = TrimWatch(redis, self.stream, self.group, counters, log)
        # Why the stream cannot be read (its key holds another type); None while it can.
        self.stream_problem: str | None = None

    async def create(self, start: str) -> bool:
        """The consumer group (and the stream, if there is none yet) from `start`: True if
        this made the group, False if it was there. Either way, where the group stands now
        is remembered (`_joined_at`)."""
        made = True
        try:
            await self._redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            made = False
        self._joined_at = await self._group_position()
        return made

    async def _group_position(self) -> EntryId:
        """The last entry id the group was given (XINFO GROUPS); (0, 0) when Redis will not
        say (an ACL without XINFO), so that a group created again reads too much rather than
        skips (the delivery log stops repeats)."""
        try:
            groups: Any = await self._redis.xinfo_groups(self.stream)
        except (NoPermissionError, ResponseError):
            return (0, 0)
        for group in groups:
            if text(group.get("name")) == self.group:
                return entry_id(group.get("last-delivered-id") or b"0-0") or (0, 0)
        return (0, 0)

    async def stream_length(self) -> int:
        """How many entries the stream holds (XINFO STREAM); 0 when Redis will not say."""
        try:
            info: Any = await self._redis.xinfo_stream(self.stream)
        except (NoPermissionError, ResponseError):
            return 0
        return int(info.get("length") or 0)

    def saw(self, entry: str) -> None:
        """Note that `entry` was read: the group, if deleted, is created again after it."""
        self._last_read = max(self._last_read or (0, 0), entry_id(entry) or (0, 0))

    # -- reading -------------------------------------------------------------------------------

    async def read(self, stop: asyncio.Event) -> None:
        """Read (our pending and others' idle entries first) until `stop` is set."""
        caught_up = False
        failures = 0
        while not stop.is_set():
            raise_if_cancelled()
            try:
                if not caught_up:
                    await self.trims.check()  # (what was lost while we were away)
                    await self._catch_up()
                    caught_up = True
                got: Any = await self._redis.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.stream: ">"},
                    count=self._section.batch,
                    block=self._section.block_ms,
                )
                failures = 0
                self.stream_problem = None
            except RedisError as exc:
                if is_group_gone(exc):
                    await self._recreate(exc)
                    continue
                if is_wrong_type(exc):
                    failures += 1
                    await self._wrong_type(exc, failures)
                    await pause(stop, read_retry_s(failures))
                    continue
                if not is_temporary(exc):
                    raise
                failures += 1
                self._log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc}")
                await pause(stop, read_retry_s(failures))
                continue
            if got:
                await self._process(got[0][1])

    async def _catch_up(self) -> None:
        """Entries left by a dead notifier, then our own pending ones (a restart under the same
        consumer name), before reading new ones."""
        await self._claim_others()
        start: Any = "0"
        while True:
            got: Any = await self._redis.xreadgroup(
                self.group, self.consumer, {self.stream: start}, count=self._section.batch
            )
            entries = got[0][1] if got else []
            if not entries:
                return
            gone, live = _trimmed(entries)
            if gone:
                self.trims.pending_lost(gone)
                await self.ack(gone)
            if live:
                await self._process(live)
            start = entries[-1][0]

    async def _recreate(self, exc: RedisError) -> None:
        """The stream or the group was deleted (DEL, XGROUP DESTROY, FLUSHDB, or a Redis
        restarted without its data): create the group again and keep reading. A stream that is
        gone is new when it comes back, so the group starts at its beginning. A stream that is
        there resumes after the later of the last entry this notifier read and where the group
        stood when it joined: never at `redis.start` ("$"), which would skip what was added
        before the group came back (a daemon's outbox sent after a Redis restart). Entry ids
        are times, so those added after a restart are later than both."""
        try:
            exists = await self._redis.exists(self.stream)
            start = "0"
            if exists:
                since = max(self._last_read or (0, 0), self._joined_at)
                start = f"{since[0]}-{since[1]}"
            await self.create(start)
        except RedisError as retry:
            if is_wrong_type(retry):
                return  # (the next read says so, and waits)
            if not is_temporary(retry):
                raise
            self._log.warning("redis_unavailable", error=f"{type(retry).__name__}: {retry}")
            return
        self._log.warning(
            "notify_group_recreated",
            stream=self.stream,
            group=self.group,
            start=start,
            reason=str(exc),
        )

    async def _wrong_type(self, exc: RedisError, attempt: int) -> None:
        """The stream key holds another type: say which, and what to do."""
        held = await key_type(self._redis, self.stream)
        self.stream_problem = f"the key {self.stream!r} holds a {held}, not a stream"
        self._log.error(
            "notify_stream_wrong_type",
            stream=self.stream,
            type=held,
            error=str(exc),
            attempt=attempt,
            hint=wrong_type_hint(self.stream) + "; the notifier waits and reads again then",
        )

    # -- claiming --------------------------------------------------------------------------------

    async def claim(self, stop: asyncio.Event, drained: asyncio.Event | None = None) -> None:
        """Until `stop` is set: keep the entries we hold claimed, and take over idle ones; then,
        until `drained` (the deliveries in flight at the stop finished), keep ours claimed only,
        so that no other notifier takes over an entry we are still sending."""
        every = min(self._section.claim_interval_s, self._section.claim_idle_s / 3)
        end = drained or stop
        while not end.is_set():
            await pause(end if stop.is_set() else stop, every)
            try:
                ids = list(self.outstanding)
                for i in range(0, len(ids), 500):
                    await self._redis.xclaim(
                        self.stream,
                        self.group,
                        self.consumer,
                        0,
                        list[Any](ids[i : i + 500]),
                        justid=True,
                    )
                if not stop.is_set():
                    await self._claim_others()
                    await self.trims.check()
            except RedisError as exc:
                if is_group_gone(exc) or is_wrong_type(exc):
                    continue  # (the reader creates the group again; nothing to claim till then)
                if not is_temporary(exc):
                    raise
                self._log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc}")

    async def _claim_others(self) -> None:
        """Take over entries idle for `claim_idle_s` (left by a notifier that died)."""
        start: bytes | str = "0-0"
        idle_ms = int(self._section.claim_idle_s * 1000)
        while True:
            claimed: Any = await self._redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                idle_ms,
                start,
                count=self._section.batch,
            )
            nxt, entries = claimed[0], claimed[1]
            # Entries trimmed while pending: Redis 7 drops them from the group and lists their
            # ids apart (earlier versions: as entries without fields).
            deleted = claimed[2] if len(claimed) > 2 else []
            bare, live = _trimmed(entries)
            self.trims.pending_lost([text(i) for i in deleted] + bare)
            await self.ack(bare)
            if live:
                self._log.info("entries_claimed", count=len(live))
                await self._process(live)
            if nxt in (b"0-0", "0-0"):
                return
            start = nxt

    # -- leaving -------------------------------------------------------------------------------

    async def leave(self) -> bool:
        """Stopping: delete this consumer from the group when it holds no pending entry; True
        if deleted. Entries pending (held, or not delivered in the grace period) keep it, for
        another notifier to claim. Refused or Redis away: logged, the consumer left in."""
        try:
            async with asyncio.timeout(LEAVE_S):
                left = await self._delete(self.consumer)
        except NoPermissionError as exc:
            self._log.info(
                "consumer_delete_refused",
                stream=self.stream,
                group=self.group,
                error=str(exc),
                hint="grant the notifier +xpending +xgroup|delconsumer (docs/security.md) to "
                "remove its consumer from the group when it stops",
            )
            return False
        except (TimeoutError, RedisError) as exc:
            self._log.warning("consumer_left_in_group", error=f"{type(exc).__name__}: {exc}")
            return False
        if left:
            self._log.info("consumer_deleted", stream=self.stream, group=self.group)
        return left

    async def sweep(self) -> list[str]:
        """Starting: delete the group's other consumers that hold no pending entry and have
        been idle longer than `claim_idle_s` (left by a notifier killed, or one stopped holding
        entries since claimed by others), each as `leave` deletes ours; the names deleted.
        Refused or Redis away: logged, the rest left for the next start."""
        idle_ms = self._section.claim_idle_s * 1000
        swept: list[str] = []
        try:
            async with asyncio.timeout(SWEEP_S):
                found: Any = await self._redis.xinfo_consumers(self.stream, self.group)
                for c in found:
                    name = text(c.get("name"))
                    if name == self.consumer or int(c.get("pending") or 0) > 0:
                        continue
                    if int(c.get("idle") or 0) <= idle_ms:
                        continue  # (a live notifier's, between two reads)
                    if await self._delete(name):
                        swept.append(name)
        except NoPermissionError as exc:
            self._log.info(
                "consumer_sweep_refused",
                stream=self.stream,
                group=self.group,
                error=str(exc),
                hint="grant the notifier +xinfo|consumers +xpending +xgroup|delconsumer "
                "(docs/security.md) to remove the consumers notifiers killed left in the group",
            )
        except (TimeoutError, RedisError) as exc:
            self._log.warning(
                "consumer_sweep_failed", error=f"{type(exc).__name__}: {exc}", swept=swept
            )
            return swept
        if swept:
            self._log.info("consumers_swept", stream=self.stream, group=self.group, names=swept)
        return swept

    async def _delete(self, consumer: str) -> bool:
        """Delete `consumer` from the group if it holds no pending entry: True if deleted."""
        for _ in range(LEAVE_TRIES):
            deleted = await self._delete_if_idle(consumer)
            if deleted is not None:
                return deleted
        return False  # (the stream kept changing: left for the next stop or start)

    async def _delete_if_idle(self, consumer: str) -> bool | None:
        """One try: True if deleted, False if it holds pending entries, None if the stream
        changed meanwhile (WATCH: an XADD or a trim, not an entry handed to this consumer by
        another process of its name, see the module)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.stream)
                mine: Any = await pipe.xpending_range(
                    self.stream, self.group, "-", "+", 1, consumername=consumer
                )
                if mine:
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.xgroup_delconsumer(self.stream, self.group, consumer)
                await pipe.execute()
            except WatchError:
                return None
        return True

    # -- acknowledging -------------------------------------------------------------------------

    async def ack(self, entries: list[str]) -> None:
        """XACK, retried until Redis answers (an entry left unacked is delivered again)."""
        if not entries:
            return

        async def ack() -> Any:
            return await self._redis.xack(self.stream, self.group, *entries)

        try:
            await retrying(ack, self._log, "redis_unavailable")
        except RedisError as exc:
            if not is_wrong_type(exc):
                raise
            # (the stream they were in was replaced: gone with it, nothing is left to ack)
            self._log.warning(
                "notify_ack_dropped",
                stream=self.stream,
                count=len(entries),
                entries=entries[:10],
                error=str(exc),
            )
            return
        self._counters.inc("notify_acked", len(entries))

    async def complete(self, batch: Batch) -> None:
        """`batch.receiver` has the batch's entries: acknowledge those no receiver waits for."""
        done: list[str] = []
        for item in batch.items:
            if item.entry is None or item.entry not in self.outstanding:
                continue
            left = self.outstanding[item.entry]
            left.discard(batch.receiver)
            if not left:
                del self.outstanding[item.entry]
                done.append(item.entry)
        await self.ack(done)


def _trimmed(entries: Entries) -> tuple[list[str], Entries]:
    """The ids of entries trimmed while pending (they come back as an id without fields), and
    the entries that still have theirs."""
    return [text(i) for i, f in entries if not f], [(i, f) for i, f in entries if f]


async def pause(stop: asyncio.Event, timeout_s: float, also: asyncio.Event | None = None) -> None:
    """Sleep up to `timeout_s`, returning early when `stop` (or `also`) is set."""
    await wait_any((stop,) if also is None else (stop, also), timeout_s)
