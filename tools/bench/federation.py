"""Federation benchmark: convergence, update cost, duplicates and ghosts in the simulator,
plus the real-process figures of the other federation benchmarks (issue 10 item 9).

    python tools/bench/federation.py [--gateways 200] [--domains 50] [--records 100000]
                                     [--sim-records N] [--seed S] [--no-real] [--serial]

Two simulated federations (:mod:`dmscproto.testing.simulator`: real gateway nodes,
SQLite files on a tmpfs when there is one, every PDU encoded and decoded, simulated
time):

* the 8-gateway full mesh of issue 10 (4 domains of 2 gateways, 28 peer links): 10
  agents register one at a time, then deregister one at a time, each followed by a
  settle (every gateway holds it, or has dropped it, and nothing changed for a second
  or 35 s passed).  ``updates_per_registration`` and ``updates_per_deregistration`` are
  the mean UPDATE PDUs between gateways per operation (target: at most 2 x 28 = 56),
  ``duplicates`` the ADVERTISEs of a version and path the receiver already held from
  that peer on the same session (target 0; a restarted gateway's stored routes that the
  peer's table transfer confirms are not: :mod:`dmscproto.testing.network`),
  ``ghosts_after_converge`` the withdrawn records still held
  after the settles, here and in the large federation (target 0);
* the large federation: ``--gateways`` in ``--domains`` (full mesh inside a domain, a
  random connected graph of degree 3 between domains, each domain link between random
  gateways of the two), gateways of different domains exchanging capability summaries
  only (Section 6.9): a domain's records stay on its gateways, other domains find them
  by relayed DISCOVER.  ``records`` (each with a skill of its own) are registered at
  once; ``converge_s`` is the simulated time until every gateway of the record's domain
  held it (registration seen everywhere its export policy allows),
  ``summary_converge_s`` until the last SUMMARY was delivered; once no SUMMARY has
  been delivered for two SUMMARY_INTERVALs, ``discover_found`` is how many of 20
  records, looked up by skill with a FEDERATED DISCOVER at a gateway of another domain,
  were found (``discover_path_max``: the longest best summary path, in gateways, of
  the domains looked up from where they were asked; the HOP_LIMIT of a relayed
  DISCOVER follows from it, Section 5.2.1), and ``route_by_query_found`` how many
  ROUTE_REQUESTs by the same queries, from a gateway of another domain, reached the
  record's home gateway (delivered to its agent; agents do not answer here).
  ``summary_floods_per_change`` is the SUMMARY PDUs of the load phase over the
  directed links times the domains: 1 when each domain's change crossed each link
  about once (one originator per domain, damped
  re-advertisement, Section 6.9), about the gateways per domain if every gateway
  originated.  Then 1% churn; then a whole domain cut off from the others for twice
  the hold time (deregistrations inside) and healed: ``cut_summaries_left`` counts the
  gateways elsewhere still holding its summary at the end of the cut (path exploration
  would keep some), the ``partition`` phase its SUMMARY PDUs; then a gateway killed and
  restarted (its agents back 15 s later); then the tables are compared with what the
  topology implies (``scale_ghosts``, ``scale_missing``, ``scale_strays``) and
  ``discoverable_ghosts`` counts the deregistered records a FEDERATED DISCOVER from
  another domain still finds.  ``phases`` gives the CPU seconds, PDUs and SUMMARYs of
  each phase.

Every PDU goes through the codec, every record through SQLite at every gateway that
keeps it: the default simulates all of ``--records`` up to SIM_RECORDS (100,000: about
4 minutes and 3.4 GB of memory on an idle 2-core machine); ``--sim-records`` scales a
run down.  The output says ``records`` (what was simulated) and ``records_asked``.

Real processes: ``tools/bench/bulk_sync.py`` (``bulk_sync_records_per_s``,
``bulk_sync_vs_verify``, ``digest_stall_ms_max``, and the learner's longest event-loop
stall in its loop thread's CPU time, ``loop_stall_cpu_ms_max``: item 4's "no stall above
10 ms at 100k records") and then ``tools/bench/failover.py``
(``failure_detect_s``) are run as subprocesses and their last line merged; a figure
whose benchmark is missing, failed or took more than REAL_TIMEOUT is null (stderr says
why).  ``failover.py`` runs while the simulator does (a busier machine can only make its
figure worse); ``bulk_sync.py`` runs after it, alone: ``bulk_sync_vs_verify`` divides
its learner's rate by the higher of two Ed25519 verification rates measured just before
and just after the transfer, and one of them measured once the simulator had finished
would be an idle machine's against a transfer under load (0.13 instead of about 0.36).
``bulk_sync_load`` is the 1-minute load average when it starts.  ``--serial`` runs
``failover.py`` after the simulator as well.

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.registry import MessageType, timer
from dmscproto.codec.values import DiscoveryQuery, Skill
from dmscproto.testing.harness import make_record
from dmscproto.testing.simulator import Simulation
from dmscproto.testing.topology import full_mesh, random_graph

HERE = Path(__file__).resolve().parent
#: Records simulated by default (module doc).
SIM_RECORDS = 100_000
#: Records looked up by FEDERATED DISCOVER from another domain.
SAMPLE = 20
#: Real-process benchmarks and the figures taken from their last line.
REAL = {
    "bulk_sync.py": ("bulk_sync_records_per_s", "bulk_sync_vs_verify", "digest_stall_ms_max",
                     "loop_stall_cpu_ms_max"),
    "failover.py": ("failure_detect_s",),
}
#: The real-process benchmarks run alongside the simulator unless --serial (module doc).
ALONGSIDE = ("failover.py",)
SETTLE = 35.0
#: Seconds a real-process benchmark may take before its figures are null.
REAL_TIMEOUT = 600


def _tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


def _record(n: int, domain: str) -> SignedRecord:
    """Record ``n``: a skill of its own, so that a DISCOVER finds exactly it."""
    return make_record(1000 + n, f"agent-{n}", domain,
                       skills=(Skill(f"skill-{n}", f"Skill {n}", ("bench",)),))


def _found(sim: Simulation, layout: dict[str, str], records: dict[int, bytes],
           rng: random.Random) -> tuple[int, int]:
    """How many of ``records`` (number -> agent id) a FEDERATED DISCOVER by skill, from
    a gateway of another domain, finds; and the longest best summary path of a live
    record's domain where it was asked."""
    asked = {}
    longest = 0
    for n, aid in records.items():
        home = sim.registered[aid][0] if aid in sim.registered else None
        away = [g for g, dom in layout.items() if home is None or dom != layout[home]]
        where = rng.choice(away)
        if home is not None:
            table = sim.node(where).summaries.table
            longest = max([longest, *(len(r.path) for r in map(table.best, table.origins())
                                      if r is not None and r.domain == layout[home])])
        asked[sim.discover(where, DiscoveryQuery(skills=(f"skill-{n}",)))] = aid
    sim.run(5)
    return sum(1 for txid, aid in asked.items() if txid in sim.answers and
               aid in {r.record.record.agent_id for r in sim.answers[txid].results}), longest


