"""Registry benchmark: register, discover, reload (issue 3 item 5).

    python tools/bench/registry.py [--agents N] [--queries Q] [--batch B] [--db PATH]

1. Builds N agents, each with its own Ed25519 key (agent id derived from it, as in
   Section 3.2) and a real COSE_Sign1 signature over a random capability record
   (1-3 skills out of 500, 1-3 tags per skill out of 200, attributes ``region``,
   ``latency_ms``, ``tier`` and sometimes ``gpu``).  Generation is not timed.  The
   gateway core does not verify signatures (the security layer does, before it), so
   verification cost is not part of ``register_per_s``.
2. Registers them through :class:`GatewayCore` with ``synchronous=FULL``: with
   ``--batch 1`` (the default) every REGISTER is its own committed transaction, so the
   rate is bounded by one fsync per registration; ``--batch B`` uses group commit
   (``register_many``: B registrations per transaction, all acknowledged after its
   commit, so acknowledged still means durable).
3. Runs Q discovery queries (a random skill, one random constraint, 1-2 random tags,
   sometimes an intent; 10 results, federated scope) and reports p50/p99 latency
   (wall clock), plus the p99 of the thread's CPU time, which a shared machine does
   not inflate (a query preempted by another process costs a scheduler slice of wall
   time, several milliseconds).
4. Closes the store and, in a fresh process, times a cold :class:`GatewayCore`
   construction on the file (read every row, rebuild the index and the routing table;
   signed records are decoded lazily), then runs 1,000 of the queries again
   (``discover_after_reload_p99_ms``, which includes decoding the returned records).
   ``rss_mb`` is that process's peak RSS: what a gateway holding N agents needs.
   The construction is timed with the gateway process's GC tuning (``tune_gc``, what
   ``dmsc gateway`` does: the cyclic collector paused during the load, the loaded
   records frozen) and, in another fresh process, without it (``*_untuned``);
   ``gc_collect_ms`` is one full ``gc.collect()`` right after the load, the stall a
   running gateway sees from the collector.

Baselines measured in the same run: ``commit_baseline_per_s`` is bare SQLite
single-row INSERT+COMMIT transactions on a second file with the same pragmas (the
fsync bound), run in slices of 200 between each tenth of the registrations so that
both see the same disk and machine load; ``scan_p50_ms`` is the p50 of a naive linear
scan (skill check and ``constraint_holds`` over every record) for the first 200
queries.  The ratios compare with them.  The machine may be shared: rerun before
trusting a single number.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.registry import ConstraintOp, Scope
from dmscproto.codec.signing import entity_id, sign_record, spki
from dmscproto.codec.values import CapabilityRecord, Constraint, DiscoveryQuery, Endpoint, Skill
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.index import constraint_holds
from dmscproto.gateway.store import RegistryStore

DOMAIN = "bench.example"
GATEWAY_ID = bytes(range(16))
NOW = 1_790_000_000.0
SKILLS = [f"skill{i}" for i in range(500)]
TAGS = [f"tag{i}" for i in range(200)]
MODES = ["text/plain", "application/json", "image/png", "audio/wav"]
REGIONS = ["eu", "us", "uk", "jp", "br", "in", "au", "ca"]
WORDS = ["translate", "summarize", "forecast", "search", "classify", "detect", "render",
         "plan", "route", "price"]


def make_record(i: int, key: ed25519.Ed25519PrivateKey, rng: random.Random) -> SignedRecord:
    pub = key.public_key()
    skills = tuple(
        Skill(sid, f"{rng.choice(WORDS)} {sid}", tuple(rng.sample(TAGS, rng.randint(1, 3))),
              description=f"{rng.choice(WORDS)} and {rng.choice(WORDS)}",
              input_modes=(rng.choice(MODES),), output_modes=(rng.choice(MODES),))
        for sid in rng.sample(SKILLS, rng.randint(1, 3)))
    attrs: dict[str, str | int | bool] = {
        "latency_ms": rng.randint(1, 500), "region": rng.choice(REGIONS),
        "tier": rng.choice(["free", "pro"])}
    if rng.random() < 0.3:
        attrs["gpu"] = True
    record = CapabilityRecord(
        agent_uri=f"dmsc://{DOMAIN}/agent-{i}", agent_id=entity_id(pub), name=f"Agent {i}",
        version="1.0.0", skills=skills, default_input_modes=("text/plain",),
        default_output_modes=("application/json",),
        endpoints=(Endpoint("quic", f"dmsc://{DOMAIN}/agent-{i}"),), domain=DOMAIN,
        issued_at=int(NOW), lease=3600, record_version=1, public_key=spki(pub),
        attributes=dict(sorted(attrs.items(), key=lambda kv: (len(kv[0]), kv[0]))))
    return sign_record(record, key)


def make_query(rng: random.Random) -> DiscoveryQuery:
    constraint = rng.choice([
        Constraint("latency_ms", ConstraintOp.LE, rng.randint(50, 500)),
        Constraint("region", ConstraintOp.IN, tuple(rng.sample(REGIONS, 3))),
        Constraint("tier", ConstraintOp.EQ, rng.choice(["free", "pro"])),
        Constraint("gpu", ConstraintOp.EXISTS, True),
        Constraint("region", ConstraintOp.NE, rng.choice(REGIONS)),
    ])
    intent = f"{rng.choice(WORDS)} {rng.choice(WORDS)} quickly" if rng.random() < 0.5 else None
    return DiscoveryQuery(skills=(rng.choice(SKILLS),),
                          tags=tuple(rng.sample(TAGS, rng.randint(1, 2))),
                          intent=intent, constraints=(constraint,))


def scan(records: list[CapabilityRecord], q: DiscoveryQuery) -> int:
    """The naive baseline: test every record against the mandatory terms."""
    n = 0
    for r in records:
        ids = {s.id for s in r.skills}
        if all(s in ids for s in q.skills) and \
                all(constraint_holds(c, r.attributes) for c in q.constraints):
            n += 1
    return n


class CommitBaseline:
    """Bare single-row INSERT+COMMIT transactions, same pragmas, on a second file."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
        self.n = 0
        self.seconds = 0.0

    def run(self, payloads: list[bytes]) -> None:
        t0 = time.perf_counter()
        for p in payloads:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO t VALUES (?, ?)", (self.n.to_bytes(16, "big"), p))
            self.db.execute("COMMIT")
            self.n += 1
        self.seconds += time.perf_counter() - t0

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def p99(sorted_ns: list[int]) -> int:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * 0.99))]


