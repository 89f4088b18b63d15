"""The interop runner (interop/README.md): every pair of implementations, in both roles,
on every test case and transport they support.

For each case it issues certificates from the run's two domain authorities
(:class:`dmscproto.sandbox.domains.Domain`), puts a recording relay in front of each
gateway listener (:class:`dmscproto.sandbox.relay.Relay`, impaired for the ``-loss``
cases), starts the endpoints with the contract's environment (gateways, then server
agents, then clients), stops them with SIGTERM, and judges the case on the decoded
capture (:mod:`.wire`, :mod:`.cases`) as well as on the exit statuses.  Each case keeps
its directory: ``trace.pcap``, ``keys.log``, ``trace.txt`` (the decoded messages),
``check.txt`` and one directory per endpoint (its stdout, stderr and outputs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dmscproto.analysis.pcap import PcapWriter
from dmscproto.sandbox.demo import impairment
from dmscproto.sandbox.domains import Domain
from dmscproto.sandbox.relay import Impairment, Relay
from dmscproto.security.ca import Kind

from . import contract as c
from .cases import GATEWAY, PEER, SKILL, Case, Check, Client, wellformed
from .manifest import Implementation
from .vectors import draft_vectors
from .wire import Trace, WireError, read_trace

#: The impairment of the ``-loss`` cases: 10% loss, 5% duplicated, 5% reordered.
LOSS = 0.1
#: How long an endpoint may take to become ready, and to stop after SIGTERM (seconds).
READY_TIMEOUT, STOP_TIMEOUT = 20.0, 10.0
#: How long a hand-started endpoint may take to become ready (seconds).
MANUAL_TIMEOUT = 600.0
DOMAINS = {GATEWAY: "a.example", PEER: "b.example"}
PASSED, FAILED, UNSUPPORTED = "passed", "failed", "unsupported"


@dataclass
class Result:
    """One case on one transport for one pair (``pair``: the implementations in the
    case's two roles: agent and gateway, gateway and peer-gateway, or the decoder
    twice)."""

    case: str
    transport: str
    pair: tuple[str, str]
    status: str
    reason: str = ""
    duration: float = 0.0
    logs: str = ""
    messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "transport": self.transport, "pair": list(self.pair),
                "status": self.status, "reason": self.reason,
                "duration": round(self.duration, 2), "logs": self.logs,
                "messages": self.messages}


class CaseFailed(Exception):
    """The case failed (or, with ``status`` UNSUPPORTED, an endpoint declined it)."""

    def __init__(self, reason: str, status: str = FAILED) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Endpoint:
    """One endpoint process of a case."""

    label: str
    role: c.Role
    impl: Implementation
    env: dict[str, str]
    directory: Path
    process: asyncio.subprocess.Process | None = None
    files: list[IO[Any]] = field(default_factory=list)
    #: Started by hand (``python -m interop debug``): the runner only prints its
    #: environment and waits for it.
    manual: bool = False

    @property
    def ready_file(self) -> Path:
        return Path(self.env[c.READY])

    async def start(self, stdin: Path | None = None, stdout: Path | None = None) -> None:
        if self.manual:
            self.hand_over()
            return
        out = (stdout or self.directory / "stdout.log").open("wb")
        err = (self.directory / "stderr.log").open("wb")
        inp = stdin.open("rb") if stdin is not None else None
        self.files = [f for f in (out, err, inp) if f is not None]
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.impl.argv(), cwd=self.impl.cwd, env=self.env, stdout=out, stderr=err,
                stdin=inp or asyncio.subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise CaseFailed(f"{self.label}: cannot start {self.impl.argv()}: {exc}") from exc

    def hand_over(self) -> None:
        """Write the endpoint's environment to ``<label>.env`` and say how to use it."""
        own = {k: v for k, v in sorted(self.env.items())
               if k.startswith("DMSC_") or k == "SSLKEYLOGFILE"}
        path = self.directory.parent / f"{self.label}.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in own.items()))
        waits = self.role is not c.Role.AGENT or self.env.get(c.PARTY) == c.Party.SERVER
        print(f"\nStart your {self.label} ({self.role.value}) now, with this environment "
              f"(also in {path}):\n" + "".join(f"  export {k}={v}\n" for k, v in own.items())
              + ("It is awaited until it creates DMSC_READY." if waits else
                 "Press Ctrl-C when it is done: the runner then stops the rest and judges "
                 "the capture."), flush=True)

    async def wait_ready(self) -> None:
        timeout = MANUAL_TIMEOUT if self.manual else READY_TIMEOUT
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.process is not None and self.process.returncode is not None:
                self.check(self.process.returncode, "exited before it was ready")
                raise CaseFailed(f"{self.label} exited 0 before it was ready")
            if time.monotonic() > deadline:
                raise CaseFailed(f"{self.label} not ready after {timeout:.0f} s")
            await asyncio.sleep(0.05)

    def check(self, status: int, when: str = "") -> None:
        if status == c.EXIT_UNSUPPORTED:
            raise CaseFailed(f"{self.impl.name} does not support it as {self.label}",
                             UNSUPPORTED)
        if status != c.EXIT_PASSED:
            raise CaseFailed(f"{self.label} ({self.impl.name}) exited {status}"
                             f"{' ' + when if when else ''}; see {self.directory.name}/")

    async def finish(self, interrupted: asyncio.Event) -> None:
        """Wait for a client: its exit status, or Ctrl-C for one started by hand."""
        if self.manual:
            await interrupted.wait()
            return
        assert self.process is not None
        self.check(await self.process.wait())

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; the exit status (None: killed)."""
        process = self.process
        if self.manual:
            return c.EXIT_PASSED  # its own to stop
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
                self.close_files()
                return None
        self.close_files()
        return process.returncode

    def close_files(self) -> None:
        for f in self.files:
            f.close()
        self.files = []


def free_port() -> int:
    """A UDP port of 127.0.0.1 free now (the gateway is told to listen on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CaseRun:
    """One case on one transport with the implementations ``impls`` by role (the agents'
    implementation per gateway in ``agents``)."""

    def __init__(self, case: Case, transport: str, impls: dict[str, Implementation],
                 agents: dict[str, Implementation], domains: dict[str, Domain],
                 directory: Path, manual: str | None = None) -> None:
        self.case, self.transport, self.impls = case, transport, impls
        self.manual = manual
        #: Set by Ctrl-C in a debug run (the hand-started client is done).
        self.interrupted = asyncio.Event()
        self.agents, self.domains, self.directory = agents, domains, directory
        self.endpoints: list[Endpoint] = []
        self.relays: dict[str, Relay] = {}
        self.listeners: dict[int, str] = {}
        self.pcap: PcapWriter | None = None
        self.drop = case.drop() if case.drop is not None else None

    # --- endpoints ------------------------------------------------------------------------
    def endpoint(self, label: str, role: c.Role, impl: Implementation, home: str,
                 **extra: str) -> Endpoint:
        directory = self.directory / label
        directory.mkdir(parents=True, exist_ok=True)
        domain = self.domains[home]
        name = label.replace("@", "-")
        kind = Kind.AGENT if role is c.Role.AGENT else Kind.GATEWAY
        cert, key = domain.issue(name, kind, p256=self.transport == "dtls"
                                 and kind is Kind.GATEWAY)
        env = {**os.environ, c.ROLE: role.value, c.TESTCASE: self.case.test_case,
               c.TRANSPORT: self.transport, c.LOGDIR: str(directory),
               c.KEYLOG: str(directory / "keys.log"), "SSLKEYLOGFILE": str(directory / "keys.log"),
               c.READY: str(directory / "ready"), c.DOMAIN: domain.name, c.NAME: name,
               c.CERT: str(cert), c.KEY: str(key), c.CA: str(domain.anchor),
               c.SKILL: SKILL, **extra}
        ep = Endpoint(label, role, impl, env, directory, manual=label == self.manual)
        self.endpoints.append(ep)
        return ep

    def gateway_env(self, which: str) -> dict[str, str]:
        port = free_port()
        self.listeners[port] = which
        env = {c.LISTEN: f"127.0.0.1:{port}", c.HOLD_TIME: str(c.INTEROP_HOLD_TIME),
               c.MIN_LEASE: "1"}
        if self.case.peering:
            other = PEER if which == GATEWAY else GATEWAY
            env |= {c.PEER_DOMAIN: self.domains[other].name,
                    c.PEER_CA: str(self.domains[other].anchor)}
        return env

    async def relay_to(self, which: str, port: int) -> str:
        """A recording (and, for -loss cases, impairing) relay in front of ``port``."""
        imp = impairment(LOSS, len(self.relays) + 1) if self.case.name.endswith("-loss") \
            else Impairment()
        relay = await Relay.start(("127.0.0.1", 0), ("127.0.0.1", port), imp, self._tap)
        self.relays[which] = relay
        return "{}:{}".format(*relay.address)

    def _tap(self, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
        """Record the datagram; whether the case's filter drops it."""
        if self.pcap is not None:
            self.pcap.write_udp(src, dst, data, time.time())
        return self.drop is not None and self.drop(data)

    # --- the case ---------------------------------------------------------------------------
    async def run(self) -> None:
        case = self.case
        if case.decoder:
            await self.run_decoder()
            return
        self.pcap = PcapWriter(self.directory / "trace.pcap")
        addresses: dict[str, str] = {}
        gateways = [GATEWAY, PEER] if case.peering else [GATEWAY]
        for which in gateways:
            env = self.gateway_env(which)
            port = int(env[c.LISTEN].rpartition(":")[2])
            addresses[which] = await self.relay_to(which, port)
            if which == PEER:
                env[c.PEER] = addresses[GATEWAY]
            gw = self.endpoint(which, c.Role(which), self.impls[which], which, **env)
            await gw.start()
            await gw.wait_ready()
        servers = [self.endpoint(f"server@{home}", c.Role.AGENT, self.agents[home], home,
                                 **{c.PARTY: c.Party.SERVER.value, c.GATEWAY: addresses[home]})
                   for home in case.servers]
        for ep in servers:
            await ep.start()
        for ep in servers:
            await ep.wait_ready()
        clients = [self.client(cl, addresses) for cl in case.clients]
        for ep in clients:
            await ep.start()
        for ep in clients:
            await ep.finish(self.interrupted)
        if case.peering and not clients:  # let KEEPALIVE, UPDATE and DIGEST flow
            while self.drop is not None and not self.drop.done:
                await asyncio.sleep(0.1)  # (within the case's timeout)
            await asyncio.sleep(c.INTEROP_HOLD_TIME / 3 + 1.0)  # a KEEPALIVE interval

    def client(self, cl: Client, addresses: dict[str, str]) -> Endpoint:
        extra = {c.PARTY: c.Party.CLIENT.value, c.GATEWAY: addresses[cl.home]}
        if cl.target is not None:
            extra[c.TARGET_DOMAIN] = self.domains[cl.target].name
        return self.endpoint(f"client@{cl.home}", c.Role.AGENT, self.agents[cl.home],
                             cl.home, **extra)

    async def run_decoder(self) -> None:
        ep = self.endpoint("decoder", c.Role.DECODER, self.impls["decoder"], GATEWAY)
        vectors = self.directory / "vectors.jsonl"
        vectors.write_text("".join(json.dumps({"name": n, "expect": e, "hex": d.hex()}) + "\n"
                                   for n, e, d in draft_vectors()), encoding="utf-8")
        await ep.start(stdin=vectors, stdout=ep.directory / "output.jsonl")
        assert ep.process is not None
        ep.check(await ep.process.wait())

    async def stop(self) -> list[str]:
        """Stop the agents, then the peer gateway (its NOTIFY reaches the gateway), then
        the gateway; what went wrong while stopping."""
        problems = []
        order = sorted(self.endpoints, key=lambda e: (e.role is not c.Role.AGENT,
                                                      e.label == GATEWAY))
        for ep in order:
            status = await ep.stop()
            if status is None:
                problems.append(f"{ep.label} did not stop within {STOP_TIMEOUT:.0f} s of "
                                "SIGTERM")
            elif status not in (c.EXIT_PASSED, c.EXIT_UNSUPPORTED) \
                    and not ep.label.startswith("client@"):  # clients: checked by run()
                problems.append(f"{ep.label} exited {status} after SIGTERM")
        await asyncio.sleep(0.2)  # the last datagrams through the relays
        for relay in self.relays.values():
            relay.close()
        if self.pcap is not None:
            self.pcap.close()
            self.pcap = None
        return problems

    def keylog(self) -> Path | None:
        """Every endpoint's key log in one file (the TLS secrets of the whole case)."""
        parts = [ep.directory / "keys.log" for ep in self.endpoints]
        text = "".join(p.read_text(encoding="ascii", errors="replace")
                       for p in parts if p.is_file())
        if not text:
            return None
        path = self.directory / "keys.log"
        path.write_text(text, encoding="ascii")
        return path

    def judge(self) -> tuple[list[str], int]:
        """The pass rule on the capture: what it found wrong, and how many messages."""
        if self.case.decoder:
            return self.case.rule(Check(Trace(), self.directory)), 0
        try:
            trace = read_trace(self.directory / "trace.pcap", self.keylog(), self.transport,
                               self.listeners)
        except WireError as exc:
            return [f"capture not checked: {exc}"], 0
        (self.directory / "trace.txt").write_text(trace.text(), encoding="utf-8")
        return (wellformed(trace, malformed_requests=self.case.test_case == "malformed")
                + self.case.rule(Check(trace, self.directory)), len(trace.messages))


async def run_case(run: CaseRun) -> tuple[str, str, int]:
    """(status, reason, messages) of one case run."""
    status, reason = PASSED, ""
    try:
        await asyncio.wait_for(run.run(), None if run.manual else run.case.timeout)
    except CaseFailed as exc:
        status, reason = exc.status, str(exc)
    except TimeoutError:
        status, reason = FAILED, f"timed out after {run.case.timeout:.0f} s"
    finally:
        problems = await run.stop()
    if status == UNSUPPORTED:
        return status, reason, 0
    fails, count = run.judge()
    fails = [reason] * bool(reason) + problems + fails
    (run.directory / "check.txt").write_text(
        "\n".join(fails or ["passed: every pass rule holds"]) + "\n", encoding="utf-8")
    return (FAILED if fails else PASSED), "; ".join(fails), count


# --- the matrix -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Planned:
    case: Case
    transport: str
    impls: dict[str, Implementation]
    agents: dict[str, Implementation]
    pair: tuple[str, str]


def plan(impls: Sequence[Implementation], cases: Sequence[Case],
         transports: Sequence[str]) -> Iterator[Planned]:
    """Every (case, transport, pair) to run: each ordered pair of implementations in the
    case's two roles, on each transport both speak."""
    reference = impls[0]

    def agent_for(impl: Implementation) -> Implementation:
        return impl if impl.plays(c.Role.AGENT) else reference

    for case in cases:
        if case.kind == "codec":
            pairs = [({"decoder": d}, (d, d)) for d in impls if d.plays(c.Role.DECODER)]
        else:
            first, second = ((c.Role.GATEWAY, c.Role.PEER_GATEWAY) if case.peering
                             else (c.Role.AGENT, c.Role.GATEWAY))
            pairs = [({first.value: a, second.value: b}, (a, b))
                     for a in impls if a.plays(first) for b in impls if b.plays(second)]
        for roles, (a, b) in pairs:
            if case.peering:
                agents = {GATEWAY: agent_for(a), PEER: agent_for(b)}
            else:
                agents = {GATEWAY: roles.get(c.Role.AGENT.value, a)}
            involved = {a, b, *agents.values()}
            for transport in transports:
                if case.kind == "codec":
                    if transport == transports[0]:
                        yield Planned(case, "-", roles, agents, (a.name, b.name))
                    continue
                if transport in case.transports \
                        and all(transport in i.transports for i in involved):
                    yield Planned(case, transport, roles, agents, (a.name, b.name))


def labels(case: Case) -> list[str]:
    """The endpoints of ``case``, by the names of their directories."""
    if case.decoder:
        return ["decoder"]
    return ([GATEWAY, PEER] if case.peering else [GATEWAY]) \
        + [f"server@{h}" for h in case.servers] + [f"client@{cl.home}" for cl in case.clients]


async def execute(p: Planned, output: Path, domains: dict[str, Domain],
                  manual: str | None = None) -> Result:
    """Run one planned case in its directory under ``output``."""
    rel = Path(f"{p.pair[0]}_{p.pair[1]}") / p.transport / p.case.name
    directory = output / rel
    directory.mkdir(parents=True, exist_ok=True)
    run = CaseRun(p.case, p.transport, p.impls, p.agents, domains, directory, manual)
    if manual is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, run.interrupted.set)
    started = time.monotonic()
    status, reason, count = await run_case(run)
    return Result(p.case.name, p.transport, p.pair, status, reason,
                  time.monotonic() - started, str(rel), count)


def authorities(output: Path) -> dict[str, Domain]:
    """The run's two domain authorities (``a.example`` and ``b.example``)."""
    return {w: Domain.create(output / "pki", d) for w, d in DOMAINS.items()}


async def run_all(planned: Sequence[Planned], output: Path,
                  progress: IO[str] | None = None) -> list[Result]:
    """Run every planned case, one after the other; results in the same order."""
    domains = authorities(output)
    results = []
    for p in planned:
        result = await execute(p, output, domains)
        results.append(result)
        if progress is not None:
            print(f"{result.status:>11}  {p.case.name:<24} {p.transport:<5} "
                  f"{p.pair[0]} x {p.pair[1]}  {result.duration:5.1f} s"
                  f"{'  ' + result.reason if result.reason else ''}", file=progress,
                  flush=True)
    return results
