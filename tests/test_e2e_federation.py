"""An 8-gateway, 4-domain federation of real ``dmsc gateway`` processes on loopback
(draft-dmsc-protocol-00, Sections 5.3, 6.3-6.6, 9; issue 10 item 10).

The peer links form a ring, plus a.example's first gateway hanging off b.example::

    a1 - b1 = b2 ~ a2 - d2 - d1 ~ c2 ~~ c1 = b1        (a1 dials b1, b1 b2, ...)

* a.example's two gateways are joined only through other domains (b, and d and c);
* c1 dials b1 over DTLS (``=``), everything else is QUIC;
* c1's link to c2 goes through the impairment relay, losing 5% of the datagrams (``~~``);
* b2 - a2 and d1 - c2 go through relays that cut the ring in two when told (``~``);
* d.example exports its ``internal``-tagged records to no other domain.

Every link has a 3 s hold time and a 1 s keepalive; the agents (SDK, in this process,
agent keepalive 1 s) register at seven gateways.  After each step every gateway's
registry file must hold exactly what the policies imply (every live registration, the
internal one only in d.example; no withdrawn record: no ghost) and routed calls across
the federation must succeed:

1. register/deregister churn;
2. ``kill -9`` of c1, a middle gateway: a call on its way to c1's agent fails with
   TARGET_UNREACHABLE when c2's hold timer closes the session, calls towards that
   agent then fail at once, the tables drop its record and re-route the others round
   the ring; c1 restarted on the same registry file: once its agent has reconnected,
   its record is everywhere again and calls to it succeed;
3. a partition of the ring into {a2, d2, d1} and the rest, longer than the hold time,
   with registrations on both sides and a deregistration on one, then healed: the
   sessions are dialled again, no ghost.

Calls between domains cross the DTLS link too: their origin assertions name the
origin gateway's certificate, which crosses each link once in CERTIFICATE (Section 6.10),
so every ROUTE_REQUEST fits a DTLS datagram.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dmscproto.agent import Agent, AgentError, Request
from dmscproto.codec.registry import ErrorCode
from dmscproto.codec.values import Skill
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.sandbox.relay import Impairment, Relay

CLI = "import sys; from dmscproto.cli import main; sys.exit(main())"
HOST = "127.0.0.1"
#: Peer hold time and keepalive: a dead peer's session is closed within 3 s.
HOLD, KEEPALIVE = 3, 1
#: Agents' keepalive: an agent notices its dead gateway within about 3 s.
AGENT_KEEPALIVE = 1.0
#: The partition, longer than the hold time: the sessions across it close and are
#: dialled again after it heals.
PARTITION = HOLD + 2.0
#: A failed call's answer comes within this (1 s is the target on an idle machine; the
#: shared test machine is loaded).
FAST = 2.0
LOSS = Impairment(loss=0.05, seed=7)
CUT = Impairment(loss=1.0)
OPEN = Impairment()


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    """One ``dmsc gateway`` process, its configuration, log and registry file."""

    name: str
    domain: Domain
    port: int
    config: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    #: Where the running process's log starts in the log file.
    log_start: int = 0

    def __post_init__(self) -> None:
        self.log = self.domain.directory / f"{self.name}.log"

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def store(self) -> Path:
        return self.domain.directory / f"{self.name}.sqlite"

    def start(self) -> None:
        assert self.config is not None
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CLI, "gateway", "--config", str(self.config),
                 "--log-format", "json"], stderr=log, stdout=subprocess.DEVNULL)

    def kill(self) -> None:
        """kill -9."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def logs(self) -> list[dict[str, Any]]:
        """The running process's log entries."""
        out = []
        with self.log.open("rb") as f:
            f.seek(self.log_start)
            text = f.read().decode("utf-8", errors="replace")
        for line in text.splitlines():
            if line.startswith("{"):
                with suppress(json.JSONDecodeError):  # a line being written
                    out.append(json.loads(line))
        return out

    def sessions(self) -> int:
        """Peer sessions open now, by the log (established minus closed)."""
        msgs = [e["msg"] for e in self.logs()]
        return msgs.count("peer session established") - msgs.count("peer session closed")

    def why_not(self, degree: int) -> str:
        """For a failure message: this gateway's state and last log lines if it is not
        running or holds other than ``degree`` sessions, else nothing."""
        if self.proc is None or (self.proc.poll() is None and self.sessions() == degree):
            return ""
        with self.log.open("rb") as f:
            f.seek(max(self.log_start, self.log.stat().st_size - 1500))
            tail = f.read().decode("utf-8", errors="replace")
        return f"\n{self.name} (exit {self.proc.poll()}), its log ends:\n{tail}"

    def table(self) -> set[bytes]:
        """The agent ids the registry file holds, local and learned."""
        if not self.store.exists():
            return set()
        with closing(sqlite3.connect(f"file:{self.store}?mode=ro", uri=True,
                                     timeout=5)) as db:
            return {bytes(row[0]) for row in db.execute("SELECT agent_id FROM entries")}


