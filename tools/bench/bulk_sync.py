"""Bulk sync benchmark: a fresh peer learns a whole table over real QUIC (issue 10 item 3).

    python tools/bench/bulk_sync.py [--records N] [--keep DIR]

1. Builds N capability records of one domain, each with its own Ed25519 key and a real
   COSE_Sign1 signature (in worker processes; not timed), and writes them into the
   registry file of gateway gw-x as its own registrations.
2. Starts gw-x as a ``dmsc gateway`` process (QUIC on loopback, ``restart_grace`` 10 ms so
   its records are exported at once), then, in this process, gateway gw-l of the same
   domain (a :class:`~dmscproto.runtime.gateway.GatewayRuntime`) that dials it.  When
   their session is established gw-x sends its table (Section 6.5.3): UPDATEs packed up
   to 64 KiB, paced by the SYNC_ACK window.  gw-l checks every record's signature and
   the federation's import rules before learning it (the guard's record check).
   ``bulk_sync_records_per_s`` is N over the time from the session's establishment to
   the moment gw-l holds all N records.
3. ``verify_per_s``, measured in the same run on the same machine: Ed25519 record
   verifications (``proof.check_signature``, what gw-l's record check runs) per second,
   in one thread of this process, over the first 5,000 records (or N), measured twice:
   just before gw-x starts (``verify_per_s_before``) and just after the transfer, gw-x
   idle again (``verify_per_s_after``); ``verify_per_s`` is the higher of the two.  Not
   during the transfer: the sender and the learner keep both cores of a small machine
   busy, so a baseline measured then is slowed by the benchmark itself and flatters
   the ratio; the higher of two measurements around it is the conservative baseline on
   a machine whose load changes (a single one, a second long, made the wall ratio
   follow the load of that second).  gw-l verifies every record's signature once, in
   one worker thread (its SignaturePrecheck, while its event loop decodes and learns),
   so it may use more than one core; the baseline is one core.
   ``bulk_sync_vs_verify`` is the ratio: on one core, signature checking alone would
   give 1.0; ``bulk_sync_vs_verify_before`` is the ratio to ``verify_per_s_before``
   alone (the only baseline this benchmark had before).
4. ``digest_stall_ms_max``: the longest the event loop stays busy with a DIGEST at N
   records: gw-l's session compares a root DIGEST built by a sending half holding the
   N entries gw-x advertised (the digest trees are kept on write, Section 6.6.1), on
   the running loop, 20 times.  ``loop_stall_ms_max`` (gw-l, the learner) and
   ``sender_loop_stall_ms_max`` (gw-x, run with ``--loop-probe``, from its start) are
   the longest event-loop stalls each saw while the table was transferred (a 1 ms
   ticker, :class:`~dmscproto.runtime.loop.LoopLag`; ``sender_loop_stall_cpu_ms_max``
   is gw-x's longest in its loop thread's CPU time, which a loaded machine stretches
   little (a core shared by two hardware threads does run slower): gw-x sends its
   table in UPDATEs filled a WORK_SLICE at a time, the next after its loop's other
   work, the table taken in chunks of agent ids, its records not decoded since its
   restart decoded on the way, and keeps its domain's summary on write): gw-l reads
   datagrams, decodes large UPDATEs (a step at a time) and applies them (in slices of
   record checks, each committing what passed) within one CPU budget a turn of its
   event loop, LEARN_SLICE (:class:`~dmscproto.transport.driver.TurnBudget`).
   ``loop_stall_cpu_ms_max`` is gw-l's longest in its loop thread's CPU time between
   two ticks: the rest of the turn a tick ran in, the turn its timer is due in, and
   the next one up to the tick (asyncio.sleep's future is set by a timer callback,
   the task step follows a turn later), every callback ready in them.  On a
   loaded machine those include time the process was not scheduled at all, so
   ``loop_callback_cpu_ms_max`` gives gw-l's longest single event-loop callback in
   thread CPU time (a datagram read with the PDUs it completes decoded, a slice, ...:
   the stall an idle machine would see), and ``learn_step_ms_max`` and
   ``learn_step_cpu_ms_max`` the longest single step of gw-l's node (a message fed to
   it, or its timer: one slice), in wall and in thread CPU time, both while the table
   is transferred (not the session's end, after the DIGEST figure, when gw-l drops
   its routes through gw-x in slices).  ``learner_cpu_s``
   and ``sender_cpu_s`` are the CPU seconds each process used during the transfer
   (the learner's include its signature-checking thread): far below ``bulk_sync_s``
   on a loaded machine means neither got a core.
   ``bulk_sync_vs_verify_cpu`` is the same ratio in CPU time, which such a machine
   does not distort: records learned per CPU second of the learner (all its threads)
   over record checks per CPU second (``verify_cpu_per_s``).

This process holds no decoded copy of the N records while gw-l learns them (only their
octets, written to gw-x's file first), so gw-l's heap is its own.

The machine may be shared and loaded: rerun before trusting a single number.  The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.signing import entity_id, sign_record, spki
from dmscproto.gateway.store import RegistryStore, StoredRecord
from dmscproto.host.config import GatewayConfig
from dmscproto.protocol.sync import PeerSync, SyncPeer
from dmscproto.protocol.sync_out import SyncOut
from dmscproto.protocol.sync_out_inputs import DigestDue, Start, TableSent
from dmscproto.runtime.gateway import GatewayRuntime
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.security.proof import check_signature
from dmscproto.testing.examples import weather_record
from dmscproto.transport.driver import EndOfTurn

DOMAIN = "a.example"
CLI = "import sys; from dmscproto.cli import main; sys.exit(main())"


def _sign(first: int, count: int) -> list[bytes]:
    """Encoded signed records ``first`` .. ``first + count - 1`` (a worker's share)."""
    base = weather_record()
    out = []
    for i in range(first, first + count):
        key = ed25519.Ed25519PrivateKey.generate()
        pub = key.public_key()
        rec = replace(base, agent_id=entity_id(pub), public_key=spki(pub),
                      agent_uri=f"dmsc://{DOMAIN}/agent{i}", domain=DOMAIN, name=f"agent{i}")
        out.append(sign_record(rec, key).encode())
    return out


def make_records(n: int) -> list[bytes]:
    """N encoded signed records (signed in worker processes)."""
    workers = max(1, min(4, os.cpu_count() or 1))
    share = -(-n // (workers * 8))
    with ProcessPoolExecutor(workers) as pool:
        chunks = pool.map(_sign, range(0, n, share), [min(share, n - f) for f in
                                                     range(0, n, share)])
        return [raw for chunk in chunks for raw in chunk]


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_limit(config: Path, line: str) -> None:
    text = config.read_text()
    config.write_text(text.replace("[limits]\n", f"[limits]\n{line}\n", 1))


#: Records whose signatures are checked for the baseline (item 3 of the module doc).
VERIFY_SAMPLE = 5000


def verify_rate(records: list[bytes]) -> tuple[float, float]:
    """Single-thread Ed25519 record verifications per second (the baseline), and per
    second of that thread's CPU time, over the first 5,000 of ``records``."""
    sample = [SignedRecord.decode(raw) for raw in records[:VERIFY_SAMPLE]]
    start, cpu = time.perf_counter(), time.thread_time()
    for signed in sample:
        check_signature(signed)
    return (len(sample) / (time.perf_counter() - start),
            len(sample) / (time.thread_time() - cpu))


class CallbackTimes:
    """The longest single callback of the running event loop, in thread CPU time: what
    the loop stall would be on an idle machine.  Every callback (a datagram read, a
    task step, a timer) runs through ``asyncio.Handle._run``, patched while this is
    installed."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self._run = asyncio.Handle._run

    def __enter__(self) -> CallbackTimes:
        run, clock = self._run, time.thread_time

        def timed_run(handle: asyncio.Handle) -> None:
            start = clock()
            run(handle)
            self.cpu = max(self.cpu, clock() - start)

        asyncio.Handle._run = timed_run  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.Handle._run = self._run  # type: ignore[method-assign]


#: One event of gw-l's loop for ``--turns``: what ("turn", "cb", "gc"), its name, and
#: the loop thread's CPU time when it began and ended.
Event = tuple[str, str, float, float]


class TurnLog:
    """``--turns``: what gw-l's event loop ran between two ticks of its loop probe, for
    the windows that cost the most CPU time (``loop_stall_cpu_ms_max`` is the worst),
    printed to stderr: each callback in the loop thread's CPU time, named (a task by its
    coroutine, deferred end-of-turn work by its pieces), the start of each turn, and
    each garbage collection.  A diagnosis: it slows the loop a little."""

    def __init__(self, tick: asyncio.Task[None] | None) -> None:
        self.events: list[Event] = []
        self._tick = tick
        self._run = asyncio.Handle._run  # both set again when entered
        self._once: Callable[[asyncio.BaseEventLoop], None] = (
            asyncio.BaseEventLoop._run_once)  # type: ignore[attr-defined]
        self._gc_start = 0.0

    def _name(self, handle: asyncio.Handle) -> str:
        callback = handle._callback  # type: ignore[attr-defined]
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            return "TICK" if owner is self._tick else \
                f"task {getattr(owner.get_coro(), '__qualname__', '?')}"
        if isinstance(owner, EndOfTurn):
            return "end of turn: " + ", ".join(
                getattr(getattr(w, "func", w), "__qualname__", "?") for w in owner._due)
        callback = getattr(callback, "func", callback)
        return str(getattr(callback, "__qualname__", callback))

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            self.events.append(("gc", f"gen{info['generation']} collection",
                                self._gc_start, time.thread_time()))

    def __enter__(self) -> TurnLog:
        self._run = run = asyncio.Handle._run  # CallbackTimes' too, if entered first
        self._once = once = asyncio.BaseEventLoop._run_once  # type: ignore[attr-defined]
        clock, events = time.thread_time, self.events

        def logged_run(handle: asyncio.Handle) -> None:
            name, start = self._name(handle), clock()
            run(handle)
            events.append(("cb", name, start, clock()))

        def logged_once(loop: asyncio.BaseEventLoop) -> None:
            events.append(("turn", "", clock(), 0.0))
            once(loop)

        asyncio.Handle._run = logged_run  # type: ignore[method-assign,assignment]
        asyncio.BaseEventLoop._run_once = logged_once  # type: ignore[attr-defined]
        gc.callbacks.append(self._collected)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.Handle._run = self._run  # type: ignore[method-assign]
        asyncio.BaseEventLoop._run_once = self._once  # type: ignore[attr-defined]
        gc.callbacks.remove(self._collected)

    def report(self, worst: int = 5) -> str:
        """The ``worst`` windows between two ticks, and the callbacks' totals."""
        ev = self.events
        ticks = [i for i, e in enumerate(ev) if e[1] == "TICK"]
        windows = sorted(((ev[b][2] - ev[a][3], a, b) for a, b in itertools.pairwise(ticks)),
                         reverse=True)
        lines = [f"{len(ticks)} ticks; CPU ms of the worst windows: "
                 + ", ".join(f"{w * 1000:.1f}" for w, _, _ in windows[:20])]
        for cpu, a, b in windows[:worst]:
            lines.append(f"--- {cpu * 1000:.1f} ms between two ticks")
            lines += ["  | a turn begins" if e[0] == "turn" else
                      f"  {(e[3] - e[2]) * 1000:6.2f} ms  {e[1]}" for e in ev[a + 1:b]]
        totals: dict[str, list[float]] = {}
        for kind, name, start, end in ev:
            if kind != "turn":
                t = totals.setdefault(name[:70], [0, 0.0, 0.0])
                t[0] += 1
                t[1] += end - start
                t[2] = max(t[2], end - start)
        lines.append("--- callbacks: count, CPU s in all, longest CPU ms")
        lines += [f"  {n:8.0f} {s:7.2f} {m * 1000:7.2f}  {name}" for name, (n, s, m) in
                  sorted(totals.items(), key=lambda x: -x[1][1])[:20]]
        return "\n".join(lines)


class StepTimes:
    """The longest step of a runtime's node (a message fed to it, or its timer) while
    this is installed."""

    def __init__(self, rt: GatewayRuntime) -> None:
        self.wall = self.cpu = 0.0
        pump = rt.pump
        assert pump is not None
        self._pump = pump
        feed, fire = pump.feed, pump.handle_timer

        def timed_feed(source: object, msg: object) -> None:
            w, c = time.perf_counter(), time.thread_time()
            feed(source, msg)  # type: ignore[arg-type]
            self.note(w, c)

        def timed_fire(now: float) -> None:
            w, c = time.perf_counter(), time.thread_time()
            fire(now)
            self.note(w, c)

        self._timed = (timed_feed, timed_fire)

    def __enter__(self) -> StepTimes:
        pump = self._pump
        pump.feed, pump.handle_timer = self._timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self._pump.feed, self._pump.handle_timer  # the class's methods again

    def note(self, wall: float, cpu: float) -> None:
        self.wall = max(self.wall, time.perf_counter() - wall)
        self.cpu = max(self.cpu, time.thread_time() - cpu)


async def digest_stall(learner: GatewayRuntime, n: int) -> float:
    """The longest a root DIGEST at ``n`` records keeps the loop busy: built by a sending
    half holding the entries gw-x advertised, compared by gw-l's session."""
    node = learner.node
    assert node is not None and learner.core is not None
    [session] = node.sessions.values()
    sync = session.sync
    assert isinstance(sync, PeerSync) and len(sync.inc.tree) == n
    sent: list[object] = []
    out = SyncOut(sync.out.outbox, learner.core,
                  SyncPeer("bench", bytes(16), DOMAIN, lambda m, _t: sent.append(m)),
                  node.txids)
    out.tree = sync.inc.tree  # what gw-x's sending half holds for this session
    out.run(Start(), 0.0)
    out.run(TableSent(), 0.0)
    worst = 0.0
    for _ in range(20):
        await asyncio.sleep(0.01)
        start = time.perf_counter()
        out.run(DigestDue(), time.time())
        digest = sent[-1]
        sync.inc.classify(digest)  # type: ignore[arg-type]
        worst = max(worst, time.perf_counter() - start)
    return worst * 1000


async def run(n: int, root: Path, turns: bool = False) -> dict[str, float | int | None]:
    domain = Domain.create(root, DOMAIN)
    port = free_port()
    exporter = write_gateway_config(domain, "gw-x", listen=("127.0.0.1", port),
                                    restart_grace=0.01, store=root / DOMAIN / "gw-x.sqlite")
    learner = write_gateway_config(domain, "gw-l", peers=[PeerSpec(domain, ("127.0.0.1",
                                                                            port))],
                                   store=root / DOMAIN / "gw-l.sqlite")
    for config in (exporter, learner):
        with_limit(config, f"peer_max_records = {n + 1000}")
    print(f"signing {n} records ...", file=sys.stderr)
    records = make_records(n)
    expires = time.time() + 86000
    with RegistryStore(root / DOMAIN / "gw-x.sqlite") as store:
        for i in range(0, n, 5000):
            chunk = [SignedRecord.decode(raw) for raw in records[i:i + 5000]]
            store.put_many(StoredRecord(s.record.agent_id, s, expires, None,
                                        s.record.record_version) for s in chunk)
    verify_before, verify_cpu_per_s = verify_rate(records)
    sample = records[:VERIFY_SAMPLE]  # octets only, for the second baseline
    del records, chunk
    print(f"verify baseline: {verify_before:,.0f} Ed25519 record checks/s, one thread "
          "(gw-l checks in one worker thread beside its event loop); again after the "
          "transfer", file=sys.stderr)
    log = (root / "gw-x.log").open("w")
    proc = subprocess.Popen([sys.executable, "-P", "-c", CLI, "gateway", "--config", str(exporter),
                             "--log-format", "json", "--loop-probe"],
                            stderr=log, cwd=exporter.parent)
    try:
        rt = GatewayRuntime(GatewayConfig.load(learner), loop_probe=True, tune_gc=True)
        await rt.start()  # dials gw-x until it listens (it loads its registry first)
        await rt.wait_peers(timeout=180)
        start = time.perf_counter()
        cpu = (time.process_time(), process_cpu(proc.pid))
        assert rt.core is not None and rt.loop_lag is not None
        rt.loop_lag.worst = rt.loop_lag.worst_cpu = 0.0  # the transfer only
        log_turns = TurnLog(rt.loop_lag.task) if turns else contextlib.nullcontext()
        with CallbackTimes() as callbacks, StepTimes(rt) as steps, log_turns:
            while len(rt.core) < n:
                await asyncio.sleep(0.01)
                if time.perf_counter() - start > 600:
                    raise TimeoutError(f"{len(rt.core)} of {n} records after 600 s")
        elapsed = time.perf_counter() - start
        cpu = (time.process_time() - cpu[0], process_cpu(proc.pid) - cpu[1])
        loop_stall = await rt.loop_lag.stop()
        if isinstance(log_turns, TurnLog):  # not in the step CallbackTimes measured last
            print(log_turns.report(), file=sys.stderr)
        loop_stall_cpu = rt.loop_lag.worst_cpu * 1000
        verify_after = verify_rate(sample)[0]  # gw-x idle again, gw-l's probes stopped
        stall = await digest_stall(rt, n)
        await rt.stop()
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        log.close()
        if proc.returncode not in (0, -15):
            print((root / "gw-x.log").read_text()[-2000:], file=sys.stderr)
    rate = n / elapsed
    verify_per_s = max(verify_before, verify_after)
    return {"records": n, "bulk_sync_s": round(elapsed, 2),
            "bulk_sync_records_per_s": round(rate), "verify_per_s": round(verify_per_s),
            "bulk_sync_vs_verify": round(rate / verify_per_s, 3),
            "verify_per_s_before": round(verify_before),
            "verify_per_s_after": round(verify_after),
            "bulk_sync_vs_verify_before": round(rate / verify_before, 3),
            "digest_stall_ms_max": round(stall, 3),
            "loop_stall_ms_max": round(loop_stall, 1),
            "loop_stall_cpu_ms_max": round(loop_stall_cpu, 1),
            "loop_callback_cpu_ms_max": round(callbacks.cpu * 1000, 1),
            "learn_step_ms_max": round(steps.wall * 1000, 1),
            "learn_step_cpu_ms_max": round(steps.cpu * 1000, 1),
            "learner_cpu_s": round(cpu[0], 2), "sender_cpu_s": round(cpu[1], 2),
            "verify_cpu_per_s": round(verify_cpu_per_s),
            "bulk_sync_vs_verify_cpu": round(n / cpu[0] / verify_cpu_per_s, 3),
            **sender_stall(root / "gw-x.log")}


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) another process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sender_stall(log: Path) -> dict[str, float | None]:
    """gw-x's longest loop stall, in wall and in its thread's CPU time, from the line its
    probe logs at stop."""
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            fields = json.loads(line)
            if "loop_stall_ms_max" in fields:
                return {"sender_loop_stall_ms_max": float(fields["loop_stall_ms_max"]),
                        "sender_loop_stall_cpu_ms_max":
                            float(fields["loop_stall_cpu_ms_max"])}
    return {"sender_loop_stall_ms_max": None, "sender_loop_stall_cpu_ms_max": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="keep the files in this directory")
    parser.add_argument("--turns", action="store_true",
                        help="print what gw-l's loop ran in the costliest windows between "
                        "two ticks of its probe (stderr; a diagnosis: slows it a little)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="dmsc-bulk-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(run(args.records, root, args.turns))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