def _called(sim: Simulation, layout: dict[str, str], records: dict[int, bytes],
            rng: random.Random) -> int:
    """How many of the live ``records`` a ROUTE_REQUEST by query (their skill), from a
    gateway of another domain, reached at their home gateway."""
    homes = {}
    for n, aid in records.items():
        home = sim.registered[aid][0]
        payload = f"call-{n}".encode()
        homes[payload] = home
        sim.route(rng.choice([g for g, dom in layout.items() if dom != layout[home]]),
                  DiscoveryQuery(skills=(f"skill-{n}",)), payload)
    sim.run(5)
    return sum(1 for payload, home in homes.items() if sim.called.get(payload) == home)


def mesh8(seed: int) -> dict[str, Any]:
    """The 8-gateway, 4-domain full mesh: UPDATE PDUs per (de)registration."""
    with tempfile.TemporaryDirectory(dir=_tmp()) as d:
        sim = Simulation(Path(d), seed=seed)
        names = [f"gw-{i}" for i in range(8)]
        sim.build({n: f"d{i // 2}.example" for i, n in enumerate(names)}, full_mesh(names))
        sim.run(timer("DIGEST_INTERVAL") + 5)
        links = sim.established_links
        per_reg, per_dereg, ghosts = [], [], 0
        for i in range(10):
            home = names[i % len(names)]
            before = sim.count(MessageType.UPDATE)
            sim.register(home, _record(i, sim.gateways[home].domain))
            sim.settle(SETTLE)
            per_reg.append(sim.count(MessageType.UPDATE) - before)
        for aid in list(sim.registered):
            before = sim.count(MessageType.UPDATE)
            sim.deregister(aid)
            sim.settle(SETTLE)
            per_dereg.append(sim.count(MessageType.UPDATE) - before)
        ghosts = sim.check().ghost_count
        out = {"mesh8_links": links,
               "updates_per_registration": sum(per_reg) / len(per_reg),
               "updates_per_deregistration": sum(per_dereg) / len(per_dereg),
               "updates_per_deregistration_max": max(per_dereg),
               "duplicates": sim.duplicates, "mesh8_ghosts": ghosts}
        sim.close()
        return out