class Federation:
    """The eight gateways, three relays and the agents (module doc)."""

    #: (dialler, acceptor, transport, relay): the peer links.
    LINKS = (("a1", "b1", "quic", None), ("b1", "b2", "quic", None),
             ("b2", "a2", "quic", "p1"), ("a2", "d2", "quic", None),
             ("d2", "d1", "quic", None), ("d1", "c2", "quic", "p2"),
             ("c1", "c2", "quic", "lossy"), ("c1", "b1", "dtls", None))

    def __init__(self, root: Path) -> None:
        self.domains = {n: Domain.create(root, f"{n}.example") for n in "abcd"}
        self.gws = {f"{d}{i}": Gateway(f"{d}{i}", self.domains[d], free_port())
                    for d in "abcd" for i in (1, 2)}
        self.dtls_port = free_port()
        self.bundle = root / "bundle"
        self.bundle.mkdir()
        for n, d in self.domains.items():
            shutil.copy(d.anchor, self.bundle / f"{n}.pem")
        self.relays: dict[str, Relay] = {}
        self.agents: dict[str, tuple[Agent, Gateway]] = {}
        self.internal: set[bytes] = set()   # d.example only

    async def start_relays(self) -> None:
        for _a, b, _t, relay in self.LINKS:
            if relay is not None:
                self.relays[relay] = await Relay.start(
                    (HOST, 0), self.gws[b].address, LOSS if relay == "lossy" else OPEN)

    def write_configs(self) -> None:
        for name, gw in self.gws.items():
            peers = []
            for a, b, transport, relay in self.LINKS:
                if name not in (a, b):
                    continue
                other = self.gws[b if name == a else a]
                address = None
                if name == a:
                    address = (self.relays[relay].address if relay else
                               (HOST, self.dtls_port) if transport == "dtls" else other.address)
                peers.append(self.peer(gw, other, address, transport if name == a else None))
            transports = ("quic", "dtls") if name == "b1" else "quic"
            path = write_gateway_config(gw.domain, name, peers=peers, listen=gw.address,
                                        hold_time=HOLD, keepalive=KEEPALIVE,
                                        transport=transports)
            text = path.read_text(encoding="utf-8")
            if name == "b1":
                listen = f'dtls = "{HOST}:{gw.port}"'
                assert listen in text
                text = text.replace(listen, f'dtls = "{HOST}:{self.dtls_port}"')
            text += (f'\n[federation]\ntrust_bundle = ["{self.bundle}"]\n'
                     '[federation.export]\n[federation.import]\ncapabilities = ["*"]\n')
            path.write_text(text, encoding="utf-8")
            gw.config = path

    def peer(self, gw: Gateway, other: Gateway, address: tuple[str, int] | None,
             transport: str | None) -> PeerSpec:
        """The ``[[peers]]`` entry for ``other`` at ``gw``: transit of every domain; an
        a.example gateway's neighbours also carry a.example between the two; d.example
        keeps its internal records."""
        home = gw.domain.name
        if other.domain is gw.domain:
            return PeerSpec(other.domain, address, transport=transport)
        a = "a.example"
        return PeerSpec(other.domain, address, transport=transport,
                        transit=["*", a] if other.domain.name == a else True,
                        imports=[a] if home == a else (),
                        exclude_tags=["internal"] if home == "d.example" else ())

    # --- agents --------------------------------------------------------------------------
    async def agent(self, stack: AsyncExitStack, name: str, gw: str, skill: str,
                    tags: tuple[str, ...] = ()) -> Agent:
        gateway = self.gws[gw]
        ag = gateway.domain.agent(name, gateway.address, keepalive=AGENT_KEEPALIVE)

        def answer(payload: bytes, _req: Request) -> bytes:
            return f"{name}: ".encode() + payload
        ag.serve(answer)
        stack.push_async_callback(ag.close)
        await ag.register(skills=[Skill(skill, skill.title(), tags)], lease=300)
        self.agents[name] = (ag, gateway)
        if "internal" in tags:
            self.internal.add(ag.agent_id)
        return ag

    async def leave(self, name: str) -> bytes:
        ag, _gw = self.agents.pop(name)
        await ag.close()
        return ag.agent_id

    # --- checks --------------------------------------------------------------------------
    def expected(self, name: str) -> set[bytes]:
        """What gateway ``name`` should hold: every live registration whose home gateway
        runs, the internal ones only in d.example."""
        gw = self.gws[name]
        return {ag.agent_id for ag, home in self.agents.values() if home.proc is not None
                and (ag.agent_id not in self.internal or gw.domain.name == "d.example")}

    def differences(self, gone: set[bytes]) -> dict[str, str]:
        out = {}
        for name, gw in self.gws.items():
            if gw.proc is None:
                continue
            held, want = gw.table(), self.expected(name)
            if held != want:
                ghosts = held & gone
                out[name] = (f"missing {len(want - held)}, ghosts {len(ghosts)}, "
                             f"other extra {len(held - want - ghosts)}")
        return out

    async def converged(self, gone: set[bytes], timeout: float = 30.0) -> None:
        """Every running gateway's table equals :meth:`expected` (no ghost among
        ``gone``, the withdrawn agent ids), within ``timeout`` (generous, for a loaded
        machine: the wait ends as soon as they are equal)."""
        await until(lambda: not self.differences(gone), timeout,
                    lambda: f"tables differ: {self.differences(gone)}")

    async def sessions_up(self, timeout: float = 60.0) -> None:
        degree = {n: sum(n in (a, b) for a, b, _t, _r in self.LINKS) for n in self.gws}
        await until(lambda: all(gw.sessions() == degree[n] for n, gw in self.gws.items()
                                if gw.proc is not None), timeout,
                    lambda: "sessions: " + str({n: gw.sessions() for n, gw in self.gws.items()})
                    + "".join(gw.why_not(degree[n]) for n, gw in self.gws.items()))

    async def call(self, caller: str, callee: str) -> bytes:
        ag, _ = self.agents[caller]
        target, _ = self.agents[callee]
        return await asyncio.wait_for(ag.call(target.agent_id, b"hi"), 10)

    async def calls(self, pairs: list[tuple[str, str]]) -> None:
        """Each ``(caller, callee)`` routed call succeeds."""
        for caller, callee in pairs:
            try:
                answer = await self.call(caller, callee)
            except AgentError as err:
                raise AssertionError(f"{caller} -> {callee}: {err}") from err
            assert answer == f"{callee}: hi".encode(), (caller, callee)

    async def refused(self, caller: str, callee: str, code: ErrorCode) -> None:
        """A routed call fails at once with ``code``."""
        assert await self.attempt(caller, callee) is code

    async def attempt(self, caller: str, callee: str) -> ErrorCode:
        """A routed call: SUCCESS with the callee's answer, or its error code within
        :data:`FAST` seconds."""
        start = time.monotonic()
        try:
            answer = await self.call(caller, callee)
        except AgentError as err:
            assert time.monotonic() - start < FAST, f"{caller} -> {callee}: slow {err}"
            return err.status
        assert answer == f"{callee}: hi".encode(), (caller, callee)
        return ErrorCode.SUCCESS

    def stop(self) -> None:
        for gw in self.gws.values():
            gw.stop()


