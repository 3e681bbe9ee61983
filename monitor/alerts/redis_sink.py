"""Publish alerts to Redis (a pub/sub channel and a capped stream) from the durable outbox.

    async with RedisPublisher(url, channel, stream, outbox) as pub:
        tg.create_task(pub.run(stop), name="redis_publisher")
        tg.create_task(pub.watch(stop), name="redis_check")   # PING now and every few seconds
        pub.submit(alerts)          # outbox first, then a wake-up for the loop
        ...
        await pub.flush(timeout_s)  # at shutdown, within the grace period

Delivery: `run()` drains the outbox oldest first in batches. Each batch is ONE `EVALSHA` of the
script below, which for every alert, in order and atomically (Redis runs a script as a unit):
checks the dedupe key `{stream}:published:{id}`, and if absent XADDs `id`/`alert` to the stream
with `MAXLEN ~ maxlen`, sets the dedupe key with a TTL and PUBLISHes the payload on the channel.
Then the batch is marked published in the outbox.

Why a script per batch rather than MULTI/EXEC of PUBLISH+XADD (+SET NX): a transaction cannot
branch, so "XADD only if this id was not already published" needs a script anyway; one script
call for the whole batch is one round trip, like a pipeline, without the SCRIPT EXISTS round trip
redis-py adds to pipelines that carry scripts. The crash window between the script and
`mark_published` is closed by the dedupe key: a resend (after a crash, a timeout whose reply was
lost, or a fresh outbox) finds it and skips that alert. Order inside the script: the XADD is the
first write, so an OOM / READONLY refusal happens before anything is written; the dedupe key is
set only after the XADD succeeded, so an error never marks an alert that did not go out.

While Redis cannot take alerts (connection refused or lost, timeout, BUSY, LOADING, OOM,
READONLY, ...) they stay in the outbox and the loop retries with `Backoff`; one `redis_unavailable`
and one `outbox_waiting` warning per outage, `redis_recovered` when it ends.

Health: `watch()` PINGs Redis at once and every `check_interval_s`, so that `is_available` (and
the daemon's /healthz) turns false within seconds of Redis going away, not when an alert first
fails to go out (days later, maybe), and true again when it answers. Credentials Redis refuses
(a wrong password or user) are logged at start as `redis_auth_failed`, an error naming what to
fix; the daemon goes on, and alerts wait in the outbox. An ACL user without `+ping` gets
NOPERM: an answer from a logged-in connection, so Redis counts as up (`redis_ping_refused`,
once, says to allow it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from monitor import logs
from monitor.alerts.outbox import Outbox
from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import Alert
from monitor.errors import SinkUnavailable
from monitor.urls import mask_url
from monitor.waiting import wait_any

DEDUPE_TTL_S = 30 * 86_400
# What to check when Redis refuses the credentials (`redis_auth_failed`; `tail` says it too).
AUTH_FIX = "check [redis] username and password_env or password_file (or the url's)"
CHECK_INTERVAL_S = 2.0  # between PINGs ([redis] check_interval_s): degraded within seconds

# KEYS[1] stream, KEYS[1 + i] the dedupe key of alert i.
# ARGV[1] channel, ARGV[2] maxlen, ARGV[3] dedupe TTL (s), then alert i's id and payload at
# ARGV[2 + 2i] and ARGV[3 + 2i]. Returns 1 (published) or 0 (already published) per alert.
PUBLISH_SCRIPT = """
local flags = {}
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local id, payload = ARGV[2 * i], ARGV[2 * i + 1]
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'id', id, 'alert', payload)
    redis.call('SET', KEYS[i], '1', 'EX', ARGV[3])
    redis.call('PUBLISH', ARGV[1], payload)
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
return flags
"""

# Library errors that mean "Redis cannot take alerts now". ResponseError covers BUSY, LOADING
# (BusyLoadingError is a ConnectionError), OOM, READONLY, MASTERDOWN, NOSCRIPT, and also errors
# an operator must fix (WRONGTYPE on the stream key, NOPERM): all of them are retried, because the
# outbox keeps the alerts and the warning names the error.
_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ResponseError)


class _Named(msgspec.Struct):
    """The fields of an alert's payload its log lines name (the others are skipped unread)."""

    rule: str = ""
    symbol: str = ""