class _Phases:
    """CPU seconds and PDUs of each phase of a run."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.cpu = time.process_time()
        self.pdus = self.summaries = 0
        self.done: dict[str, dict[str, float]] = {}

    def end(self, name: str) -> None:
        cpu, pdus = time.process_time(), sum(self.sim.pdus.values())
        summaries = self.sim.count(MessageType.SUMMARY)
        self.done[name] = {"cpu_s": round(cpu - self.cpu, 1), "pdus": pdus - self.pdus,
                           "summaries": summaries - self.summaries}
        self.cpu, self.pdus, self.summaries = cpu, pdus, summaries


def large(gateways: int, domains: int, records: int, seed: int) -> dict[str, Any]:
    """The large federation (module doc)."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(dir=_tmp()) as d:
        sim = Simulation(Path(d), seed=seed, summaries=True)
        doms = [f"d{i}.example" for i in range(domains)]
        members: dict[str, list[str]] = {dom: [] for dom in doms}
        layout = {}
        for i in range(gateways):
            dom = doms[i % domains]
            name = f"gw-{i}"
            layout[name] = dom
            members[dom].append(name)
        edges = [e for names in members.values() for e in full_mesh(names)]
        edges += [(rng.choice(members[a]), rng.choice(members[b]))
                  for a, b in random_graph(doms, 3, rng)]
        sim.build(layout, edges)
        names = list(layout)
        phases = _Phases(sim)
        sim.run(5)
        out: dict[str, Any] = {"links": len(sim.links),
                               "links_established": sim.established_links}
        phases.end("start")
        t = time.perf_counter()
        ids = {}
        for n in range(records):
            home = names[n % len(names)]
            signed = _record(n, layout[home])
            ids[n] = signed.record.agent_id
            sim.register(home, signed)
        start, before = sim.now, sim.count(MessageType.UPDATE)
        sim.settle(4 * timer("DIGEST_INTERVAL"), quiet=2 * timer("SUMMARY_INTERVAL"))
        out["converge_s"] = sim.convergence("register")
        last = sim.delivered_at.get(MessageType.SUMMARY)
        out["summary_converge_s"] = None if last is None else round(last - start, 3)
        out["load_updates"] = sim.count(MessageType.UPDATE) - before
        out["load_summaries"] = sim.count(MessageType.SUMMARY)
        sample = dict(rng.sample(sorted(ids.items()), min(SAMPLE, records)))
        found, out["discover_path_max"] = _found(sim, layout, sample, rng)
        out["discover_found"] = f"{found}/{len(sample)}"
        out["route_by_query_found"] = f"{_called(sim, layout, sample, rng)}/{len(sample)}"
        phases.end("load")
        out["summary_floods_per_change"] = round(
            phases.done["load"]["summaries"] / (2 * len(sim.links) * domains), 2)
        sim.converged.clear()
        # churn: 1% leave, 1% new
        churn = max(1, records // 100)
        left = dict(rng.sample(sorted(ids.items()), churn))
        for aid in left.values():
            sim.deregister(aid)
        for n in range(records, records + churn):
            home = names[n % len(names)]
            sim.register(home, _record(n, layout[home]))
        sim.settle(4 * timer("DIGEST_INTERVAL"))
        reg, dereg = sim.convergence("register"), sim.convergence("deregister")
        out["churn_converge_s"] = None if reg is None or dereg is None else max(reg, dereg)
        sim.converged.clear()
        phases.end("churn")
        # a domain cut off from the others for twice the hold time (deregistrations
        # inside), then healed: its summaries are withdrawn everywhere else, without a
        # path exploration (Section 6.9)
        cut_dom = doms[2]
        cuts = [(link.a, link.b) for link in sim.links.values()
                if (layout[link.a] == cut_dom) != (layout[link.b] == cut_dom)]
        for a, b in cuts:
            sim.cut(a, b)
        inside = [(n, aid) for n, aid in ids.items() if aid in sim.registered
                  and layout[sim.registered[aid][0]] == cut_dom]
        for n, aid in inside[:5]:
            sim.deregister(aid)
            left[n] = aid
        sim.run(2 * timer("HOLD_TIME"))
        out["cut_links"] = len(cuts)
        out["cut_summaries_left"] = sum(
            1 for g, dom in layout.items() if dom != cut_dom and any(
                r is not None and r.domain == cut_dom
                for r in map(sim.node(g).summaries.table.best,
                             sim.node(g).summaries.table.origins())))
        for a, b in cuts:
            sim.heal(a, b)
        healed = sim.settle(4 * timer("DIGEST_INTERVAL"), quiet=5)
        out["partition_healed"] = healed and sim.check().ok
        phases.end("partition")
        # kill -9 of a gateway, restarted after its peers noticed
        victim = members[doms[1]][0]
        sim.kill(victim)
        sim.run(timer("HOLD_TIME") + 10)
        sim.restart(victim)
        sim.settle(4 * timer("DIGEST_INTERVAL"), quiet=5)
        sim.run(max(timer("DIGEST_INTERVAL"), timer("DISCOVERY_CACHE_TTL")) + 5)
        phases.end("restart")
        out["phases"] = phases.done
        check = sim.check()
        gone = dict(list(left.items())[:SAMPLE])
        out["discoverable_ghosts"] = f"{_found(sim, layout, gone, rng)[0]}/{len(gone)}"
        out.update(scale_ghosts=check.ghost_count,
                   scale_missing=sum(map(len, check.missing.values())),
                   scale_strays=sum(map(len, check.strays.values())),
                   scale_duplicates=sim.duplicates,
                   sim_pdus=sum(sim.pdus.values()),
                   sim_wall_s=round(time.perf_counter() - t, 1))
        sim.close()
        return out


def real_figures(skip: bool, scripts: tuple[str, ...]) -> dict[str, Any]:
    """The figures of the real-process benchmarks ``scripts``, run one after the other
    (module doc)."""
    out: dict[str, Any] = {}
    for script in scripts:
        keys = REAL[script]
        out.update(dict.fromkeys(keys))
        path = HERE / script
        if skip:
            print(f"federation: {script} not run (--no-real): {', '.join(keys)} null",
                  file=sys.stderr)
            continue
        if not path.is_file():
            print(f"federation: tools/bench/{script} is not on main yet: "
                  f"{', '.join(keys)} null", file=sys.stderr)
            continue
        if script == "bulk_sync.py":
            out["bulk_sync_load"] = round(os.getloadavg()[0], 2)
        try:
            run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                                 timeout=REAL_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            print(f"federation: tools/bench/{script} took more than {REAL_TIMEOUT} s: "
                  f"{', '.join(keys)} null", file=sys.stderr)
            continue
        lines = run.stdout.strip().splitlines()
        try:
            last = json.loads(lines[-1]) if run.returncode == 0 and lines else None
        except json.JSONDecodeError:
            last = None
        if not isinstance(last, dict):
            print(f"federation: tools/bench/{script} failed (exit {run.returncode}): "
                  f"{run.stderr.strip()[-500:]}", file=sys.stderr)
            continue
        for k in keys:
            out[k] = last.get(k)
            if k not in last:
                print(f"federation: tools/bench/{script} gives no {k}", file=sys.stderr)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateways", type=int, default=200)
    p.add_argument("--domains", type=int, default=50)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--sim-records", type=int, default=None,
                   help=f"records simulated (default: --records, at most {SIM_RECORDS})")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-real", action="store_true", help="simulator figures only")
    p.add_argument("--serial", action="store_true",
                   help="every real-process benchmark after the simulator (module doc)")
    args = p.parse_args()
    records = args.sim_records or min(args.records, SIM_RECORDS)
    if records < args.records:
        print(f"federation: {records} records simulated, not {args.records} "
              "(--sim-records; module doc)", file=sys.stderr)
    t = time.perf_counter()
    result: dict[str, Any] = {"gateways": args.gateways, "domains": args.domains,
                              "records": records, "records_asked": args.records}
    real: dict[str, Any] = {}
    alongside = () if args.serial else ALONGSIDE
    worker = threading.Thread(target=lambda: real.update(real_figures(args.no_real,
                                                                       alongside)))
    worker.start()
    big = large(args.gateways, args.domains, records, args.seed)
    small = mesh8(args.seed)
    worker.join()
    real.update(real_figures(args.no_real, tuple(s for s in REAL if s not in alongside)))
    result["converge_s"] = big.pop("converge_s")
    result.update(small)
    result["ghosts_after_converge"] = small["mesh8_ghosts"] + big["scale_ghosts"]
    result.update(big)
    result.update(real)
    result["wall_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
