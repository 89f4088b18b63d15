"""``dmsc demo``: two domains, a gateway each and four agents on loopback
over real QUIC (or the agents on DTLS, the gateways peering over QUIC), in one asyncio
process, printed step by step.

Every piece is the real one: domain authorities issue Ed25519 certificates into a
temporary directory, each gateway is a :class:`~.gateway.GatewayRuntime` started from a
TOML file as ``dmsc gateway`` would be (SQLite registry, mutual TLS 1.3, ALPN
``dmsc/1``, ephemeral ports), the agents use the SDK (:mod:`dmscproto.agent`).  The
messages shown are those the gateways actually send and receive.  Each step checks
its outcome; the exit status is 0 only if all of them succeeded.  What is printed is
:mod:`.display`'s, the capture (``--capture``) :mod:`.capture`'s.

With ``loss``, every path (agent to gateway, gateway to gateway) runs through an
impairment relay (:mod:`dmscproto.sandbox.relay`) that loses that fraction of the
datagrams and also duplicates and reorders some, from a seeded RNG: QUIC recovers by
itself, DMSC over DTLS by its retransmission (Section 9.3), and handshakes that time out
are retried.

With ``transport="udp"`` the whole demo runs in lab mode (Section 9.4): gateways and
agents on cleartext UDP (``gateway.lab = true``), identities taken from REGISTER's
signed records and OPEN (:mod:`.lab`), no access tokens; the capture is readable
without any key.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, TypeVar

from ..agent import Agent, DiscoveryQuery, Request
from ..analysis.pcap import PcapWriter
from ..codec.registry import ErrorCode, Scope
from ..codec.values import Skill
from ..host.config import GatewayConfig
from ..runtime.gateway import GatewayRuntime
from ..sandbox.relay import Impairment, Relay
from .capture import KEYLOG_NAME, PCAP_NAME, OncePcap, show_capture
from .display import Display, observer
from .domains import Domain, PeerSpec, write_gateway_config

T = TypeVar("T")

#: What the demo's agents may do (Section 10.3); the gateways require tokens.
SCOPE = "register discover route"
#: Duplication and reordering rates beside the loss rate of ``--loss`` (each datagram).
DUPLICATE, REORDER = 0.05, 0.05
#: Connection attempts (a DTLS handshake can time out under loss; QUIC's rarely does).
CONNECT_ATTEMPTS = 5


def impairment(loss: float, seed: int) -> Impairment:
    """What the demo's relays do with ``--loss``: loss, some duplication and reordering
    (datagrams held 10 ms while later ones, sent with 0-2 ms jitter, overtake them)."""
    return Impairment(loss=loss, duplicate=DUPLICATE, reorder=REORDER, delay_ms=1,
                      jitter_ms=1, reorder_gap_ms=10, seed=seed)


class StepFailed(Exception):
    """A demo step did not have the expected outcome."""


@dataclass
class DemoWorld:
    """What an extension of the demo (``dmsc demo --a2a``: :mod:`dmscproto.a2a.demo`)
    gets, after the calls and before weather leaves: the display to print its steps,
    the two domains and gateways (a, b), the agents by name, the exit stack that closes
    everything at the end, and ``new_agent(domain, gateway, name)``: a connected agent
    with a certificate and access token, closed at the end."""

    display: Display
    tmp: Path
    domains: tuple[Domain, Domain]
    gateways: tuple[GatewayRuntime, GatewayRuntime]
    agents: dict[str, Agent]
    stack: AsyncExitStack
    new_agent: Callable[[Domain, GatewayRuntime, str], Awaitable[Agent]]


#: An extension of the demo: more steps on the running world.
Extension = Callable[[DemoWorld], Awaitable[None]]


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _expect(awaitable: Awaitable[T], what: str, timeout: float = 10.0) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise StepFailed(f"{what}: no answer in {timeout} s") from None
    except Exception as exc:
        raise StepFailed(f"{what}: {exc}") from exc


async def run_demo(out: TextIO, *, capture: Path | None = None, keep: Path | None = None,
                   quiet: bool = False, transport: str = "quic", loss: float = 0.0,
                   seed: int = 1, extension: Extension | None = None) -> int:
    """Run the demo, printing to ``out``; returns the exit status.  ``transport`` is the
    agents' (the gateways peer over QUIC); ``loss`` and ``seed`` set the relays;
    ``extension`` runs its steps before weather deregisters."""
    display = Display(out, show_messages=not quiet)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dmsc-demo-"))
    try:
        async with AsyncExitStack() as stack:
            await _scenario(display, stack, tmp, capture, transport, loss, seed, extension)
        await asyncio.sleep(0)  # let cancelled tasks finish
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if leftover:
            raise StepFailed(f"{len(leftover)} task(s) still running: {leftover}")
    except StepFailed as exc:
        display.line(f"\nFAILED at step {display.step_no}: {exc}")
        return 1
    finally:
        if keep is not None:
            shutil.copytree(tmp, keep, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    display.line(f"\nAll {display.step_no} steps succeeded in "
                 f"{(time.perf_counter() - started) * 1e3:.0f} ms; every task, connection, "
                 "port and temporary file is gone.")
    if capture is not None:
        show_capture(display, capture, lab=transport == "udp")
    return 0


def _pin(gw: GatewayRuntime, relayed: dict[tuple[str, int], tuple[str, int]]) -> None:
    """Rewrite ``gw``'s TOML file as it ran (``--keep``): the ports it got instead of
    port 0, and each peer's own address instead of the relay in front of it, so that the
    kept files start the same gateways again."""
    path = gw.config.source
    assert path is not None
    text = path.read_text(encoding="utf-8")
    for name, (host, port) in gw.addresses.items():
        text = text.replace(f'{name} = "{host}:0"', f'{name} = "{host}:{port}"')
    host, port = gw.address
    text = text.replace(f'listen = "{host}:0"', f'listen = "{host}:{port}"')
    for (rh, rp), (h, p) in relayed.items():
        text = text.replace(f'"{rh}:{rp}"', f'"{h}:{p}"')
    path.write_text(text, encoding="utf-8")


async def _scenario(d: Display, stack: AsyncExitStack, tmp: Path,
                    capture: Path | None, transport: str, loss: float, seed: int,
                    extension: Extension | None = None) -> None:
    front: dict[tuple[bytes, str], Relay] = {}  # (gateway id, transport) -> relay (--loss)
    # The gateways peer over QUIC (their primary listener); agents use ``transport``;
    # lab mode (udp) is cleartext UDP everywhere.
    lab = transport == "udp"
    peering = "udp" if lab else "quic"
    listeners = (peering,) if transport == peering else ("quic", transport)
    pcap: PcapWriter | None = None
    keylog: TextIO | None = None
    if capture is not None:
        capture.mkdir(parents=True, exist_ok=True)
        pcap = stack.enter_context(OncePcap(capture / PCAP_NAME))
        if not lab:
            keylog = stack.enter_context(open(capture / KEYLOG_NAME, "w",  # noqa: SIM115
                                              encoding="ascii"))
    over = {"quic": "QUIC (ALPN dmsc/1, mutual TLS 1.3)",
            "dtls": "agents on DTLS 1.2 (mutual authentication, DMSC retransmission), "
                    "gateways peering over QUIC (ALPN dmsc/1, mutual TLS 1.3)",
            "udp": "LAB MODE: cleartext UDP (DMSC retransmission), NO confidentiality, NO "
                   "peer authentication beyond record signatures, no access tokens"
            }[transport]
    d.line(f"DMSC demo: two domains, a gateway each, four agents; 127.0.0.1, {over}, "
           "ephemeral ports.")
    if loss:
        d.line(f"Every path runs through an impairment relay: {loss:.0%} loss, "
               f"{DUPLICATE:.0%} duplicated, {REORDER:.0%} reordered (seed {seed}).")

    scope = None if lab else SCOPE  # tokens are bound to the TLS certificate
    d.step("Domain authorities issue certificates" + ("" if lab else " and access tokens"))
    a, b = Domain.create(tmp, "a.example"), Domain.create(tmp, "b.example")
    d.note(f"{d.ms()}  a.example and b.example: Ed25519 CAs, name-constrained to their "
           f"domain; files in {tmp}")
    if lab:
        d.note(f"{d.ms()}  each agent below gets a certificate (its key signs its record); "
               "no access tokens in lab mode")
    else:
        d.note(f"{d.ms()}  each agent below gets a certificate and an access token (JWT, "
               f"scope {SCOPE!r}, bound to its certificate)")

    d.step("Gateways start from their TOML configuration " +
           ("(lab = true: cleartext UDP, deliberately)" if lab else
            "(access tokens required)"))
    gateways: list[GatewayRuntime] = []

    async def start(path: Path) -> GatewayRuntime:
        gw = GatewayRuntime(GatewayConfig.load(path), pcap=pcap, keylog=keylog)
        gw.observer = observer(d, gw)
        d.names[gw.gateway_id] = gw.name
        await gw.start()
        gateways.append(gw)
        on = ", ".join(f"{t} {h}:{p}" for t, (h, p) in gw.addresses.items())
        d.note(f"{d.ms()}  {gw.name}: {gw.identity.uri} id {gw.gateway_id.hex()} "
               f"on {on} (config {path.relative_to(tmp)})")
        for name, address in gw.addresses.items() if loss else ():
            relay = await Relay.start(("127.0.0.1", 0), address,
                                      impairment(loss, seed * 100 + len(front)))
            front[(gw.gateway_id, name)] = relay
            d.note(f"{d.ms()}  {gw.name}'s {name} listener is reached through a relay on "
                   f"{relay.address[0]}:{relay.address[1]}")
        return gw

    def reach(gw: GatewayRuntime, name: str) -> tuple[str, int]:
        """Where peers and agents reach ``gw``'s ``name`` listener: its relay with
        --loss."""
        relay = front.get((gw.gateway_id, name))
        return gw.addresses[name] if relay is None else relay.address

    async def stop_all() -> None:  # in parallel: each waits out QUIC's closing period
        await asyncio.gather(*(ag.close() for ag in opened))
        await asyncio.gather(*(gw.stop() for gw in gateways))
        for relay in front.values():
            relay.close()

    opened: list[Agent] = []
    stack.push_async_callback(stop_all)
    gw_b = await start(write_gateway_config(b, "gw-b", peers=[PeerSpec(a)], min_lease=5,
                                            transport=listeners, require_tokens=not lab,
                                            lab=lab))
    to_b = PeerSpec(b, reach(gw_b, peering), transport=peering)
    gw_a = await start(write_gateway_config(a, "gw-a", peers=[to_b], min_lease=5,
                                            transport=listeners, require_tokens=not lab,
                                            lab=lab))
    by_id = {g.gateway_id: g for g in gateways}
    relayed = {relay.address: by_id[gid].addresses[name] for (gid, name), relay in front.items()}
    for gw in gateways:
        _pin(gw, relayed)

    d.step(f"Peering: gw-a dials gw-b over {peering.upper()}; the gateways OPEN a session "
           "and sync (Section 6)")
    await _expect(gw_a.wait_peers(30), "peer session gw-a -> gw-b", 30)
    await _until(lambda: bool(gw_b.node and gw_b.node.peers), 5, "gw-b's session")
    d.note(f"{d.ms()}  session ESTABLISHED on both gateways")

    d.step("Agents connect to their home gateway and REGISTER signed capability records")
    agents: dict[str, Agent] = {}

    async def agent(dom: Domain, gw: GatewayRuntime, name: str, skills: list[Skill],
                    handler: Callable[[bytes, Request], bytes] | None) -> Agent:
        ag = dom.agent(name, reach(gw, transport), scope=scope, pcap=pcap, keylog=keylog,
                       transport=transport, lab=lab)
        d.names[ag.agent_id] = name
        if handler is not None:
            ag.serve(handler)
        await _expect(ag.connect(attempts=CONNECT_ATTEMPTS), f"{name} connecting", 120)
        opened.append(ag)
        lease = await _expect(ag.register(skills=skills, lease=60,
                                          description=f"demo {name}"), f"{name} REGISTER")
        d.note(f"{d.ms()}  {ag.uri} (id {ag.agent_id.hex()}) registered at {gw.name}, "
               f"lease {lease} s")
        agents[name] = ag
        return ag

    forecasts = {b"Paris": b"sunny, 21 C", b"Oslo": b"snow, -3 C"}
    await agent(b, gw_b, "weather", [Skill("forecast", "Weather forecast",
                                           ("weather", "public"))],
                lambda p, r: forecasts.get(p, b"no forecast for " + p))
    words = {b"hello": b"bonjour", b"thank you": b"merci"}
    await agent(b, gw_b, "translator", [Skill("translate", "English to French",
                                              ("language", "public"))],
                lambda p, r: words.get(p, b"?"))
    await agent(a, gw_a, "clock", [Skill("time", "Current time", ("utility",))],
                lambda p, r: time.strftime("%H:%M:%S UTC", time.gmtime()).encode())
    client = await agent(a, gw_a, "client", [Skill("chat", "Chat front end", ("ui",))], None)

    d.step("Sync: gw-b's records reach gw-a with their path (UPDATE)")
    b_ids = [agents["weather"].agent_id, agents["translator"].agent_id]
    core_a = gw_a.core
    assert core_a is not None
    await _until(lambda: all(i in core_a for i in b_ids), 5, "gw-a learning gw-b's agents")
    for i in b_ids:
        stored = core_a.get(i)
        assert stored is not None
        d.note(f"{d.ms()}  gw-a holds {d.name(i)} (domain b.example) v{stored.version}, "
               f"next hop {d.name(stored.next_hop)}")

    d.step("Discovery by capability across the federation: client asks gw-a for 'forecast'")
    found = await _expect(client.discover(skills=["forecast"], scope=Scope.FEDERATED),
                          "DISCOVER")
    if not found or found[0].agent_id != agents["weather"].agent_id:
        raise StepFailed(f"expected weather first, got {[f.agent_uri for f in found]}")
    for f in found:
        d.note(f"{d.ms()}  score {f.score}: {f.agent_uri} id {f.agent_id.hex()} skills "
               f"{[s.id for s in f.record.skills]}")

    d.step("Routed call across domains: client (a.example) -> weather (b.example)")
    t = time.perf_counter()
    answer = await _expect(client.call(found[0], b"Paris"), "ROUTE_REQUEST to weather")
    if answer != forecasts[b"Paris"]:
        raise StepFailed(f"unexpected answer {answer!r}")
    d.note(f"{d.ms()}  answer {answer.decode()!r} after {(time.perf_counter() - t) * 1e3:.1f}"
           " ms (client -> gw-a -> gw-b -> weather and back)")

    d.step("Call by capability: the gateway picks the best 'translate' agent")
    answer = await _expect(client.call(DiscoveryQuery(skills=("translate",)), b"hello"),
                           "ROUTE_REQUEST by query")
    if answer != b"bonjour":
        raise StepFailed(f"unexpected answer {answer!r}")
    d.note(f"{d.ms()}  answer {answer.decode()!r}")

    d.step("Local call inside a.example: client -> clock")
    answer = await _expect(client.call(agents["clock"].agent_id, b"now?"), "local call")
    d.note(f"{d.ms()}  answer {answer.decode()!r}")

    d.step("Unknown target: the gateway answers with a routing error")
    try:
        await client.call(bytes(16), b"anyone?")
    except Exception as exc:
        status = getattr(exc, "status", None)
        if status not in (ErrorCode.NO_ROUTE, ErrorCode.TARGET_UNREACHABLE):
            raise StepFailed(f"expected NO_ROUTE, got {exc}") from exc
        d.note(f"{d.ms()}  refused as expected: {exc}")
    else:
        raise StepFailed("a call to an unknown agent succeeded")

    if extension is not None:
        async def new_agent(dom: Domain, gw: GatewayRuntime, name: str) -> Agent:
            ag = dom.agent(name, reach(gw, transport), scope=scope, pcap=pcap, keylog=keylog,
                           transport=transport, lab=lab)
            d.names[ag.agent_id] = name
            await _expect(ag.connect(attempts=CONNECT_ATTEMPTS), f"{name} connecting", 120)
            opened.append(ag)
            return ag

        await extension(DemoWorld(d, tmp, (a, b), (gw_a, gw_b), agents, stack, new_agent))

    d.step("weather deregisters; gw-b withdraws it from gw-a")
    await _expect(agents["weather"].close(), "weather DEREGISTER")
    await _until(lambda: agents["weather"].agent_id not in core_a, 5, "the withdrawal")
    left = await _expect(client.discover(skills=["forecast"]), "DISCOVER")
    if left:
        raise StepFailed(f"weather still discovered: {[f.agent_uri for f in left]}")
    d.note(f"{d.ms()}  'forecast' finds nothing any more")

    d.step("Shutdown: agents deregister, gateways NOTIFY CEASE, close connections and stores")
    d.show_messages = False
    await stack.aclose()
    d.note(f"{d.ms()}  done")
