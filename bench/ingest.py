"""Ingest bench: the daemon against a bare aiomqtt subscriber, over a private Mosquitto.

    .venv/bin/python bench/ingest.py [--symbols 2000] [--quick] [--profile a|b|d]

One run, 2,000 symbols, QoS 0, each scenario in fresh processes:
  a) one tick per MQTT message: the daemon's sustained ticks/s against a bare aiomqtt subscriber
     that only receives and msgspec-decodes the same stream (the ratio is the figure);
  b) JSON arrays of 100 ticks per message, the same comparison;
  c) a steady 20,000 ticks/s (one tick per message): publish-to-processed latency per tick, and
     tick-to-alert for a 1m surge on S0000, whose price jumps 10% mid-minute;
  d) RSS of the daemon over twenty million ticks in arrays of 100, published at 90% of what (b)
     sustained (capped by time; the rest extrapolated and labelled so): peak RSS after the
     first ten million (the warm-up: the duplicate-tick memory, engine.dedup_max_keys = 8M
     keys, is full by then) against RSS at the end. Flat means the second half adds nothing.

Time: the daemon runs with a clock that maps the wall clock onto 2024-07-16 (a regular NYSE
session), `sim = sim0 + (wall - wall0)`, and the publisher stamps each tick's `ts` (epoch ms) with
the same mapping at publish time. So ticks are inside the session whatever today is, and in the
daemon `clock - ts` is the wall-clock delay since publication.

Latency is measured in the daemon process by wrapping `Pipeline._decode/_step/_process` (bench
only): when a micro-batch has been processed (decoded, ingested, advanced, alerts handed to the
outbox), each of its ticks' delay is `now - ts`. Tick-to-alert is the Redis stream entry id (the
server's ms clock at XADD) minus the wall instant the minute ended.

The publisher writes pre-built MQTT 3.1.1 PUBLISH packets to a plain socket (no client library),
so it costs ~1 µs per message instead of paho's ~20 µs and stays off the measured path. The
broker is a private Mosquitto (max_queued_messages 10,000,000: the default 1000 silently drops
QoS 0). Redis is the real one on 127.0.0.1:6379 with a unique key prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import datetime as dt
import io
import multiprocessing as mp
import os
import pickle
import pstats
import resource
import socket
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

ROOT = Path(__file__).resolve().parent.parent
SIM_DAY = dt.datetime(2024, 7, 16, 14, 0, tzinfo=dt.UTC)  # 10:00 New York, a regular session
JUMP_SYMBOL = "S0000"
TOPIC = "bench/ticks"
MB = 1024 * 1024


class TimeMap(NamedTuple):
    """Wall clock (epoch s) onto the simulated day: `sim0 + (wall - wall0) * speed`."""

    wall0: float
    sim0: float
    speed: float = 1.0

    def sim(self, wall: float) -> float:
        return self.sim0 + (wall - self.wall0) * self.speed

    def wall(self, sim: float) -> float:
        return self.wall0 + (sim - self.sim0) / self.speed


@dataclass(frozen=True)
class Plan:
    """One scenario: what the publisher sends and how the daemon is watched."""

    name: str
    per_msg: int  # ticks per MQTT message
    n_ticks: int
    rate: float  # ticks/s; 0 = as fast as the broker takes them
    cap_s: float  # the publisher stops after this long
    sim0: float  # simulated epoch s at publish start
    jump_at: float | None = None  # simulated epoch s from which JUMP_SYMBOL trades 10% higher
    latency: bool = False
    baseline: bool = False
    measure_s: float = 1e9  # receivers stop this long after their first message


# --- the publisher: raw MQTT over a socket ------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _connect_packet(client_id: str) -> bytes:
    # MQTT 3.1.1, clean session, keepalive 0 (no PINGREQ needed)
    body = _mqtt_string("MQTT") + b"\x04\x02\x00\x00" + _mqtt_string(client_id)
    return b"\x10" + _varint(len(body)) + body


def _templates(n_symbols: int, factor: float) -> list[list[bytes]]:
    """Per symbol, eight tick templates (prices a cent apart) with `%d` slots for id and ts."""
    out = []
    for s in range(n_symbols):
        base = (100.0 + s % 50) * factor
        out.append(
            [
                b'{"symbol":"S%04d","price":%.2f,"size":%d,"id":%%d,"ts":%%d}'
                % (s, base + k * 0.01, 100 + k)
                for k in range(8)
            ]
        )
    return out


def publisher(port: int, plan: Plan, tm: TimeMap, n_symbols: int, out: Connection) -> None:
    """Publish `plan.n_ticks` ticks (or as many as `plan.cap_s` allows) and report the count."""
    normal, jumped = _templates(n_symbols, 1.0), _templates(1, 1.1)[0]
    head = b"\x30"
    topic = _mqtt_string(TOPIC)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_connect_packet(f"bench-pub-{os.getpid()}"))
    ack = sock.recv(4)
    if ack[:1] != b"\x20" or ack[3:4] != b"\x00":
        raise RuntimeError(f"CONNACK refused: {ack!r}")
    jump_ms = None if plan.jump_at is None else plan.jump_at * 1000
    per, rate, total = plan.per_msg, plan.rate, plan.n_ticks
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        elapsed = time.perf_counter() - t0
        if elapsed > plan.cap_s:
            break
        due = total if not rate else min(total, int(elapsed * rate) + per)
        if due - sent < per:
            time.sleep(0.0005)
            continue
        chunk: list[bytes] = []
        while sent + per <= due and len(chunk) < 2000:
            ts = int(tm.sim(time.time()) * 1000)
            parts = []
            for i in range(sent, sent + per):
                s = i % n_symbols
                if s == 0 and jump_ms is not None and ts >= jump_ms:
                    template = jumped[(i // n_symbols) % 8]
                else:
                    template = normal[s][(i // n_symbols) % 8]
                parts.append(template % (i, ts))
            payload = parts[0] if per == 1 else b"[" + b",".join(parts) + b"]"
            body = topic + payload
            chunk.append(head + _varint(len(body)) + body)
            sent += per
        sock.sendall(b"".join(chunk))
    seconds = time.perf_counter() - t0
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.shutdown(socket.SHUT_WR)
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass
    sock.close()
    out.send({"ticks": sent, "messages": sent // per, "seconds": seconds,
              "cpu_s": time.process_time() - cpu0})  # fmt: skip


# --- measuring inside a child process -----------------------------------------------------------


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Progress:
    """(perf_counter, count) samples and RSS readings of one receiving process."""

    def __init__(self, warm_at: int = 1_000_000) -> None:
        self.warm_at = warm_at  # ticks after which memory should stay flat
        self.samples: list[tuple[float, int]] = []
        self.first_at: float | None = None
        self.rss_mb: list[tuple[float, float]] = []  # (seconds since first message, MB)
        self.warm_rss_mb: float | None = None

    def rss(self, count: int) -> None:
        mb = _status_kb("VmRSS") / 1024
        since = 0.0 if self.first_at is None else time.perf_counter() - self.first_at
        self.rss_mb.append((since, mb))
        if self.warm_rss_mb is None and count >= self.warm_at:
            self.warm_rss_mb = mb

    def summary(self) -> dict[str, Any]:
        """Sustained ticks/s between 10% and 90% of the final count, and first-to-last time."""
        if not self.samples or self.samples[-1][1] == 0:
            return {"count": 0, "seconds": 0.0, "rate": 0.0}
        total = self.samples[-1][1]
        t_last = next(t for t, c in self.samples if c == total)
        t_first = self.first_at if self.first_at is not None else self.samples[0][0]
        t1, c1 = next((t, c) for t, c in self.samples if c >= 0.1 * total)
        t2, c2 = next((t, c) for t, c in self.samples if c >= 0.9 * total)
        rate = (c2 - c1) / (t2 - t1) if t2 > t1 else total / max(t_last - t_first, 1e-9)
        return {"count": total, "seconds": t_last - t_first, "rate": rate}


async def _watch(
    count: Callable[[], int],
    started: Callable[[], bool],
    progress: Progress,
    expect: int,
    idle_s: float,
    cap_s: float,
    measure_s: float,
    extra_done: Callable[[], bool] = lambda: True,
) -> bool:
    """Sample until `expect` items arrived (and `extra_done()`), or nothing came for `idle_s`;
    True when stopped by `measure_s` or `cap_s` with items still to come."""
    t0 = time.perf_counter()
    last_change, last, next_rss = t0, -1, t0
    while True:
        now = time.perf_counter()
        if progress.first_at is None and started():
            progress.first_at = now
        n = count()
        progress.samples.append((now, n))
        if n != last:
            last, last_change = n, now
        if now >= next_rss:
            progress.rss(n)
            next_rss += 1.0
        if n >= expect and extra_done():
            return False
        if progress.first_at is not None and now - last_change > idle_s:
            return False
        if now - t0 > cap_s or (progress.first_at and now - progress.first_at > measure_s):
            return True
        await asyncio.sleep(0.02)


class BenchClock:
    """The daemon's clock: frozen at `sim0` until `start`, then the wall clock mapped by TimeMap."""

    def __init__(self, sim0: float) -> None:
        self.sim0 = sim0
        self.map: TimeMap | None = None

    def now(self) -> dt.datetime:
        sim = self.sim0 if self.map is None else self.map.sim(time.time())
        return dt.datetime.fromtimestamp(sim, dt.UTC)


