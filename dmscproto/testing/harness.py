"""An in-memory DMSC network under a fake clock (like aioquic's ``client_and_server()`` and
``roundtrip()`` test helpers).

:class:`Network` holds N :class:`~dmscproto.protocol.agent.AgentClient` agents and M
:class:`~dmscproto.gateway.node.GatewayNode` gateways, each gateway with its registry in a
real SQLite file under a directory the caller gives (``tmp_path``).  :meth:`Network.pump`
delivers every queued message, ENCODING AND DECODING each one through
:mod:`dmscproto.codec`, so the wire format is exercised on every hop, and checks that a
gateway's PDU fits the limit its node was given for that link (``pdu_limit``);
:meth:`Network.advance` moves the clock from timer to timer.  Every endpoint is named by a
string, which is also the handle the others use for it.  Links can be cut to lose
messages (hold-timer expiry, timeouts), and ``shuffle`` delivers each round of messages
in a seeded random order (QUIC streams and datagrams are not ordered).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..codec import decode, encode
from ..codec.cose import SignedRecord
from ..codec.messages import Message
from ..codec.signing import entity_id, sign_record, spki
from ..codec.values import AttrValue, Skill
from ..gateway.core import GatewayCore
from ..gateway.node import GatewayNode
from ..gateway.store import RegistryStore
from ..protocol.agent import AgentClient
from ..protocol.machine import Handle, ProtocolError, earliest
from ..protocol.sync import PeerSync
from .examples import NOW_S, example_key, weather_record

E = TypeVar("E")

#: The fake clock's start: the test vectors' time, so TIMESTAMPs look real.
T0 = float(NOW_S)


def numbered_key(n: int) -> ed25519.Ed25519PrivateKey:
    """Fixed Ed25519 key number ``n``: the example key ``n`` below 256, else one whose
    seed is the SHA-256 of ``n`` (as many as a simulated federation needs).  For tests
    only."""
    if n < 256:
        return example_key(n)
    return ed25519.Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"dmsc test key {n}".encode()).digest())


def make_record(n: int, name: str, domain: str, *, skills: tuple[Skill, ...] | None = None,
                attributes: dict[str, AttrValue] | None = None, version: int = 1,
                description: str | None = None) -> SignedRecord:
    """A capability record for agent ``name`` signed with key ``n``."""
    key = numbered_key(n)
    pub = key.public_key()
    rec = replace(weather_record(), agent_id=entity_id(pub), public_key=spki(pub),
                  agent_uri=f"dmsc://{domain}/{name}", domain=domain, name=name,
                  record_version=version, description=description,
                  skills=skills if skills is not None else (Skill("forecast", "Forecast",
                                                                    ("weather",)),),
                  attributes=attributes if attributes is not None else {})
    return sign_record(rec, key)


@dataclass(frozen=True, slots=True)
class Sent:
    """One delivered PDU: when, from whom, to whom, decoded, and its size on the wire."""

    time: float
    source: str
    dest: str
    msg: Message
    size: int


@dataclass
class Network:
    """N agents and M gateways exchanging PDUs in memory (module doc)."""

    directory: Path
    now: float = T0
    seed: int = 0
    gateways: dict[str, GatewayNode] = field(default_factory=dict)
    agents: dict[str, AgentClient] = field(default_factory=dict)
    log: list[Sent] = field(default_factory=list)
    events: dict[str, list[object]] = field(default_factory=dict)
    cut: set[frozenset[str]] = field(default_factory=set)
    shuffle: bool = False
    _keys: int = 20
    _gw_keys: dict[str, tuple[int, str, dict[str, Any]]] = field(default_factory=dict)

    # --- building ---------------------------------------------------------------------------------
    def gateway(self, name: str, domain: str = "a.example", **node_options: Any) -> GatewayNode:
        """Add a gateway with a fresh identity and its registry in ``<directory>/<name>.db``."""
        key_n = 200 + len(self._gw_keys)
        self._gw_keys[name] = (key_n, domain, node_options)
        return self._start_gateway(name)

    def _start_gateway(self, name: str) -> GatewayNode:
        key_n, domain, options = self._gw_keys[name]
        gid = entity_id(example_key(key_n).public_key())
        core = GatewayCore(gid, domain, RegistryStore(self.directory / f"{name}.db"))
        node = GatewayNode(core, name=name, rng=random.Random(f"{self.seed}/{name}"),
                           **options)
        self.gateways[name] = node
        self.events.setdefault(name, [])
        return node

    def restart(self, name: str) -> GatewayNode:
        """Stop a gateway (its sessions and pending transactions are lost) and start it
        again on the same SQLite file."""
        self.gateways.pop(name).core.store.close()
        return self._start_gateway(name)

    def close(self) -> None:
        for node in self.gateways.values():
            node.core.store.close()

    def agent(self, name: str, gateway: str, *, domain: str | None = None,
              signed: SignedRecord | None = None, **record: Any) -> AgentClient:
        """Add an agent homed at ``gateway`` (its record from :func:`make_record`)."""
        self._keys += 1
        if signed is None:
            dom = domain or self.gateways[gateway].core.domain
            signed = make_record(self._keys, name, dom, **record)
        client = AgentClient(signed, gateway, rng=random.Random(f"{self.seed}/{name}"))
        self.agents[name] = client
        self.events.setdefault(name, [])
        return client

    def gateway_id(self, name: str) -> bytes:
        return self.gateways[name].core.gateway_id

    # --- running ----------------------------------------------------------------------------------
    def _endpoints(self) -> Iterator[tuple[str, GatewayNode | AgentClient]]:
        yield from self.gateways.items()
        yield from self.agents.items()

    def _collect(self, names: set[str] | None = None) -> list[tuple[str, Handle, Message]]:
        """Drain the outputs of the endpoints ``names`` (all when None)."""
        out: list[tuple[str, Handle, Message]] = []
        endpoints: Iterable[tuple[str, GatewayNode | AgentClient]] = (
            self._endpoints() if names is None else
            ((n, ep) for n in sorted(names) if (ep := self._endpoint(n)) is not None))
        for name, ep in endpoints:
            if not ep.has_output():
                continue
            out.extend((name, dest, msg) for dest, msg in ep.messages_to_send())
            while (ev := ep.next_event()) is not None:
                self.events[name].append(ev)
        return out

    def _endpoint(self, name: str) -> GatewayNode | AgentClient | None:
        return self.gateways.get(name) or self.agents.get(name)

    def deliver(self, source: str, dest: Handle, msg: Message) -> None:
        """Encode, decode and hand one message to ``dest`` (dropped if the link is cut or
        ``dest`` does not exist)."""
        assert isinstance(dest, str), dest
        data = encode(msg)
        # a gateway's relayed messages copy the octets they received (the relay fast path):
        # what it sends must be what building every TLV gives (a copy has no wire image)
        assert data == encode(replace(msg)), f"{msg.TYPE.name} relayed differs from built"
        if source in self.gateways:
            limit = self.gateways[source].pdu_limit(dest)
            assert len(data) <= limit, f"{msg.TYPE.name} of {len(data)} octets > {limit}"
        if frozenset((source, dest)) in self.cut:
            return
        wire = decode(data)
        self.log.append(Sent(self.now, source, dest, wire, len(data)))
        if dest in self.gateways:
            self.gateways[dest].receive(source, wire, self.now)
        elif dest in self.agents:
            try:
                self.agents[dest].receive(wire, self.now)
            except ProtocolError as err:
                self.events[dest].append(err)

    def pump(self, limit: int = 100_000) -> int:
        """Deliver messages until none is queued; return how many were delivered.  The
        first round drains every endpoint (local calls queue messages too), later rounds
        only those that were just given a message."""
        n = 0
        batch = self._collect()
        rng = random.Random(f"{self.seed}/shuffle/{self.now}")
        while batch:
            if self.shuffle:
                rng.shuffle(batch)
            receivers = set()
            for source, dest, msg in batch:
                self.deliver(source, dest, msg)
                receivers.add(str(dest))
                n += 1
                if n > limit:
                    raise RuntimeError("the network does not settle")
            batch = self._collect(receivers)
        return n

    def next_timer(self) -> float | None:
        return earliest(*(ep.get_timer() for _, ep in self._endpoints()))

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead, firing every timer on the way (in order) and
        pumping after each."""
        target = self.now + seconds
        self.pump()
        while (t := self.next_timer()) is not None and t <= target:
            self.now = max(self.now, t)
            for _, ep in self._endpoints():
                due = ep.get_timer()
                if due is not None and due <= self.now:
                    ep.handle_timer(self.now)
            self.pump()
        self.now = target

    def next_sequence(self, source: str, dest: str) -> int:
        """The SEQUENCE for an UPDATE a test injects as ``source``'s on its session with
        ``dest`` (Section 6.5.1), taken from ``source``'s counter as if it had sent it."""
        sync = self.gateways[source].sessions[dest].sync
        assert isinstance(sync, PeerSync)
        return sync.out.take_sequence()

    # --- looking --------------------------------------------------------------------------------
    def take(self, name: str, kind: type[E]) -> list[E]:
        """Remove and return ``name``'s events of type ``kind``."""
        evs = self.events[name]
        found = [e for e in evs if isinstance(e, kind)]
        self.events[name] = [e for e in evs if not isinstance(e, kind)]
        return found

    def sent(self, source: str | None = None, dest: str | None = None) -> list[Sent]:
        return [s for s in self.log if (source is None or s.source == source)
                and (dest is None or s.dest == dest)]
