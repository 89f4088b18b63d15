"""The peers a gateway dials (draft-dmsc-protocol-00, Sections 6.1 and 6.7): each
configured peer with an address is dialled, its session started with OPEN, and dialled
again with :class:`Redial`'s backoff when the connection ends, unless the gateway it
reached there has a session with us over another association (it dialled us as well,
and its session won): dials then wait until that session ends, since a gateway dials
only until a session is established; its ``[[peers]]`` entry gives the session's hold
time and keepalive."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from ..analysis.pcap import PcapWriter
from ..codec.messages import Message
from ..codec.registry import timer
from ..gateway.node import GatewayNode
from ..host.config import GatewayConfig, PeerConfig
from ..host.logs import facts
from ..host.pump import Association, Pump
from ..host.transports import Connection, Peer, transport_named
from ..protocol.machine import Handle
from ..protocol.peering import PeerState, SessionTimers
from ..security.ca import Identity
from ..transport.tls import TlsIdentity

log = logging.getLogger("dmsc.gateway")


class Redial:
    """Delays between dials of one peer (Section 6.1.1): exponential from REDIAL_INITIAL,
    doubling up to REDIAL_MAX, each varied by +-REDIAL_JITTER at random so that gateways
    cut off together do not dial back in step; back to REDIAL_INITIAL once a session
    was established.  After a session closed for exceeding a peer limit the next delay
    is at least PEER_LIMIT_HOLD (:meth:`hold`)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self.delay = timer("REDIAL_INITIAL")
        self._floor = 0.0

    def next(self) -> float:
        """The delay before the next dial; the one after is twice as long (capped)."""
        jitter = timer("REDIAL_JITTER")
        wait = max(self._floor, self.delay * (1 + self._rng.uniform(-jitter, jitter)))
        self.delay = min(self.delay * 2, timer("REDIAL_MAX"))
        self._floor = 0.0
        return wait

    def hold(self, seconds: float) -> None:
        """The next dial waits at least ``seconds`` (Section 6.1.1, PEER_LIMIT_HOLD)."""
        self._floor = seconds

    def reset(self) -> None:
        self.delay = timer("REDIAL_INITIAL")


@dataclass
class PeerLink:
    """A configured peer this gateway dials, and the task that keeps it connected."""

    config: PeerConfig
    task: asyncio.Task[None] | None = None
    connection: Connection | None = None
    established: asyncio.Event = field(default_factory=asyncio.Event)
    redial: Redial = field(default_factory=Redial)
    #: The gateway the last dial reached, and (set) when its session over another
    #: association closed (:meth:`PeerDialing._peered_elsewhere`).
    reached: Identity | None = None
    elsewhere_closed: asyncio.Event = field(default_factory=asyncio.Event)


class PeerDialing:
    """The gateway runtime's part that dials its configured peers (module docstring)."""

    config: GatewayConfig
    tls: TlsIdentity
    pump: Pump | None
    node: GatewayNode | None
    _peers: list[PeerLink]
    _pcap: PcapWriter | None
    _keylog_file: TextIO | None
    _stopping: bool

    if TYPE_CHECKING:
        def _association(self, conn: Connection, transport: str) -> Association: ...

        def _handle(self, msg: Message, peer: Peer, *,
                    transport: str) -> Awaitable[Message | None]: ...

    async def wait_peers(self, timeout: float = 10.0) -> None:
        """Wait until every dialled peer's session is ESTABLISHED."""
        await asyncio.wait_for(asyncio.gather(*(p.established.wait() for p in self._peers)),
                               timeout)

    async def _peered_elsewhere(self, peer: PeerLink) -> None:
        """While the gateway the last dial reached has an ESTABLISHED session over
        another association (it dialled us too and that session won, so our OPEN was
        refused), count the peer as established and wait for that session to end; the
        next dial then comes REDIAL_INITIAL later (Section 6.1.1: a gateway dials until a
        session is established)."""
        while not self._stopping and self._session_with(peer.reached):
            peer.established.set()
            peer.redial.reset()
            peer.elsewhere_closed.clear()
            await peer.elsewhere_closed.wait()
        peer.established.clear()

    def _session_with(self, identity: Identity | None) -> bool:
        """Whether an ESTABLISHED session runs with the gateway ``identity``."""
        node = self.node
        return identity is not None and node is not None and any(
            isinstance(h, Association) and h.identity == identity
            and s.state is PeerState.ESTABLISHED for h, s in node.sessions.items())

    def peer_config(self, handle: Handle) -> PeerConfig | None:
        """The ``[[peers]]`` entry of the peer behind ``handle``: the one dialled over
        this association, else the first of its domain (None: none)."""
        link = handle.link if isinstance(handle, Association) else None
        identity = handle.identity if isinstance(handle, Association) else None
        chosen = next((p.config for p in self._peers if link is not None
                       and p.connection is link), None)
        if chosen is None and identity is not None:
            chosen = next((p for p in self.config.peers if p.domain == identity.domain), None)
        return chosen

    def _session_timers(self, handle: Handle) -> SessionTimers:
        """Hold time and keepalive towards the peer behind ``handle``: its ``[[peers]]``
        entry (:meth:`peer_config`), else ``[limits]``."""
        c = self.config
        chosen = self.peer_config(handle)
        if chosen is None:
            return SessionTimers(c.hold_time, c.keepalive)
        return SessionTimers(c.hold_time if chosen.hold_time is None else chosen.hold_time,
                             c.keepalive if chosen.keepalive is None else chosen.keepalive)

    async def _keep_peer(self, peer: PeerLink) -> None:
        """Dial a configured peer, start the session, dial again when the connection
        ends (the session closed, the handshake failed), after :class:`Redial`'s delay."""
        assert peer.config.address is not None
        host, port = peer.config.address
        transport = transport_named(peer.config.transport or self.config.transport)
        while not self._stopping:
            try:
                conn = await transport.connect(
                    host, port, self.tls, server_name=peer.config.server_name,
                    expect_domain=peer.config.domain,
                    handler=functools.partial(self._handle, transport=transport.name),
                    pcap=self._pcap, keylog=self._keylog_file, lab=self.config.lab)
            except (ConnectionError, OSError, TimeoutError) as exc:
                log.warning("cannot reach peer", extra=facts(
                    peer=f"{host}:{port}", domain=peer.config.domain, error=str(exc),
                    retry_s=round(peer.redial.delay, 3)))
            else:
                peer.connection, peer.reached = conn, conn.peer.identity
                assoc = self._association(conn, transport.name)
                assert self.pump is not None and self.node is not None
                self.pump.call(self.node.connect, assoc, self.pump.now())
                await conn.wait_closed()
                peer.established.clear()
                peer.connection = None
                await self._peered_elsewhere(peer)
            if not self._stopping:
                await asyncio.sleep(peer.redial.next())