class Probe:
    """Wraps the pipeline's decode / step / process to time them and take tick delays."""

    def __init__(self, clock: BenchClock, latency: bool) -> None:
        self.clock = clock
        self.latency = latency
        self.batches = 0
        self.messages = 0
        self.max_messages = 0
        self.decode_s = 0.0
        self.step_s = 0.0
        self.process_s = 0.0
        self.worst_process_s = 0.0
        self.delays: list[Any] = []  # numpy arrays of ms, one per batch
        self.batch_log: list[tuple[float, float, int]] = []  # (wall done, took s, ticks)
        self.alert_done_at: list[float] = []  # wall time of the step that fired an alert
        self.worker_profile: cProfile.Profile | None = None
        self._batch: Any = None

    def install(self) -> None:
        from monitor.pipeline import Pipeline

        decode, step, process = Pipeline._decode, Pipeline._step, Pipeline._process
        probe = self

        def timed_decode(pipeline: Pipeline, items: list[Any]) -> Any:
            t = time.perf_counter()
            decoded = decode(pipeline, items)  # (the batch, and the feeds' parts of it)
            batch = decoded[0]
            probe.decode_s += time.perf_counter() - t
            n = sum(len(i.payloads) if hasattr(i, "payloads") else 1 for i in items)
            probe.messages += n
            probe.max_messages = max(probe.max_messages, n)
            probe._batch = batch
            return decoded

        def timed_step(pipeline: Pipeline, batch: Any, now: dt.datetime, *args: Any) -> Any:
            t = time.perf_counter()
            if probe.worker_profile is not None:
                probe.worker_profile.enable()
            try:
                return step(pipeline, batch, now, *args)
            finally:
                if probe.worker_profile is not None:
                    probe.worker_profile.disable()
                probe.step_s += time.perf_counter() - t

        async def timed_process(pipeline: Pipeline, items: list[Any]) -> None:
            t = time.perf_counter()
            fired = pipeline.counters.total("alerts_fired")
            await process(pipeline, items)
            done = time.time()
            took = time.perf_counter() - t
            if items:
                probe.batches += 1
                probe.process_s += took
                probe.worst_process_s = max(probe.worst_process_s, took)
            if pipeline.counters.total("alerts_fired") > fired:
                probe.alert_done_at.append(done)
            batch, probe._batch = probe._batch, None
            if probe.latency and batch is not None and batch.ticks.height and probe.clock.map:
                ts_ms = batch.ticks.get_column("ts").dt.epoch("ms").to_numpy()
                # the first 2 s of publishing are start-up (connection, first polars calls)
                ts_ms = ts_ms[ts_ms >= (probe.clock.map.sim0 + 2.0) * 1000]
                probe.delays.append(probe.clock.map.sim(done) * 1000 - ts_ms)
                probe.batch_log.append((done, took, len(ts_ms)))

        Pipeline._decode = timed_decode  # type: ignore[method-assign]
        Pipeline._step = timed_step  # type: ignore[method-assign]
        Pipeline._process = timed_process  # type: ignore[method-assign]