async def until(check: Callable[[], bool], timeout: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why()
        await asyncio.sleep(0.1)


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    fed = Federation(tmp_path)
    yield fed
    fed.stop()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 300))


def test_eight_gateways_four_domains_churn_kill_restart_partition(
        federation: Federation) -> None:
    fed = federation

    async def scenario() -> None:
        await fed.start_relays()
        try:
            await steps()
        finally:
            for relay in fed.relays.values():
                relay.close()

    async def steps() -> None:
        fed.write_configs()
        for gw in fed.gws.values():
            gw.start()
        await fed.sessions_up()
        gone: set[bytes] = set()
        async with AsyncExitStack() as stack:
            for name, home, skill, tags in (
                    ("alice", "a1", "greet", ()), ("abe", "a2", "forecast", ()),
                    ("bob", "b2", "translate", ()), ("carol", "c2", "sum", ()),
                    ("cid", "c1", "count", ()), ("dave", "d1", "store", ()),
                    ("dora", "d2", "audit", ("internal",))):
                await fed.agent(stack, name, home, skill, tags)
            await fed.converged(gone)
            # a.example's gateways through b.example, a2 - d2, the partitionable links,
            # the lossy link, the DTLS link between domains (c1 = b1) both ways
            await fed.calls([("alice", "abe"), ("abe", "alice"), ("abe", "dave"),
                             ("dave", "abe"), ("bob", "abe"), ("carol", "dave"),
                             ("carol", "cid"), ("cid", "carol"), ("dave", "dora"),
                             ("cid", "bob"), ("bob", "cid")])
            await fed.refused("alice", "dora", ErrorCode.NO_ROUTE)  # d.example only

            # 1. churn
            for i, home in enumerate(("b1", "d2", "a1")):
                await fed.agent(stack, f"churn{i}", home, f"skill{i}")
            gone |= {await fed.leave("churn0"), await fed.leave("churn2")}
            await fed.converged(gone)
            await fed.calls([("churn1", "alice"), ("alice", "churn1")])

            # 2. kill -9 of c1: a call on its way through it fails when c2's hold timer
            # closes the session; once its peers noticed, calls towards its agent fail
            # at once; restarted on the same registry file, it advertises cid's record
            # again once cid (its keepalive saw the gateway die) is back
            c1 = fed.gws["c1"]
            c1.kill()
            killed = time.monotonic()
            with pytest.raises(AgentError) as in_flight:
                await fed.call("carol", "cid")
            assert in_flight.value.status is ErrorCode.TARGET_UNREACHABLE
            assert time.monotonic() - killed < HOLD + FAST
            await until(lambda: fed.gws["b1"].sessions() == 2 and fed.gws["c2"].sessions() == 1,
                        HOLD + 20, lambda: "the hold timers did not close c1's sessions")
            assert await fed.attempt("carol", "cid") in (ErrorCode.NO_ROUTE,
                                                         ErrorCode.TARGET_UNREACHABLE)
            await fed.converged(gone)             # cid's record gone, the others re-routed
            await fed.calls([("alice", "carol"), ("carol", "dave")])
            c1.start()
            await fed.sessions_up()
            await fed.converged(gone)                      # cid's record is back
            # carol -> bob runs c2 - c1 = b1 (DTLS) - b2: c1's new sessions hold nothing
            await fed.calls([("carol", "dave"), ("bob", "dave"), ("carol", "cid"),
                             ("carol", "bob")])

            # 3. partition {a2, d2, d1} | the rest for longer than the hold time,
            # registrations on both sides, healed: the sessions are dialled again
            for relay in ("p1", "p2"):
                fed.relays[relay].impairment = CUT
            await fed.agent(stack, "split-a", "d1", "splitting")
            await fed.agent(stack, "split-b", "b1", "splitting")
            gone.add(await fed.leave("churn1"))   # at d2: its PURGE waits for the heal
            await asyncio.sleep(PARTITION)
            for relay in ("p1", "p2"):
                fed.relays[relay].impairment = OPEN
            await fed.sessions_up()
            await fed.converged(gone)
            await fed.calls([("split-a", "abe"), ("bob", "split-a"), ("alice", "abe"),
                             ("split-b", "alice")])
            assert fed.differences(gone) == {}

    run(scenario())