def ms(ns: float) -> float:
    return round(ns / 1e6, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1, help="registrations per commit")
    ap.add_argument("--db", type=Path, help="registry file (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reload-only", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--untuned", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    queries = [make_query(random.Random(args.seed + i)) for i in range(args.queries)]
    if args.reload_only:
        reload_only(args.reload_only, args.agents, queries, tune_gc=not args.untuned)
        return
    rng = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="dmsc-bench-")
    db_path = args.db or Path(tmp.name) / "registry.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)

    t0 = time.perf_counter()
    signed = [make_record(i, ed25519.Ed25519PrivateKey.generate(), rng)
              for i in range(args.agents)]
    print(f"generated {len(signed)} signed records in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)

    baseline = CommitBaseline(Path(tmp.name) / "baseline.db")
    payloads = [s.encode() for s in signed[:200]]
    core = GatewayCore(GATEWAY_ID, DOMAIN, RegistryStore(db_path))
    reg_s = 0.0
    step = max(args.batch, len(signed) // 10 // args.batch * args.batch)
    for part in range(0, len(signed), step):  # baseline slices between tenths
        t0 = time.perf_counter()
        for start in range(part, min(part + step, len(signed)), args.batch):
            chunk = signed[start:start + args.batch]
            outcomes = core.register_many(((s, 3600) for s in chunk), NOW)
            if any(o.lease == 0 for o in outcomes):
                raise SystemExit(f"registration failed: {outcomes}")
        reg_s += time.perf_counter() - t0
        baseline.run(payloads)
    baseline.db.close()
    print(f"registered in {reg_s:.1f} s", file=sys.stderr)

    lat: list[int] = []
    cpu: list[int] = []
    hits = 0
    for q in queries:
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        res = core.discover(q, Scope.FEDERATED, 10, NOW + 1)
        lat.append(time.perf_counter_ns() - t)
        cpu.append(time.thread_time_ns() - c)
        hits += len(res)
    lat.sort()
    cpu.sort()
    records = [s.record for s in signed]
    scan_lat = []
    for q in queries[:200]:
        t = time.perf_counter_ns()
        scan(records, q)
        scan_lat.append(time.perf_counter_ns() - t)
    del records

    core.store.close()
    del core, signed
    reload = [sys.executable, __file__, "--reload-only", str(db_path), "--agents",
              str(args.agents), "--queries", str(args.queries), "--seed", str(args.seed)]
    reloaded = {}
    for extra, suffix in (([], ""), (["--untuned"], "_untuned")):
        child = subprocess.run([*reload, *extra], check=True, capture_output=True, text=True)
        out = json.loads(child.stdout.strip().splitlines()[-1])
        reloaded.update({f"{k}{suffix}": v for k, v in out.items()})
    tmp.cleanup()

    p50 = statistics.median(lat)
    register_per_s = args.agents / reg_s
    print(json.dumps({
        "agents": args.agents,
        "batch": args.batch,
        "register_per_s": round(register_per_s, 1),
        "commit_baseline_per_s": round(baseline.rate, 1),
        "register_vs_commit_ratio": round(register_per_s / baseline.rate, 3),
        "queries": len(queries),
        "mean_results": round(hits / max(1, len(queries)), 2),
        "discover_p50_ms": ms(p50),
        "discover_p99_ms": ms(p99(lat)),
        "discover_cpu_p99_ms": ms(p99(cpu)),
        "scan_p50_ms": ms(statistics.median(scan_lat)),
        "scan_vs_discover_p50_ratio": round(statistics.median(scan_lat) / p50, 1),
        **reloaded,
    }))


def reload_only(db_path: Path, agents: int, queries: list[DiscoveryQuery], *,
                tune_gc: bool) -> None:
    """Step 4, in a fresh process, so that ``rss_mb`` is a gateway's own footprint."""
    t0 = time.perf_counter()
    core = GatewayCore(GATEWAY_ID, DOMAIN, RegistryStore(db_path), tune_gc=tune_gc)
    reload_s = time.perf_counter() - t0
    t = time.perf_counter_ns()
    gc.collect()
    collect_ns = time.perf_counter_ns() - t
    if len(core) != agents:
        raise SystemExit(f"reload found {len(core)} of {agents} records")
    cold: list[int] = []
    for q in queries[:1000]:
        t = time.perf_counter_ns()
        core.discover(q, Scope.FEDERATED, 10, NOW + 1)
        cold.append(time.perf_counter_ns() - t)
    cold.sort()
    core.store.close()
    print(json.dumps({
        "reload_s": round(reload_s, 3),
        "gc_collect_ms": ms(collect_ns),
        "discover_after_reload_p99_ms": ms(p99(cold)),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