JOURNAL_FSYNC = "true"  # [store] journal_fsync of the daemon (--journal-fsync)


def _write_config(work: Path, port: int, prefix: str) -> Path:
    rules = work / "rules.toml"
    rules.write_text(
        f"""[[rules]]
id = "surge.1m"
kind = "surge"
symbols = ["{JUMP_SYMBOL}"]
timeframe = "1m"
window = 1
min_return = 0.05
"""
    )
    conf = work / "monitor.toml"
    conf.write_text(
        f"""[store]
path = "{work / "store"}"
journal_fsync = {JOURNAL_FSYNC}
[[feeds]]
kind = "mqtt"
name = "bench"
url = "mqtt://127.0.0.1:{port}"
topics = ["{TOPIC}"]
qos = 0
[redis]
url = "redis://127.0.0.1:6379/0"
channel = "{prefix}:alerts"
stream = "{prefix}:alerts"
[rules]
file = "{rules}"
[http]
port = 0
"""
    )
    return conf


def daemon_child(conf: str, plan: Plan, profile: bool, log: str, out: Connection) -> None:
    """Run the daemon in this process until the plan's ticks are in; send back what it saw."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 2)
    from monitor import logs

    logs.configure(level="warning", json=True)
    asyncio.run(_daemon(conf, plan, profile, out))


async def _daemon(conf: str, plan: Plan, profile: bool, out: Connection) -> None:
    from monitor import config as cfg
    from monitor.service import Daemon, run

    clock = BenchClock(plan.sim0)
    probe = Probe(clock, plan.latency)
    probe.install()
    main_profile = cProfile.Profile() if profile else None
    probe.worker_profile = cProfile.Profile() if profile else None
    stop = asyncio.Event()
    ready: list[Daemon] = []
    # (d): warm once the duplicate-tick memory is full (engine.dedup_max_keys, 8M ticks)
    progress = Progress(plan.n_ticks // 2 if plan.name.startswith("d") else 1_000_000)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(
            run(cfg.load(conf), stop=stop, clock=clock, install_signals=False,
                on_ready=ready.append),
            name="daemon",
        )  # fmt: skip
        async with asyncio.timeout(30):
            while not ready or ready[0].counters.total("feed_subscribes") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        daemon = ready[0]
        counters = daemon.counters
        clock.map = TimeMap(time.time(), plan.sim0)
        cpu0 = _cpu_s()
        rss0 = _status_kb("VmRSS") / 1024
        out.send(("ready", clock.map))
        if main_profile is not None:
            main_profile.enable()

        def count() -> int:
            return int(counters.total("ticks_in") + counters.total("rejections"))

        def alerted() -> bool:
            return not plan.latency or counters.total("alerts_fired") >= 1

        capped = await _watch(
            count,
            lambda: counters.total("feed_messages") > 0,
            progress,
            plan.n_ticks,
            idle_s=5.0,
            cap_s=plan.cap_s + 60,
            measure_s=plan.measure_s,
            extra_done=alerted,
        )
        if main_profile is not None:
            main_profile.disable()
        cpu = _cpu_s() - cpu0
        stop.set()
        await task
    book = daemon.engine._book
    result = {
        **progress.summary(),
        "capped": capped,
        "rss_start_mb": rss0,
        "rss_warm_mb": progress.warm_rss_mb,
        "rss_end_mb": progress.rss_mb[-1][1] if progress.rss_mb else None,
        "rss_peak_mb": _status_kb("VmHWM") / 1024,
        "rss_series": progress.rss_mb,
        "cpu_s": cpu,
        "messages": int(counters.total("feed_messages")),
        "ticks_in": int(counters.total("ticks_in")),
        "rejections": dict(daemon.engine.counts),
        "late_corrected": (book.counts.get("late_tick_corrected", 0) if book else 0),
        "queue_full_waits": int(counters.total("feed_queue_full_waits")),
        "read_pauses": int(counters.total("feed_read_pauses")),
        "broker_dropped": counters.get("broker_messages_dropped", feed="bench"),
        "alerts": int(counters.total("alerts_fired")),
        "alert_done_at": probe.alert_done_at,
        "batches": probe.batches,
        "mean_messages": probe.messages / max(probe.batches, 1),
        "max_messages": probe.max_messages,
        "decode_s": probe.decode_s,
        "step_s": probe.step_s,
        "process_s": probe.process_s,
        "worst_process_s": probe.worst_process_s,
        "held_mb": _held_mb(daemon),
    }
    if probe.delays:
        import numpy as np

        delays = np.concatenate(probe.delays)
        result["delays_ms"] = delays
        result["batch_log"] = probe.batch_log
        result["batch_delays_max"] = [float(d.max()) if d.size else 0.0 for d in probe.delays]
    if main_profile is not None and probe.worker_profile is not None:
        result["profile"] = _profile_text(main_profile, "event loop thread") + _profile_text(
            probe.worker_profile, "engine worker thread"
        )
    out.send(result)


def _held_mb(daemon: Any) -> dict[str, float]:
    """What the engine holds, by part (private attributes: a bench may look)."""
    engine = daemon.engine
    book = engine._book
    held = {"minutes": engine.minutes.estimated_size() / MB}
    if book is not None:
        held["dedup_keys"] = sum(s.estimated_size() for s in book._seen.buckets.values()) / MB
        held["closed_minutes"] = (
            sum(f.estimated_size() for d in book._closed.minutes.values() for f in d.values()) / MB
        )
        held["open_bars"] = book._open.estimated_size() / MB
    return held


def _profile_text(prof: cProfile.Profile, title: str) -> str:
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(18)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    return f"--- {title} (by own time) ---\n" + "\n".join(lines[-20:]) + "\n"


def bare_child(port: int, plan: Plan, out: Connection) -> None:
    """The baseline: aiomqtt receiving and msgspec-decoding the same stream, nothing else."""
    asyncio.run(_bare(port, plan, out))


class WireTick(msgspec.Struct, frozen=True):
    symbol: str
    ts: int
    price: float
    size: float = 0.0
    id: str | int | None = None


async def _bare(port: int, plan: Plan, out: Connection) -> None:
    import aiomqtt

    decoder = msgspec.json.Decoder(list[WireTick] | WireTick)
    progress = Progress()
    seen = {"ticks": 0, "messages": 0}

    async def read(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            decoded = decoder.decode(message.payload)  # type: ignore[arg-type]
            seen["ticks"] += len(decoded) if isinstance(decoded, list) else 1
            seen["messages"] += 1

    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(TOPIC, qos=0)
        cpu0 = _cpu_s()
        out.send(("ready", None))
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(read(client), name="read")
            capped = await _watch(
                lambda: seen["ticks"],
                lambda: seen["messages"] > 0,
                progress,
                plan.n_ticks,
                idle_s=5.0,
                cap_s=plan.cap_s + 60,
                measure_s=plan.measure_s,
            )
            reader.cancel()
    result = {**progress.summary(), "capped": capped, "cpu_s": _cpu_s() - cpu0}
    out.send({**result, "messages": seen["messages"], "rss_peak_mb": _status_kb("VmHWM") / 1024})


# --- orchestration ------------------------------------------------------------------------------


@dataclass
class Row:
    plan: Plan
    published: dict[str, Any] = field(default_factory=dict)
    daemon: dict[str, Any] = field(default_factory=dict)
    bare: dict[str, Any] = field(default_factory=dict)
    broker_cpu_s: float = 0.0
    bare_broker_cpu_s: float = 0.0
    timemap: TimeMap | None = None


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_one(
    ctx: Any,
    target: Callable[..., None],
    args: tuple[Any, ...],
    port: int,
    broker_pid: int,
    plan: Plan,
    n_symbols: int,
) -> tuple[dict[str, Any], dict[str, Any], float, TimeMap | None]:
    """Start a receiver, wait until it subscribed, publish, collect both reports."""
    recv_end, recv_out = ctx.Pipe(duplex=False)
    receiver = ctx.Process(target=target, args=(*args, recv_out), daemon=True)
    receiver.start()
    if not recv_end.poll(60):
        raise RuntimeError(f"{plan.name}: receiver not ready")
    _, tm = recv_end.recv()
    tm = tm or TimeMap(time.time(), plan.sim0)
    cpu0 = _proc_cpu_s(broker_pid)
    pub_end, pub_out = ctx.Pipe(duplex=False)
    pub = ctx.Process(target=publisher, args=(port, plan, tm, n_symbols, pub_out), daemon=True)
    pub.start()
    published = pub_end.recv()
    pub.join(10)
    if not recv_end.poll(plan.cap_s + 120):
        raise RuntimeError(f"{plan.name}: receiver did not report")
    got = recv_end.recv()
    broker_cpu = _proc_cpu_s(broker_pid) - cpu0
    receiver.join(60)
    return published, got, broker_cpu, tm


def _plans(n_symbols: int, quick: bool) -> list[Plan]:
    day = SIM_DAY.timestamp()
    scale = 0.2 if quick else 1.0
    single = int(200_000 * scale) // n_symbols * n_symbols or n_symbols
    arrays = int(6_000_000 * scale) // 100 * 100
    latency_s = 67.0  # from 14:00:57 past 14:02:02, when the 14:01 bar (with the jump) closes
    return [
        Plan("a 1 tick/msg", 1, single, 0, 60, day + 5, baseline=True, measure_s=20),
        Plan("b 100 ticks/msg", 100, arrays, 0, 60, day + 5, baseline=True, measure_s=20),
        Plan("c1 20k/s 1/msg", 1, int(20_000 * latency_s), 20_000, latency_s + 3, day + 57,
             jump_at=day + 90, latency=True, measure_s=latency_s + 15),
        Plan("c2 20k/s 100/msg", 100, int(20_000 * latency_s), 20_000, latency_s + 3, day + 57,
             jump_at=day + 90, latency=True, measure_s=latency_s + 15),
        Plan("d 20M ticks RSS", 100, int(20_000_000 * scale), 0, 90, day + 5, measure_s=120),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a fifth of the ticks (smoke test)")
    parser.add_argument("--only", default="abcd", help="scenarios to run, e.g. ab")
    parser.add_argument("--profile", default="", help="cProfile the daemon in these scenarios")
    parser.add_argument("--save", default="", help="pickle the raw results to this file")
    parser.add_argument(
        "--journal-fsync", choices=["true", "false"], default="true", help="[store] journal_fsync"
    )
    parser.add_argument("--report", default="", help="only print the report of a --save file")
    args = parser.parse_args(argv)
    global JOURNAL_FSYNC
    JOURNAL_FSYNC = args.journal_fsync
    if args.report:
        report(*pickle.loads(Path(args.report).read_bytes()))
        return 0
    sys.path.insert(0, str(ROOT))
    import redis

    from tests.feeds.mosquitto_server import MosquittoServer

    ctx = mp.get_context("spawn")
    prefix = f"mm-bench-ingest-{uuid.uuid4().hex[:8]}"
    r = redis.Redis()
    r.ping()
    rows: list[Row] = []
    started = time.perf_counter()
    print(f"load average before: {_loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mm-ingest-") as tmp:
        broker = MosquittoServer(Path(tmp) / "mqtt", max_queued_messages=10_000_000)
        try:
            broker.start()
            assert broker._process is not None
            broker_pid = broker._process.pid
            b_rate = 0.0
            for plan in _plans(args.symbols, args.quick):
                key = plan.name.split()[0]
                if key.rstrip("12") not in args.only:
                    continue
                if plan.name.startswith("d") and b_rate:
                    plan = dataclasses.replace(plan, rate=0.9 * b_rate)
                row = Row(plan)
                if plan.baseline:
                    row.published, row.bare, row.bare_broker_cpu_s, _ = _run_one(
                        ctx, bare_child, (broker.port, plan), broker.port, broker_pid, plan,
                        args.symbols,
                    )  # fmt: skip
                work = Path(tmp) / key
                work.mkdir()
                conf = _write_config(work, broker.port, f"{prefix}-{key}")
                log = str(work / "daemon.log")
                profile = key.rstrip("12") in args.profile
                row.published, row.daemon, row.broker_cpu_s, row.timemap = _run_one(
                    ctx, daemon_child, (str(conf), plan, profile, log), broker.port, broker_pid,
                    plan, args.symbols,
                )  # fmt: skip
                if plan.name.startswith("b"):
                    b_rate = row.daemon["rate"]
                if plan.latency:
                    row.daemon["stream"] = r.xrange(f"{prefix}-{key}:alerts")
                warnings = Path(log).read_text().splitlines()
                row.daemon["log_lines"] = len(warnings)
                row.daemon["log_tail"] = warnings[-3:]
                rows.append(row)
                print(f"  done {plan.name} ({time.perf_counter() - started:.0f} s)", flush=True)
        finally:
            broker.kill()
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)
            r.close()
    results = (rows, args.symbols, time.perf_counter() - started)
    if args.save:
        Path(args.save).write_bytes(pickle.dumps(results))
    report(*results)
    return 0


# --- the report ---------------------------------------------------------------------------------


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _fmt_rate(x: float | None) -> str:
    return "-" if not x else f"{x / 1000:,.1f}k"


def report(rows: list[Row], n_symbols: int, wall_s: float) -> None:
    import numpy as np

    print()
    print(f"load average (other processes included) at the end: {_loadavg()}")
    print(
        f"market-monitor ingest bench: {n_symbols} symbols, QoS 0, private Mosquitto, "
        f"{os.cpu_count()} CPUs shared by publisher, broker and daemon (total {wall_s:.0f} s)"
    )
    head = (
        f"{'scenario':<17}{'published':>11}{'received':>11}{'unread':>11}{'s':>7}"
        f"{'ticks/s':>10}{'baseline':>10}{'ratio':>7}{'p50/p99 ms':>14}{'RSS MB':>16}"
    )
    print(head)
    print("-" * len(head))
    notes: list[str] = []
    for row in rows:
        d, b, p = row.daemon, row.bare, row.published
        key = row.plan.name.split()[0]
        rejected = sum(d["rejections"].values())
        received = d["ticks_in"] + rejected
        # not received when the daemon was stopped (measuring cap or 5 s without progress): still
        # queued in the broker or the client; the broker's own drop counter is in the notes
        drops = f"{p['ticks'] - received:,}"
        ratio = f"{d['rate'] / b['rate']:.2f}" if b.get("rate") else "-"
        lat = "-"
        if "delays_ms" in d:
            steady = d["delays_ms"]
            if not steady.size:  # nothing published after the first 2 s got processed
                steady = np.array([float("nan")])
            p50, p99 = np.percentile(steady, [50, 99])
            lat = f"{p50:,.0f}/{p99:,.0f}"
            notes.append(
                f"  {key}: per-tick delay publish->batch processed over {steady.size:,} ticks "
                f"(first 2 s excluded): p50 {p50:.1f} ms, p90 {np.percentile(steady, 90):.1f}, "
                f"p99 {p99:.1f}, p99.9 {np.percentile(steady, 99.9):.1f}, max "
                f"{steady.max():.1f} ms"
            )
            notes += _alert_notes(row)
        rss = f"{d['rss_peak_mb']:.0f}"
        if key == "d" and d.get("rss_warm_mb"):
            rss = f"{d['rss_warm_mb']:.0f}>{d['rss_end_mb']:.0f} pk{d['rss_peak_mb']:.0f}"
        print(
            f"{row.plan.name:<17}{p['ticks']:>11,}{received:>11,}{drops:>11}{d['seconds']:>7.1f}"
            f"{_fmt_rate(d['rate']):>10}{_fmt_rate(b.get('rate')):>10}{ratio:>7}{lat:>14}"
            f"{rss:>16}"
        )
        cpu_us = d["cpu_s"] / max(d["count"], 1) * 1e6
        if b:
            bare_us = b["cpu_s"] / max(b["count"], 1) * 1e6
            notes.append(
                f"  {key}: baseline {b['count']:,} ticks in {b['seconds']:.1f} s "
                f"({b['messages']:,} msgs{', capped' if b['capped'] else ''}), CPU {bare_us:.1f} "
                f"µs/tick (daemon {cpu_us:.1f}: CPU ratio {bare_us / cpu_us:.2f}), broker CPU "
                f"{row.bare_broker_cpu_s:.1f} s, RSS {b['rss_peak_mb']:.0f} MB"
            )
        notes.append(
            f"  {key}: daemon {d['messages']:,} msgs, {d['ticks_in']:,} ticks in, rejected "
            f"{d['rejections'] or 0}, late corrected {d['late_corrected']:,}, broker dropped "
            f"{d['broker_dropped']:.0f}, queue-full waits {d['queue_full_waits']:,}, socket read "
            f"pauses {d.get('read_pauses', 0):,}; CPU: daemon "
            f"{d['cpu_s']:.1f} s ({cpu_us:.1f} µs/tick), broker {row.broker_cpu_s:.1f} s, "
            f"publisher {p['cpu_s']:.1f} s (published in {p['seconds']:.1f} s)"
        )
        notes.append(
            f"     {d['batches']:,} batches (mean {d['mean_messages']:.0f}, max "
            f"{d['max_messages']:,} msgs, worst {d['worst_process_s'] * 1000:,.0f} ms): decode "
            f"{d['decode_s']:.1f} s, engine step {d['step_s']:.1f} s (worker thread), whole "
            f"_process {d['process_s']:.1f} s; held: "
            + ", ".join(f"{k} {v:.0f} MB" for k, v in d["held_mb"].items())
        )
        if key == "d":
            notes += _rss_notes(row)
        if d["log_lines"]:
            notes.append(f"     daemon log: {d['log_lines']} warning lines, last: {d['log_tail']}")
    print()
    print("\n".join(notes))
    for row in rows:
        if "profile" in row.daemon:
            print(f"\nprofile of {row.plan.name}:\n{row.daemon['profile']}")


def _alert_notes(row: Row) -> list[str]:
    from monitor.core.model import decode_alert

    d, tm = row.daemon, row.timemap
    stream = d.get("stream") or []
    if tm is None or not stream:
        return ["     tick-to-alert: NO alert on the Redis stream"]
    out = []
    for entry_id, fields in stream:
        alert = decode_alert(fields[b"alert"])
        xadd_wall = int(entry_id.split(b"-")[0]) / 1000
        end_sim = dt.datetime.fromisoformat(alert.ts.replace("Z", "+00:00")).timestamp()
        end_wall = tm.wall(end_sim)
        step_done = d["alert_done_at"][0] if d["alert_done_at"] else float("nan")
        out.append(
            f"     tick-to-alert {alert.rule} {alert.symbol} (minute ending {alert.ts}): "
            f"{(xadd_wall - end_wall) * 1000:.0f} ms from the minute's end to XADD = 2000 ms "
            f"bar close delay + {(step_done - end_wall) * 1000 - 2000:.0f} ms until the "
            f"closing step finished + {(xadd_wall - step_done) * 1000:.0f} ms outbox->Redis"
        )
    return out


def _rss_notes(row: Row) -> list[str]:
    d, p = row.daemon, row.published
    series = d["rss_series"]
    every = max(1, len(series) // 12)
    trace = ", ".join(f"{t:.0f}s {mb:.0f}" for t, mb in series[::every])
    out = [f"  d: RSS MB over time (since first message): {trace}"]
    planned = row.plan.n_ticks
    if p["ticks"] < planned:
        rate = d["rate"] or 1.0
        out.append(
            f"  d: EXTRAPOLATED: only {p['ticks']:,} ticks published within the time cap; "
            f"{planned:,} would take {planned / rate:.0f} s at {rate:,.0f} ticks/s"
        )
    warm, end = d.get("rss_warm_mb"), d.get("rss_end_mb")
    if warm and end:
        out.append(
            f"  d: RSS after {p['ticks'] // 2:,} ticks (the warm-up: duplicate-tick memory full) "
            f"{warm:.0f} MB, at the end {end:.0f} MB "
            f"({(end / warm - 1) * 100:+.0f}%), peak {d['rss_peak_mb']:.0f} MB"
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
