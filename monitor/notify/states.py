"""The saved router states of a consumer group's notifiers, in Redis: one per notifier, a lease
that says it is alive, and the adoption of the states whose notifier stopped.

- `{stream}:notify:{group}:state:{consumer}`: a notifier's state (held alerts, summaries not yet
  delivered, the runaway guard's counts, stale feeds), saved before it acknowledges entries.
  One key per notifier: with one key per group, notifiers sharing it overwrote each other's.
- `{stream}:notify:{group}:alive:{consumer}`: its lease, SET with a TTL of `claim_idle_s` when it
  starts and every claim interval; deleted when it stops (after its last save), lapsing when it
  dies. A notifier whose lease is gone is the one whose pending entries others claim.
- `{stream}:notify:{group}:saved`: the set of consumers that have (or had) a state key, added
  to with the lease, so that finding the states to adopt is a look at one set, not a SCAN of
  a keyspace holding a delivery-log key per alert and receiver.
- Adoption: a state key without a lease belongs to a notifier that stopped (or ran under a
  hostname-pid name that is gone). Another notifier (or the next start) claims it
  (`{stream}:notify:{group}:adopting:{consumer}`, SET NX with an expiry), reads it, merges it
  into its own state (`Router.adopt`), saves its own, and only then deletes the orphan, if it
  is still the state it read and still without a lease (WATCH, MULTI, EXEC). A crash in between
  leaves the state in both keys: read twice, never lost (summaries have deterministic ids and
  the delivery log gives each once per receiver).
- `{stream}:notify:{group}:adopted:{consumer}`: set (for a day) in the transaction that deletes
  an adopted state, so that its owner, finding its lease lapsed and its state key gone, knows
  another notifier took what it held; gone without the mark, the state went with Redis's data
  (restarted without persistence), and the owner keeps what it holds and saves it again.
- `{stream}:notify:{group}:state`, the one key of earlier versions, is adopted the same way at
  start (a notifier of an earlier version still running saves it again: adopted at a later
  start).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, WatchError

ADOPT_CLAIM_S = 60.0  # at least: reading, merging and saving a state takes far less
ADOPTED_MARK_S = 86_400.0  # how long an adopted state's owner may take to find it was adopted
# Who holds a state: a consumer name, or None for the group's one key of earlier versions.
Owner = str | None


class StateStore:
    """The saved states, leases and adoption claims of `consumer`'s group (the notifier saves
    and loads its own state itself, under `key(consumer)`)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        lease_s: float,
        holder: str,
    ) -> None:
        self._redis = redis
        self._prefix = f"{stream}:notify:{group}"
        self.consumer = consumer
        self._lease_ms = max(1, int(lease_s * 1000))
        self._claim_ms = int(max(ADOPT_CLAIM_S, lease_s) * 1000)
        self._holder = holder  # written in the lease and claims: who holds them (host-pid)

    def key(self, owner: Owner) -> str:
        """The state key of `owner` (None: the group's one key of earlier versions)."""
        return f"{self._prefix}:state" if owner is None else f"{self._prefix}:state:{owner}"

    def lease_key(self, consumer: str) -> str:
        """The lease key of `consumer`: present while it runs."""
        return f"{self._prefix}:alive:{consumer}"

    @property
    def _registry(self) -> str:
        """The set of consumers with a state key (see the module)."""
        return f"{self._prefix}:saved"

    def _adopted_key(self, consumer: str) -> str:
        """Set when `consumer`'s state was adopted (by whom), with its deletion: a state key
        gone without it went with Redis's data (a restart without persistence, a failover),
        not to another notifier."""
        return f"{self._prefix}:adopted:{consumer}"

    async def was_adopted(self) -> bool:
        """Whether our saved state was adopted by another notifier (and deleted so) since we
        last asked; the mark is removed."""
        return bool(await self._redis.getdel(self._adopted_key(self.consumer)))

    def _claim_key(self, owner: Owner) -> str:
        return f"{self._prefix}:adopting" + ("" if owner is None else f":{owner}")

    # -- our own -------------------------------------------------------------------------------

    async def hold_lease(self) -> bool:
        """Set (or renew) our lease; whether it was still there (False: it lapsed, and another
        notifier may have adopted our saved state meanwhile)."""
        old = await self._set_and_join(
            self.lease_key(self.consumer), self._holder, px=self._lease_ms, get=True
        )
        return old is not None

    async def save(self, data: bytes) -> None:
        """Save our state (`data`), and say so in the group's set of saved states: a state
        saved after an adopter took the one before (and struck us from the set) is found."""
        await self._set_and_join(self.key(self.consumer), data)

    async def _set_and_join(self, key: str, value: str | bytes, **options: Any) -> Any:
        """SET `key` (the reply), and add us to the group's set of saved states. A user
        without SADD (an ACL rule of before) still sets: adoption is what it cannot do, and
        says so (see the service's custody)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(key, value, **options)
            pipe.sadd(self._registry, self.consumer)
            reply, joined = await pipe.execute(raise_on_error=False)
        for outcome in (reply, joined if not isinstance(joined, NoPermissionError) else None):
            if isinstance(outcome, Exception):
                raise outcome
        return reply

    async def release_lease(self) -> None:
        """Drop our lease (stopping, after the last save): our state is now anyone's to adopt."""
        await self._redis.delete(self.lease_key(self.consumer))

    # -- adoption ------------------------------------------------------------------------------

    async def orphans(self) -> list[str]:
        """The consumers of the group with a saved state and no lease (not us)."""
        members: Any = await self._redis.smembers(self._registry)
        found = sorted(m.decode() for m in members if m.decode() != self.consumer)
        if not found:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for consumer in found:
                pipe.exists(self.lease_key(consumer))
            alive = await pipe.execute()
        return [c for c, live in zip(found, alive, strict=True) if not live]

    async def adopt(self, owner: Owner, take: Callable[[bytes], Awaitable[bool]]) -> bool:
        """Adopt `owner`'s state: claim it, read it, `take` it (merge it and save our own
        state; False: it could not be read, and is left where it is), then delete it. Whether
        it was deleted: not when another notifier holds the claim, its owner is back, or
        `take` refused it."""
        claim = self._claim_key(owner)
        if not await self._redis.set(claim, self._holder, nx=True, px=self._claim_ms):
            return False
        try:
            if owner is not None and await self._redis.exists(self.lease_key(owner)):
                return False  # (it started again)
            raw: Any = await self._redis.get(self.key(owner))
            if raw is None:  # (it never saved, or its state was adopted: nothing to look for)
                if owner is not None:
                    await self._redis.srem(self._registry, owner)
                return False
            if not await take(raw):
                return False
            return await self._delete_if_unchanged(owner, raw)
        finally:
            await self._redis.delete(claim)

    async def _delete_if_unchanged(self, owner: Owner, raw: bytes) -> bool:
        """Delete `owner`'s state if it is still `raw` and `owner` has no lease: an owner that
        came back (same name) and saved meanwhile keeps its state (ours holds a copy)."""
        key = self.key(owner)
        watched = [key] if owner is None else [key, self.lease_key(owner)]
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*watched)
            current: Any = await pipe.get(key)
            alive = owner is not None and bool(await pipe.exists(self.lease_key(owner)))
            if current != raw or alive:
                return False  # (leaving the block sends UNWATCH)
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.delete(key)
            if owner is not None:
                pipe.srem(self._registry, owner)
                pipe.set(self._adopted_key(owner), self._holder, px=int(ADOPTED_MARK_S * 1000))
            try:
                await pipe.execute()
            except WatchError:
                return False
        return True