_NAMED = msgspec.json.Decoder(_Named)


def _named(payload: bytes) -> _Named:
    """An outbox payload's rule and symbol ("" for a payload that is no alert object)."""
    try:
        return _NAMED.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Named()


def _strip_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Split `redis[s]://user:pass@host/db` into the URL without credentials, user, password."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"redis URL must start with redis:// or rediss://, not {mask_url(url)!r}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc)), username, password


class RedisPublisher:
    """Drains an `Outbox` into a Redis channel and stream, in order, each alert at most once.

    `username` / `password` override those in the URL (the config layer resolves secrets);
    `ssl_ca_certs` is a CA bundle for `rediss://` servers with a private CA.
    The Redis client lives exactly as long as the `async with`; the outbox is the caller's.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        stream: str,
        outbox: Outbox,
        *,
        maxlen: int = 100_000,
        counters: Counters | None = None,
        backoff: Backoff | None = None,
        username: str | None = None,
        password: str | None = None,
        ssl_ca_certs: str | None = None,
        batch_size: int = 200,
        dedupe_ttl_s: int = DEDUPE_TTL_S,
        timeout_s: float = 5.0,
        idle_poll_s: float = 5.0,
        check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        if maxlen < 1 or batch_size < 1 or dedupe_ttl_s < 1:
            raise ValueError("maxlen, batch_size and dedupe_ttl_s must be positive")
        if check_interval_s <= 0:
            raise ValueError("check_interval_s must be positive")
        self._url, url_user, url_password = _strip_credentials(url)
        if ssl_ca_certs is not None and not url.startswith("rediss://"):
            raise ValueError("ssl_ca_certs needs a rediss:// URL")
        self._tls: dict[str, Any] = {} if ssl_ca_certs is None else {"ssl_ca_certs": ssl_ca_certs}
        self._username = username if username is not None else url_user
        self._password = password if password is not None else url_password
        self.url = mask_url(url)  # for logs; an explicit `password` never appears in it
        self.channel = channel
        self.stream = stream
        self.maxlen = maxlen
        self._outbox = outbox
        self._counters = counters if counters is not None else Counters()
        self._backoff = backoff if backoff is not None else Backoff()
        self._batch_size = batch_size
        self._dedupe_ttl_s = dedupe_ttl_s
        self._timeout_s = timeout_s
        self._idle_poll_s = idle_poll_s
        self._check_interval_s = check_interval_s
        self._log = logs.get("redis_publisher")
        self._client: aioredis.Redis | None = None
        self._script: Any = None
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self._down_since: float | None = None  # since when `is_available` is False
        self._publish_failing = False  # from a failed publish until the next successful one
        self._auth_failed = False  # the last PING failed on the credentials
        self._down_error = ""  # why Redis was found down (the error that marked it)
        self._ping_refused_logged = False
        self._checked = False
        self._waiting_logged = False
        self._failures = 0
        self._counters.describe("alerts_published", "Alerts written to the stream and channel")
        self._counters.describe("outbox_depth", "Alerts waiting in the outbox")
        self._counters.describe("redis_errors", "Failed attempts to publish a batch to Redis")
        self._counters.describe("publish_batches", "Batches published to Redis")
        self._counters.describe(
            "alerts_deduplicated", "Resent alerts Redis already had (crash window, lost reply)"
        )
        self._counters.describe(
            "redis_available", "1 while Redis answers PING and takes alerts, else 0"
        )
        self._counters.describe("redis_check_failures", "PINGs to Redis that failed")

    def __repr__(self) -> str:
        return f"RedisPublisher(url={self.url!r}, channel={self.channel!r}, stream={self.stream!r})"

    async def __aenter__(self) -> Self:
        # No round trip here: if Redis is down at start-up, alerts wait in the outbox.
        self._client = aioredis.Redis.from_url(
            self._url,
            username=self._username,
            password=self._password,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0),  # the loop below owns retries and their backoff
            **self._tls,
        )
        self._script = self._client.register_script(PUBLISH_SCRIPT)
        self._counters.set("outbox_depth", self._outbox.depth())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            await client.aclose()

    def submit(self, alerts: Sequence[Alert]) -> int:
        """Store alerts in the outbox (durably, before any I/O) and wake the loop; return new ones.

        Synchronous: one local SQLite transaction. Raises `OutboxError` if they cannot be stored.
        """
        added = self._outbox.put(alerts)
        self._counters.set("outbox_depth", self._outbox.depth())
        if added:
            self.wake()
        return added

    @property
    def is_available(self) -> bool:
        """False while Redis does not answer PING (see `watch`), and from a failed publish until
        the next successful one."""
        return self._down_since is None

    @property
    def why_unavailable(self) -> str | None:
        """What /healthz says of Redis while `is_available` is False: refused the login (what
        to check), else the last error (no credentials in it); None while available."""
        if self._down_since is None:
            return None
        if self._auth_failed:
            return f"refused the login ({AUTH_FIX})"
        return self._down_error

    def wake(self) -> None:
        """Tell the loop the outbox has new alerts (non-blocking)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Drain the outbox until `stop` is set or the task is cancelled; retry with backoff."""
        stop = stop if stop is not None else asyncio.Event()
        while not stop.is_set():
            self._wake.clear()
            try:
                await self._drain()
            except SinkUnavailable:
                delay = self._backoff.delay(self._failures - 1)
                await wait_any((stop, self._hurry), delay)
                self._hurry.clear()
                continue
            # Poll now and then too, in case someone wrote to the outbox without `wake()`.
            await wait_any((stop, self._wake), self._idle_poll_s)

    async def watch(self, stop: asyncio.Event | None = None) -> None:
        """PING Redis now and every `check_interval_s` until `stop` is set (see the module)."""
        stop = stop if stop is not None else asyncio.Event()
        while not stop.is_set():
            await self.check()
            await wait_any((stop,), self._check_interval_s)

    async def check(self) -> bool:
        """PING Redis once; whether it answered. Updates `is_available` either way."""
        if self._client is None:
            raise RuntimeError("RedisPublisher used outside its `async with`")
        try:
            await self._client.ping()
        except NoPermissionError:  # an ACL user without +ping: logged in, Redis answered
            if not self._ping_refused_logged:
                self._ping_refused_logged = True
                self._log.warning(
                    "redis_ping_refused",
                    url=self.url,
                    fix="allow +ping to the daemon's ACL user (docs/security.md)",
                )
        except _REDIS_ERRORS as exc:
            self._on_check_failure(exc)
            return False
        self._on_check_success()
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Publish what is in the outbox; True once it is empty, False if `timeout_s` passed first.

        Works with or without `run()` going (drains are serialised), e.g. after the stop event.
        """
        self._hurry.set()
        try:
            async with asyncio.timeout(timeout_s):
                while self._outbox.depth() > 0:
                    try:
                        await self._drain()
                    except SinkUnavailable:
                        await asyncio.sleep(self._backoff.delay(self._failures - 1))
        except TimeoutError:
            return self._outbox.depth() == 0
        return True

    async def _drain(self) -> int:
        """Publish batches until the outbox is empty; return how many alerts were new to Redis."""
        published = 0
        async with self._drain_lock:
            while batch := self._outbox.pending(self._batch_size):
                try:
                    flags = await self._publish(batch)
                except SinkUnavailable as exc:
                    self._on_failure(exc)
                    raise
                self._outbox.mark_published([alert_id for _, alert_id, _ in batch])
                self._on_success()
                self._counters.inc("publish_batches")
                self._counters.set("outbox_depth", self._outbox.depth())
                for (seq, alert_id, payload), flag in zip(batch, flags, strict=True):
                    named = _named(payload)  # (for on-call to grep the log by rule and symbol)
                    event = "alert_published" if flag else "alert_already_published"
                    self._log.info(
                        event, id=alert_id, seq=seq, rule=named.rule, symbol=named.symbol
                    )
                    if flag:
                        published += 1
                    else:
                        self._counters.inc("alerts_deduplicated")
                self._counters.inc("alerts_published", sum(flags))
        return published

    async def _publish(self, batch: list[tuple[int, str, bytes]]) -> list[int]:
        """One EVALSHA for the batch; redis exceptions become `SinkUnavailable` here."""
        if self._script is None:
            raise RuntimeError("RedisPublisher used outside its `async with`")
        keys = [self.stream, *(f"{self.stream}:published:{alert_id}" for _, alert_id, _ in batch)]
        args: list[str | bytes | int] = [self.channel, self.maxlen, self._dedupe_ttl_s]
        for _, alert_id, payload in batch:
            args += (alert_id, payload)
        try:
            flags = await self._script(keys=keys, args=args)
        except _REDIS_ERRORS as exc:
            raise SinkUnavailable(f"redis {self.url}: {type(exc).__name__}: {exc}") from exc
        return [int(flag) for flag in flags]

    def _on_failure(self, exc: SinkUnavailable) -> None:
        self._failures += 1
        self._counters.inc("redis_errors")
        self._publish_failing = True
        cause = exc.__cause__ or exc
        if self._down_since is None:
            self._mark_down(f"{type(cause).__name__}: {cause}")
        else:
            self._still_down(f"{type(cause).__name__}: {cause}", "redis_retry")
        if not self._waiting_logged:
            self._waiting_logged = True
            self._log.warning(
                "outbox_waiting",
                depth=self._outbox.depth(),
                outbox=str(self._outbox.path),
                note="alerts are kept in the outbox and published in order once Redis is back",
            )

    def _on_success(self) -> None:
        # (a publish that went through proves Redis answers, too)
        self._publish_failing = False
        self._auth_failed = False
        self._mark_up()

    def _on_check_failure(self, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self._counters.inc("redis_check_failures")
        self._checked = True
        auth = isinstance(exc, AuthenticationError)
        if auth and not self._auth_failed:
            self._log.error(
                "redis_auth_failed",
                url=self.url,
                error=error,
                fix=AUTH_FIX,
                note="the daemon runs on; alerts wait in the outbox until Redis accepts them",
            )
        self._auth_failed = auth
        if self._down_since is None:
            self._mark_down(error)
        else:
            self._still_down(error, "redis_check_failed")

    def _on_check_success(self) -> None:
        if not self._checked:
            self._checked = True
            self._log.info("redis_reachable", url=self.url)
        self._auth_failed = False
        if self._publish_failing:
            self._hurry.set()  # Redis is back: retry the outbox now, not after the backoff
        else:
            self._mark_up()

    def _mark_down(self, error: str) -> None:
        """`is_available` turns False: one warning per outage."""
        self._down_since = time.monotonic()
        self._down_error = error
        self._counters.set("redis_available", 0)
        self._log.warning("redis_unavailable", url=self.url, error=error)

    def _still_down(self, error: str, event: str) -> None:
        """Another failure within an outage: /healthz says the latest, and one of another kind
        (Redis back but refusing writes, or gone after refusing them) is a warning again, so
        that the log does not send an operator after the first cause once it has changed."""
        if error.partition(":")[0] != (self._down_error or "").partition(":")[0]:
            self._log.warning("redis_unavailable", url=self.url, error=error, was=self._down_error)
        else:
            self._log.debug(event, url=self.url, error=error, attempt=self._failures)
        self._down_error = error

    def _mark_up(self) -> None:
        """`is_available` turns (or stays) True."""
        self._counters.set("redis_available", 1)
        if self._down_since is not None:
            self._log.info(
                "redis_recovered",
                url=self.url,
                down_s=round(time.monotonic() - self._down_since, 3),
                failed_attempts=self._failures,
            )
        self._down_since = None
        self._waiting_logged = False
        self._failures = 0
