"""The notifier's dispatch: per receiver, a queue, a courier and the worker task that empties
one into the other, with the delivery log checked before and written after every send.
Apart from monitor/notify/service.py (which reads, routes and fills the queues) because this is
the other half of the notifier, the one that talks to the channels:

- Each receiver has its own queue and task, so a slow or broken channel delays only itself.
- The delivery log (monitor/notify/ledger.py) records each (receiver, alert id) in Redis only
  after a successful send, and is checked before every send. The one window left is a crash
  between the provider accepting a message and that record: that message is sent again.
- What a receiver could not be given is dead-lettered; either way its batch is then complete
  (`complete`, which acknowledges the entries no other receiver waits for). That includes an
  alert its message could not be rendered with (a bug, `alert_render_failed`): the worker goes
  on, with the rest of the group.
- A digest that could not be sent is handed back (`digest_failed`): the service queues it
  again later the same day (monitor/notify/service.py), the delivery log still sending it once.
- Every notifier of a group builds the day's digest, so one is sent only under a claim in Redis
  (`DeliveryLog.claim`, SET NX), checked against the delivery log once taken and released when
  the send is over. A notifier that finds it claimed hands the digest back too: its retry finds
  it sent, or sends it if the holder failed (it released the claim) or died (the claim lapsed
  after CLAIM_FACTOR times the courier's longest delivery, at least CLAIM_MIN_S).
- `resend` (`notify dead resend`) claims each alert the same way before sending it, so two
  resends at once send it once; the service's own deliveries take no claim (see docs/notify.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from monitor.core.backoff import Backoff
from monitor.core.counters import Counters
from monitor.core.model import Alert
from monitor.errors import ConfigError, DeliveryError
from monitor.notify.compose import Composer, Prepared
from monitor.notify.config import NotifyConfig, ReceiverConfig
from monitor.notify.delivery import Courier, Outcome, Sender, make_sender
from monitor.notify.grouping import Batch
from monitor.notify.ledger import DeadLetters, DeliveryLog, told
from monitor.notify.render import Message
from monitor.waiting import raise_if_cancelled

BEING_SENT = "being sent by another notifier"
# A digest's claim lapses after CLAIM_FACTOR times the courier's longest delivery (at least
# CLAIM_MIN_S): only a notifier that died mid-send leaves one behind.
CLAIM_FACTOR = 2
CLAIM_MIN_S = 600
# `resend` sends at most RESEND_MAX_ALERTS alerts per message (10,000 letters of one group once
# made one 7.5 MB POST): a few kB of JSON, within any provider's size limit; every alert is
# named in the text (render.py lists LIST_LIMIT, 20, then "and N more"); and a message that
# fails fails only these letters.
RESEND_MAX_ALERTS = 20
BEING_SENT_ELSEWHERE = "being sent elsewhere"


def receiver_sender(i: int, r: ReceiverConfig, url: str) -> Sender:
    """The sender of `config.receivers[i]` at `url` (resolved); a URL no sender can use is a
    ConfigError naming the receiver's field."""
    try:
        return make_sender(url, r.sender, r.timeout_s)
    except DeliveryError as exc:
        raise ConfigError(f"receivers[{i}].url: {exc}") from None


def open_couriers(
    config: NotifyConfig, urls: Mapping[str, str], senders: dict[str, Sender]
) -> dict[str, Courier]:
    """A sender and courier per receiver (of those with a URL in `urls` or a sender given); a
    URL no sender can use is a ConfigError naming the receiver's field (exit 78, as for any
    config error), checked before Redis. `senders` holds those given already, and gets those
    made here (to be closed by their owner)."""
    backoff = Backoff(
        config.delivery.backoff_base_s,
        max(config.delivery.backoff_cap_s, config.delivery.backoff_base_s),
        jitter=config.delivery.jitter,
    )
    couriers: dict[str, Courier] = {}
    for i, r in enumerate(config.receivers):
        if r.name not in urls and r.name not in senders:
            continue  # (not one this notifier sends to: `notify dead list`)
        sender = senders.get(r.name) or receiver_sender(i, r, urls[r.name])
        senders[r.name] = sender
        couriers[r.name] = Courier(
            r.name,
            sender,
            backoff=backoff,
            max_attempts=r.max_attempts or config.delivery.max_attempts,
            min_interval_s=r.min_interval_s,
            timeout_s=r.timeout_s,
        )
    return couriers


FINISH_LOOK_S = 0.05  # stopping: how often `finish` looks whether a courier waits to retry


