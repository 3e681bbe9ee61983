"""Custody of the router's state: saving ours, holding our lease, adopting stopped notifiers'.

The Redis side (keys, leases, adoption claims) is monitor/notify/states.py; this is the
notifier's side of it, run as one task (`run`) beside the reader:

- `save` writes the router's state when it changed, in order (a later state is never
  overwritten by an earlier one) and retried until Redis answers: a state is saved before the
  entries it came from are acknowledged, and before an adopted state is deleted;
- `run`, every claim interval, renews our lease and adopts the states of the group's notifiers
  that have none (stopped, or died); a lease found lapsed first gives up what another notifier
  may have adopted from us meanwhile (`_lapsed`);
- `hand_over`, at the end, saves a last time and drops the lease, so that another notifier (or
  our next start) adopts what we held.

`lease_held()` says whether our lease may have lapsed: the group's shared feed health is not
read then (an adopter and we would both summarise the same held alerts).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from monitor.clock import Clock
from monitor.core.counters import Counters
from monitor.notify.guard_state import without
from monitor.notify.inbox import pause
from monitor.notify.ledger import retrying
from monitor.notify.routing import GuardState, Router
from monitor.notify.states import Owner, StateStore
from monitor.redis_errors import REDIS_ERRORS, is_temporary

# What adoption needs besides the rest (+getdel: the mark of an adopted state, states.py).
ADOPT_GRANT = "+sadd +smembers +srem +del +watch +unwatch +getdel"
HAND_OVER_S = 2.0  # how long the last save and the release of the lease may take, stopping


class Custody:
    """Our saved state and lease, and the states of stopped notifiers we adopt."""

    def __init__(
        self,
        redis: aioredis.Redis,
        states: StateStore,
        router: Router,
        *,
        claim_interval_s: float,
        claim_idle_s: float,
        clock: Clock,
        counters: Counters,
        log: Any,
        wake: asyncio.Event,
    ) -> None:
        self._redis = redis
        self.states = states
        self._router = router
        self._every_s = min(claim_interval_s, claim_idle_s / 3)
        self._lease_s = claim_idle_s
        self._clock = clock
        self._counters = counters
        self._log = log
        self._wake = wake  # (set when held alerts change hands: the ticker looks again)
        self.saved = b""  # the state last saved (or loaded at start)
        self.lease_at = float("-inf")  # event-loop time our lease was last known held
        # Why the last renewal was refused by a Redis that answers (read-only, out of memory,
        # too few replicas): None once one goes through (see Health.writes).
        self.refused: str | None = None
        self._saving = asyncio.Lock()
        # Per state of another notifier left alone (unreadable, or for receivers we lack): what
        # was said of it last, so that each problem is logged once, not every claim interval.
        self._said: dict[Owner, bytes | str] = {}

    @property
    def key(self) -> str:
        """Our state's key."""
        return self.states.key(self.states.consumer)

    def lease_held(self) -> bool:
        """Whether our lease is surely still ours (renewed within its time to live)."""
        return asyncio.get_running_loop().time() - self.lease_at < self._lease_s

    async def save(self) -> None:
        """Save the router's state when it changed, retried until Redis answers."""
        async with self._saving:
            data = msgspec.json.encode(self._router.state)
            if data != self.saved:

                async def save() -> Any:
                    return await self.states.save(data)

                await retrying(save, self._log, "redis_unavailable")
                self.saved = data

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set, every claim interval: renew our lease, and adopt the saved
        states of the group's notifiers that have none (stopped, or died); in the first
        round, also the group's one state key of earlier versions."""
        legacy, adopting = True, True
        while not stop.is_set():
            try:
                renewed = asyncio.get_running_loop().time()
                if not await self.states.hold_lease():
                    await self._lapsed()
                self.lease_at = renewed
                self.refused = None
                if adopting:
                    owners: list[Owner] = [None] if legacy else []
                    for owner in owners + await self.states.orphans():
                        await self._adopt(owner)
                    legacy = False
            except NoPermissionError as exc:  # (an ACL rule of before: see docs/security.md)
                self._log.error("state_adoption_refused", error=str(exc), grant=ADOPT_GRANT)
                adopting = False
            except (RedisError, UnicodeDecodeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if is_temporary(exc):  # (unreachable, out of memory, read-only...)
                    self._log.warning("redis_unavailable", error=error)
                    if not isinstance(exc, REDIS_ERRORS):  # (it answers, and refuses writes)
                        self.refused = error
                else:
                    self._log.error("notify_custody_failed", error=error)
            await pause(stop, self._every_s)

    async def hand_over(self) -> None:
        """Stopping: save our state a last time, then drop our lease, so that another notifier
        (or our next start) adopts it. Redis away: left to the lease's expiry."""
        try:
            async with asyncio.timeout(HAND_OVER_S):
                await self.save()
                await self.states.release_lease()
        except (TimeoutError, RedisError) as exc:
            self._log.warning("lease_left_to_lapse", error=f"{type(exc).__name__}: {exc}")

    async def _lapsed(self) -> None:
        """Our lease lapsed (the loop stalled, or Redis was away): another notifier may have
        adopted our saved state meanwhile, and deleted it (and marked it so: `was_adopted`).
        What it took (the state last saved) is its to deliver: that leaves ours, or it would
        be summarised twice. A state gone without the mark went with Redis's data (a restart
        without persistence): nobody took it, and ours keeps all it holds. Ours is then saved
        again."""
        current: Any = await self._redis.get(self.key)
        adopted = current is None and bool(self.saved) and await self._was_adopted()
        self._log.warning("lease_lapsed", adopted=adopted, state_found=current is not None)
        if adopted:
            taken = msgspec.json.decode(self.saved, type=GuardState)
            self._router.state = without(self._router.state, taken)
        self.saved = b""
        self._wake.set()

    async def _was_adopted(self) -> bool:
        """`StateStore.was_adopted`; True for a user whose ACL rule (of before) lacks GETDEL,
        or a Redis before 6.2 that has none: a state gone is then taken for adopted, as it was
        before the mark."""
        try:
            return await self.states.was_adopted()
        except (NoPermissionError, ResponseError):  # (ResponseError: a Redis before 6.2)
            return True

    async def _adopt(self, owner: Owner) -> None:
        """Adopt one stopped notifier's state; a key that is no state (another type, a name
        that is not text) is logged once and left, never stopping delivery."""
        try:
            await self.states.adopt(owner, functools.partial(self._take, owner))
        except NoPermissionError:
            raise
        except (RedisError, UnicodeDecodeError) as exc:
            if is_temporary(exc):
                raise
            kind, error = type(exc).__name__, str(exc)
            self._say_once(owner, kind, self._log.error, "state_unreadable", error=error)

    def _say_once(
        self, owner: Owner, what: bytes | str, log: Any, event: str, **fields: Any
    ) -> None:
        """`log` `event` of `owner`'s state, unless the last said of it was of the same `what`
        (its content, or the kind of error reading it)."""
        if self._said.get(owner) != what:
            self._said[owner] = what
            log(event, key=self.states.key(owner), **fields)

    async def _take(self, owner: Owner, raw: bytes) -> bool:
        """Merge `owner`'s saved state into ours and save ours (False: it cannot be read)."""
        try:
            other = msgspec.json.decode(raw, type=GuardState)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            error = str(exc)  # (the state is left in Redis)
            self._say_once(owner, raw, self._log.error, "state_unreadable", error=error)
            return False
        router = self._router
        foreign = {r for s in other.summaries for r in s.receivers} - set(router.receivers)
        if foreign:  # (left for a notifier that has them: adopted here, they would be lost)
            found = sorted(foreign)
            self._say_once(owner, raw, self._log.warning, "state_left_for_others", receivers=found)
            return False
        router.adopt(other, self._clock.now())
        await self.save()
        self._counters.inc("notify_state_adopted")
        self._log.info(
            "state_adopted",
            key=self.states.key(owner),
            owner=owner,
            inhibited=len(other.inhibited),
            throttled=sum(len(held) for held in other.throttled.values()),
            summaries=[s.notice.title for s in other.summaries],
            stale_feeds=sorted(other.stale_feeds),
        )
        self._wake.set()
        return True