class Dispatcher:
    """Delivers what is `put` for each receiver of `couriers`, one job at a time per receiver,
    rendered by `composer`; `complete(batch)` once a batch is sent or dead-lettered, and
    `digest_failed(receiver, job)` when a digest (a `Prepared` job) could not be sent."""

    def __init__(
        self,
        couriers: Mapping[str, Courier],
        composer: Composer,
        delivered: DeliveryLog,
        dead: DeadLetters,
        complete: Callable[[Batch], Awaitable[None]],
        digest_failed: Callable[[str, Prepared], None],
        counters: Counters,
        log: Any,
    ) -> None:
        self._couriers = dict(couriers)
        self._composer = composer
        self._delivered = delivered
        self._dead = dead
        self._complete = complete
        self._digest_failed = digest_failed
        self._counters = counters
        self._log = log
        self.queues: dict[str, asyncio.Queue[Batch | Prepared]] = {
            name: asyncio.Queue() for name in self._couriers
        }
        self.busy: dict[str, Batch | Prepared] = {}  # per receiver, the job its worker is on
        self._recording: set[str] = set()  # receivers whose job is sent, its record not written
        self._stopping = False

    def put(self, receiver: str, job: Batch | Prepared) -> None:
        """Queue `job` for `receiver`'s worker."""
        self.queues[receiver].put_nowait(job)

    async def worker(self, receiver: str) -> None:
        """Deliver `receiver`'s jobs as they come, until cancelled, or, once `finish` has
        begun, until the job in hand is done."""
        queue = self.queues[receiver]
        while not self._stopping:
            raise_if_cancelled()
            job = await queue.get()
            self.busy[receiver] = job
            try:
                await self._work(receiver, job)
            finally:
                del self.busy[receiver]

    async def _work(self, receiver: str, job: Batch | Prepared) -> None:
        if isinstance(job, Prepared):
            said = await self.deliver_prepared(receiver, job)
            if said.startswith("failed") or said == BEING_SENT:
                self._digest_failed(receiver, job)
        else:
            await self._deliver(receiver, job)

    async def finish(self, workers: dict[str, asyncio.Task[None]], timeout_s: float) -> None:
        """Stopping: take no new job, and let each worker finish the send in hand (then record
        and acknowledge it) for up to `timeout_s`. A worker idle, or whose courier waits
        between attempts (nothing is being sent), is cancelled at once, as is one still busy
        when the time is up; a job cut off is logged (`delivery_abandoned`, with its alert
        ids). Its entries stay pending, and are delivered after the next start."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        left = dict(workers)
        while left:
            for receiver, task in list(left.items()):
                if task.done():
                    del left[receiver]
                elif receiver not in self.busy or self._couriers[receiver].waiting:
                    self._cut(receiver, task, "waiting to retry")
                    del left[receiver]
            remaining_s = deadline - loop.time()
            if not left or remaining_s <= 0:
                break
            await asyncio.wait(left.values(), timeout=min(remaining_s, FINISH_LOOK_S))
        for receiver, task in left.items():
            self._cut(receiver, task, f"still sending after {timeout_s:g} s")

    async def _recorded(self, receiver: str, ids: list[str]) -> None:
        """Write the delivery log of what `receiver` has just been sent (retried until Redis
        takes it: a stop meanwhile says so, see `_cut`)."""
        self._recording.add(receiver)
        try:
            await self._delivered.mark(receiver, ids)
        finally:
            self._recording.discard(receiver)

    def _cut(self, receiver: str, task: asyncio.Task[None], why: str) -> None:
        """Cancel `receiver`'s worker; log the job it was on, if any."""
        task.cancel()
        job = self.busy.get(receiver)
        if job is None:
            return
        ids = [job.key] if isinstance(job, Prepared) else [a.id for a in job.alerts]
        if receiver in self._recording:  # (the receiver has it: the record is what waits)
            why = "sent, not recorded (Redis refusing or away): it will be sent again"
        self._log.warning("delivery_abandoned", receiver=receiver, ids=ids, reason=why)

    async def _deliver(self, receiver: str, batch: Batch) -> None:
        todo = await self._unsent(receiver, batch.alerts)
        message = None
        if todo:
            message, todo = await self._render(receiver, batch, todo)
        if message is not None:
            outcome = await self._send(receiver, message, todo)
            if not outcome.ok:
                entries = _entries(batch)
                for a in todo:
                    await self._dead.add(
                        entries.get(a.id),
                        a,
                        receiver,
                        outcome.reason,
                        outcome.attempts,
                        accepted=outcome.accepted,
                    )
        await self._complete(batch)

    async def _unsent(self, receiver: str, alerts: list[Alert]) -> list[Alert]:
        """`alerts` less those `receiver` has (the delivery log) and repeats (the same alert
        XADDed twice: the first is sent, both entries acked); the others are logged and
        counted as already sent."""
        unique: list[Alert] = []
        repeated: list[str] = []
        seen: set[str] = set()
        for a in alerts:
            if a.id in seen:
                repeated.append(a.id)
            else:
                seen.add(a.id)
                unique.append(a)
        if repeated:
            self._counters.inc("notify_already_sent", len(repeated), receiver=receiver)
            self._log.info("alert_already_sent", receiver=receiver, ids=repeated, repeated=True)
        flags = await self._delivered.sent(receiver, [a.id for a in unique])
        had = [a for a, sent in zip(unique, flags, strict=True) if sent]
        if had:
            self._counters.inc("notify_already_sent", len(had), receiver=receiver)
            self._log.info("alert_already_sent", receiver=receiver, ids=[a.id for a in had])
        return [a for a, sent in zip(unique, flags, strict=True) if not sent]

    async def _send(self, receiver: str, message: Message, alerts: list[Alert]) -> Outcome:
        """`message`, telling of `alerts`, through the receiver's courier; on success the
        delivery log records them before anything else happens."""
        outcome = await self._couriers[receiver].deliver(message)
        if outcome.ok:
            await self._recorded(receiver, [a.id for a in alerts])
            self._counters.inc("notify_sent", receiver=receiver)
            self._counters.inc("notify_alerts_sent", len(alerts), receiver=receiver)
            self._log.info(
                "alert_delivered",
                receiver=receiver,
                ids=[a.id for a in alerts],
                **told(alerts),
                attempts=outcome.attempts,
            )
        return outcome

    async def resend(
        self,
        receiver: str,
        alerts: list[Alert],
        skip: frozenset[str] = frozenset(),
        accepted: dict[str, tuple[str, ...]] | None = None,
    ) -> dict[str, str]:
        """Send `alerts` (dead letters) to `receiver` again through its courier, at most
        RESEND_MAX_ALERTS to a message, but not to its targets in `skip` (the chats or
        channels that accepted them before); per alert id: "sent", "already sent" (the delivery
        log), BEING_SENT_ELSEWHERE (another resend holds its claim) or "failed: REASON". Of a
        failed alert, `accepted` gets the targets that have it now (`skip` and those that took
        it this time).

        Each alert is claimed (`DeliveryLog.claim`, as a digest is) before it is sent and
        checked against the delivery log once claimed, so two resends at once send it once;
        the claims are released when the message is over, sent or not. An alert the message
        cannot be rendered with is tried alone, as in `_render`, and fails by itself. Nothing
        is dead-lettered: the letters are the caller's."""
        todo = await self._unsent(receiver, alerts)
        left = {a.id for a in todo}
        said = {a.id: "already sent" for a in alerts if a.id not in left}
        claim_s = self._claim_s(receiver)
        for start in range(0, len(todo), RESEND_MAX_ALERTS):
            said |= await self._resend_some(
                receiver, todo[start : start + RESEND_MAX_ALERTS], claim_s, skip, accepted
            )
        return said

    async def _resend_some(
        self,
        receiver: str,
        alerts: list[Alert],
        claim_s: int,
        skip: frozenset[str],
        accepted: dict[str, tuple[str, ...]] | None,
    ) -> dict[str, str]:
        """`resend` of up to RESEND_MAX_ALERTS alerts, in (at most) one message."""
        said: dict[str, str] = {}
        mine: list[Alert] = []
        try:
            for a in alerts:
                if await self._delivered.claim(receiver, a.id, claim_s):
                    mine.append(a)
                else:
                    said[a.id] = BEING_SENT_ELSEWHERE
            if not mine:
                return said
            flags = await self._delivered.sent(receiver, [a.id for a in mine])  # (no race now)
            said |= {a.id: "already sent" for a, sent in zip(mine, flags, strict=True) if sent}
            todo = [a for a, sent in zip(mine, flags, strict=True) if not sent]
            if not todo:
                return said
            message, good, bad = await self._compose(receiver, todo)
            for a, exc in bad:
                error = f"{type(exc).__name__}: {exc}"
                self._log.error(
                    "alert_render_failed", receiver=receiver, id=a.id, error=error, exc_info=exc
                )
                said[a.id] = f"failed: could not render: {error}"
            if message is not None:
                message = dataclasses.replace(message, skip_targets=skip)
                outcome = await self._send(receiver, message, good)
                ok = "sent" if outcome.ok else f"failed: {outcome.reason}"
                said |= {a.id: ok for a in good}
                if not outcome.ok and accepted is not None:
                    accepted.update((a.id, outcome.accepted) for a in good)
            return said
        finally:
            for a in mine:
                await self._delivered.release(receiver, a.id)

    def failing(self) -> dict[str, str]:
        """The receivers whose last attempt failed, and why (until one succeeds)."""
        return {n: c.failing for n, c in self._couriers.items() if c.failing is not None}

    async def _render(
        self, receiver: str, batch: Batch, alerts: list[Alert]
    ) -> tuple[Message | None, list[Alert]]:
        """The message for `alerts` on `receiver`, and the alerts it carries. Rendering that
        raises is a bug, but one alert must not stop the receiver's worker (and with it the
        notifier, at every restart while the entry is pending): the alerts the message cannot
        be rendered with, each tried alone, are logged (`alert_render_failed`) and dead-lettered
        for this receiver, as a delivery that failed for good; the others go as one message."""
        message, good, bad = await self._compose(receiver, alerts)
        for a, exc in bad:
            await self._unrenderable(receiver, batch, a, exc)
        return message, good

    async def _compose(
        self, receiver: str, alerts: list[Alert]
    ) -> tuple[Message | None, list[Alert], list[tuple[Alert, Exception]]]:
        """The message for `alerts` on `receiver`, the alerts it carries, and those it could not
        be rendered with (each tried alone after the whole failed), with the exception."""
        try:
            return await self._composer.message(receiver, alerts), alerts, []
        except Exception as exc:  # (a bug: see `_render`; CancelledError is not an Exception)
            if len(alerts) == 1:
                return None, [], [(alerts[0], exc)]
        good: list[Alert] = []
        bad: list[tuple[Alert, Exception]] = []
        for a in alerts:
            try:
                await self._composer.message(receiver, [a])
            except Exception as exc:
                bad.append((a, exc))
            else:
                good.append(a)
        if not good:
            return None, [], bad
        try:
            return await self._composer.message(receiver, good), good, bad
        except Exception as exc:  # (only together: none of them can go)
            return None, [], bad + [(a, exc) for a in good]

    async def _unrenderable(
        self, receiver: str, batch: Batch, alert: Alert, exc: Exception
    ) -> None:
        entry = _entries(batch).get(alert.id)
        error = f"{type(exc).__name__}: {exc}"
        self._log.error(
            "alert_render_failed",
            receiver=receiver,
            id=alert.id,
            entry=entry,
            error=error,
            exc_info=exc,
        )
        await self._dead.add(entry, alert, receiver, f"could not render: {error}", 0)

    async def deliver_prepared(self, receiver: str, job: Prepared) -> str:
        """Send a pre-rendered message (the digest) once to `receiver`: "sent", "already sent"
        or why it failed; BEING_SENT while another notifier holds its claim."""
        courier = self._couriers[receiver]
        if not await self._delivered.claim(receiver, job.key, self._claim_s(receiver)):
            self._log.info("digest_claimed_elsewhere", receiver=receiver, key=job.key)
            return BEING_SENT
        (sent,) = await self._delivered.sent(receiver, [job.key])  # (after the claim: no race)
        if sent:
            await self._delivered.release(receiver, job.key)
            return "already sent"
        outcome = await courier.deliver(job.message)
        if outcome.ok:
            await self._recorded(receiver, [job.key])
            await self._delivered.release(receiver, job.key)
            self._counters.inc("notify_sent", receiver=receiver)
            self._log.info("digest_delivered", receiver=receiver, key=job.key)
            return "sent"
        await self._delivered.release(receiver, job.key)
        self._log.error("digest_failed", receiver=receiver, key=job.key, reason=outcome.reason)
        return f"failed: {outcome.reason}"

    def _claim_s(self, receiver: str) -> int:
        """How long a claim to send to `receiver` lasts: CLAIM_FACTOR times its courier's
        longest delivery, at least CLAIM_MIN_S."""
        return max(CLAIM_MIN_S, math.ceil(CLAIM_FACTOR * self._couriers[receiver].longest_s))

    async def send_now(self, receiver: str, message: Message) -> Outcome:
        """Deliver `message` to `receiver` at once: no grouping, no delivery log."""
        return await self._couriers[receiver].deliver(message)


def _entries(batch: Batch) -> dict[str, str | None]:
    """The stream entry each of the batch's alerts came from (its first, if it came twice)."""
    entries: dict[str, str | None] = {}
    for i in batch.items:
        entries.setdefault(i.alert.id, i.entry)
    return entries
