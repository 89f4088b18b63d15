"""The gateway process: a :class:`~dmscproto.gateway.node.GatewayNode` on QUIC
(draft Sections 5, 6 and 9.1).

The node decides everything; :class:`GatewayRuntime` only

* opens the registry file (:class:`~dmscproto.gateway.store.RegistryStore`; the node
  acknowledges a registration only after its commit) and loads the TLS identity once;
* listens for connections from agents and peer gateways on one or more transports at
  once (QUIC and DTLS: :mod:`.transports`, e.g. agents on DTLS beside peers on QUIC),
  and dials the configured peers, each over its configured transport, handing each
  authenticated connection to the node as an
  :class:`~dmscproto.host.pump.Association` (peer sessions start with OPEN on the
  connections this gateway dials, with each peer's hold time and keepalive);
* closes the association of every session that ends (hold timer, NOTIFY) and dials
  the peer again with :class:`Redial`'s backoff (Section 6.1.1);
* after a restart, has the node withhold the records loaded from the store until their
  agents come back or ``restart_grace`` passes (Section 6.1.2);
* plugs the security layer into the node's hooks
  (:meth:`~dmscproto.security.guard.GatewayGuard.node_hooks`: registration proof, agents
  of other domains refused, tokens when required, the federation's OPEN, advertisement,
  import and export checks and origin assertions,
  :class:`~dmscproto.security.federation.Federation`);
* moves messages and timers with a :class:`~dmscproto.host.pump.Pump` (a gateway's
  ROUTE_REQUEST to a local agent goes on a new stream of that agent's own connection);
* in lab mode (``gateway.lab = true``, cleartext UDP only, Section 9.4), plugs
  :class:`~.lab.LabGuard` instead, which takes identities from REGISTER's signed record
  and OPEN (what that does not protect: :mod:`.lab`), and logs a WARNING at start;
* with ``[management] listen``, counts what it does (:mod:`dmscproto.management.metrics`:
  every PDU sent and received, node events, DIGEST handling time, event-loop lag) and
  serves RESTCONF and ``/metrics`` to operators (:mod:`dmscproto.management.server`);
* shuts down cleanly: NOTIFY CEASE to the peers, connections closed, timers stopped,
  the store closed.

What the configuration makes of trust is in :mod:`.trust`, the dialled peers in
:mod:`.peers`, what the runtime does on its node's events in :mod:`.reactions`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TextIO

from ..analysis.pcap import PcapWriter
from ..codec.messages import Message, Update
from ..codec.registry import MAX_PDU_SIZE, ErrorCode, MessageType
from ..errors import require_extra
from ..gateway.core import GatewayCore
from ..gateway.limits import Budget, RequestLimits
from ..gateway.node import GatewayNode
from ..gateway.store import RegistryStore
from ..host.config import ConfigError, GatewayConfig
from ..host.logs import facts
from ..host.pump import Association, Pump
from ..host.telemetry import GatewayHops
from ..host.transports import Connection, Listener, Peer, transport_named
from ..management.metrics import GatewayMetrics
from ..protocol.machine import Handle, ProtocolError
from ..protocol.summary import Replication
from ..security.ca import Credential, Kind
from ..security.guard import GatewayGuard
from ..security.hooks import Authenticated, Guard
from ..security.proof import RequestVerifier, SignaturePrecheck
from ..security.tokens import TokenVerifier
from ..transport.driver import Driver, turn_budget
from ..transport.tls import TlsIdentity
from .lab import WARNING, LabAssociations, LabGuard
from .loop import HeapFreezer, LoopLag
from .peers import PeerDialing, PeerLink, Redial
from .reactions import Observer, Reactions, both
from .trust import CrlRefresher, build_federation

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from ..management.server import ManagementServer

#: What other modules import from here; the parts live in .peers, .reactions and .trust.
__all__ = ["GatewayRuntime", "Observer", "Redial", "build_federation"]

log = logging.getLogger("dmsc.gateway")
#: How often the event loop is probed for the management listener's lag metrics (s).
MANAGEMENT_LOOP_PERIOD = 0.25


class GatewayRuntime(PeerDialing, Reactions):
    """One running gateway (module docstring).  ``pcap`` and ``keylog`` override the
    configuration's capture files (the demo shares one of each among all nodes);
    ``tracer_provider`` records the gateway's OpenTelemetry spans (default: the global
    provider; :mod:`..host.telemetry`); ``tune_gc`` is for a process that is this gateway alone
    (:mod:`..gateway.registry`)."""

    def __init__(self, config: GatewayConfig, *, pcap: PcapWriter | None = None,
                 keylog: TextIO | None = None, observer: Observer | None = None,
                 tracer_provider: TracerProvider | None = None, tune_gc: bool = False,
                 loop_probe: bool = False) -> None:
        self.config = config
        self.tracer_provider = tracer_provider
        self._tune_gc = tune_gc
        #: The event-loop stalls, measured when ``loop_probe`` (the longest logged at
        #: stop) and, every quarter second, with a management listener (its metrics).
        self.loop_lag = LoopLag() if loop_probe else \
            LoopLag(MANAGEMENT_LOOP_PERIOD) if config.management is not None else None
        #: With ``tune_gc``, keeps the registry out of full garbage collections
        #: (:class:`HeapFreezer`): for a process of its own (it freezes every object
        #: then alive).
        self._freezer = HeapFreezer(
            defer=lambda f: asyncio.get_running_loop().call_soon(f)) if tune_gc else None
        self.observer = observer or Observer()
        self.federation = build_federation(config)
        self._precheck = SignaturePrecheck()
        self.federation.check_signature = self._precheck.check_signature
        credential = Credential.load(config.certificate, config.key)
        identity = credential.identity
        if identity.kind is not Kind.GATEWAY or identity.domain != config.domain:
            raise ConfigError(config.source, "gateway.certificate",
                              f"{identity.uri} is not a gateway certificate of {config.domain}")
        self.tls = TlsIdentity(credential, self.federation.trust_store())
        self.identity = identity
        self.name = config.name or identity.name
        self._pcap = pcap
        self._keylog_file = keylog
        #: Capture files this gateway opened itself (from the configuration).
        self._owned: list[PcapWriter | TextIO] = []
        self.credential = credential
        #: The CRL refresher, when the configuration names CRL sources.
        self.crl: CrlRefresher | None = None
        self.guard: Guard | None = None
        self.store: RegistryStore | None = None
        self.core: GatewayCore | None = None
        self.node: GatewayNode | None = None
        self.pump: Pump | None = None
        #: The listeners by transport name, the primary one first.
        self.servers: dict[str, Listener] = {}
        self._assocs: dict[Connection, Association] = {}
        #: Lab mode: the associations bound to nobody yet, and the timer that closes them.
        self.lab_associations = LabAssociations()
        self._lab_driver: Driver | None = None
        self._peers = [PeerLink(p) for p in config.peers if p.address is not None]
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False
        #: The transport of each association, by name.
        self.transports: dict[Handle, str] = {}
        #: The counters (only with a management listener: they cost a little per PDU).
        self.metrics = GatewayMetrics(lambda h: self.transports.get(h, "unknown")) \
            if config.management is not None else None
        self.management: ManagementServer | None = None

    @property
    def gateway_id(self) -> bytes:
        return self.identity.entity_id

    @property
    def address(self) -> tuple[str, int]:
        """The primary listener's address."""
        return self.addresses[self.config.transport]

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Every listener's address by transport name."""
        return {name: server.address for name, server in self.servers.items()}

    # --- start ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, start the node, listen, dial the peers."""
        c = self.config
        if self._pcap is None and c.pcap is not None:
            self._pcap = PcapWriter(c.pcap)
            self._owned.append(self._pcap)
        if self._keylog_file is None and c.keylog is not None:
            self._keylog_file = open(c.keylog, "a", encoding="ascii")  # noqa: SIM115
            self._owned.append(self._keylog_file)
        if self.federation.crl_sources:  # before the first handshake
            self.crl = CrlRefresher(self.federation.crl_feed())
            await self.crl.refresh()
            self.crl.start()
        self.store = RegistryStore(c.store, exclusive=True, checkpoint_interval=0.5)
        self.core = GatewayCore(self.gateway_id, c.domain, self.store, min_lease=c.min_lease,
                                max_lease=c.max_lease,
                                max_peer_records=int(c.limit("PEER_MAX_RECORDS")),
                                max_peer_path=int(c.limit("PEER_MAX_PATH")),
                                tune_gc=self._tune_gc)
        tokens = (TokenVerifier(self.federation.anchor, gateway_uri=self.identity.uri)
                  if c.require_tokens else None)
        if c.lab:
            log.warning(WARNING, extra=facts(gateway=self.identity.uri))
            self.guard = LabGuard(self.core, self.federation)
        else:
            self.guard = GatewayGuard(self.core, RequestVerifier(self.tls.trust,
                                                                 tokens=tokens),
                                      _peer_of, federation=self.federation,
                                      credential=self.credential,
                                      require_origin=c.require_origin)
        summary = {p.domain for p in c.peers if p.replication == "summary"}
        self.node = GatewayNode(self.core, name=self.name, hold_time=c.hold_time,
                                pdu_limit=_pdu_limit, session_timers=self._session_timers,
                                replication=lambda domain: Replication.SUMMARY
                                if domain in summary else Replication.FULL,
                                summary_mode=bool(summary),
                                limits=RequestLimits(c.limit), slice_clock=time.thread_time,
                                learn_slice=c.limit("LEARN_SLICE"),
                                learn_budget=self._learn_budget(),
                                work_slice=c.limit("WORK_SLICE"),
                                tracer=GatewayHops(self.name, c.domain,
                                                   provider=self.tracer_provider),
                                limit_hold=c.limit("PEER_LIMIT_HOLD"),
                                budget=Budget(c.limit("DISCOVER_BUDGET") / 1000),
                                relay_max_hops=int(c.limit("RELAY_MAX_HOPS")),
                                transaction_events=self.observer.event is not None,
                                **self.guard.node_hooks())
        if c.lab:
            self._lab_driver = Driver(_UnboundExpiry(self), lazy=True)
        if self._freezer is not None:
            self._freezer.freeze()
        if self.loop_lag is not None:
            self.loop_lag.start()
        sent: Callable[[Handle, Message], None] = self._sent
        received = self.observer.received
        if self.metrics is not None:
            sent = both(self.metrics.sent, sent)
            received = both(self.metrics.received, received)
        self.pump = Pump(self.node, on_event=self._on_event, on_send=sent,
                         on_receive=received)
        if self.core.agent_ids(local_only=True):  # a restart (Section 6.1.2)
            withheld = self.node.restarted(self.pump.now(), c.restart_grace)
            log.info("restarted: records withheld from peers until their agents return",
                     extra=facts(records=withheld, grace_s=c.restart_grace))
        for name, (host, port) in c.listeners:
            server = await transport_named(name).serve(host, port, self.tls,
                                                       functools.partial(self._handle,
                                                                         transport=name),
                                                       pcap=self._pcap,
                                                       keylog=self._keylog_file, lab=c.lab,
                                                       limits=c.limit)
            self.servers[name] = server
            log.info("gateway listening", extra=facts(
                gateway=self.identity.uri, gateway_id=self.gateway_id, transport=name,
                address=f"{server.address[0]}:{server.address[1]}", records=len(self.core)))
        if c.management is not None:
            await self._start_management(*c.management)
        self.pump.flush()  # arms the lease timer of records loaded from the store
        for peer in self._peers:
            peer.task = asyncio.get_running_loop().create_task(self._keep_peer(peer))

    def _learn_budget(self) -> Callable[[float], float]:
        """The node's time for learning records: what is left of its event loop's turn
        budget (LEARN_SLICE a turn, shared with reading and decoding, and with every
        other gateway on the loop)."""
        budget = turn_budget(asyncio.get_running_loop())
        budget.seconds = self.config.limit("LEARN_SLICE")
        return lambda _now: budget.left()

    async def _start_management(self, host: str, port: int) -> None:
        for module, package in (("aiohttp", "aiohttp"),
                                ("prometheus_client", "prometheus-client")):
            require_extra(module, "management", "the management listener", package)
        from ..management.server import ManagementServer

        assert self.metrics is not None
        self.management = ManagementServer(self)
        await self.management.start(host, port)
        address = self.management.address
        log.info("management listening", extra=facts(
            gateway=self.identity.uri, address=f"{address[0]}:{address[1]}"))

    # --- associations --------------------------------------------------------------------
    def _association(self, conn: Connection, transport: str) -> Association:
        assoc = self._assocs.get(conn)
        if assoc is None:
            # None only in lab mode, until the LabGuard binds one
            assert conn.peer.identity is not None or self.config.lab
            assoc = Association(conn, conn.peer.identity, conn.peer.certificate)
            self._assocs[conn] = assoc
            self.transports[assoc] = transport
            watcher = asyncio.get_running_loop().create_task(self._watch(conn, assoc))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
        return assoc

    async def _watch(self, conn: Connection, assoc: Association) -> None:
        """Tell the node when a peer gateway's connection is gone."""
        await conn.wait_closed()
        self._assocs.pop(conn, None)
        self.transports.pop(assoc, None)
        if self.metrics is not None:
            self.metrics.ended(assoc)
        self.lab_associations.closed(assoc)
        node, pump = self.node, self.pump
        if self._stopping or node is None or pump is None:
            return
        if assoc in node.sessions:
            pump.call(node.disconnect, assoc, pump.now())

    def _close_unbound(self, assocs: list[Association]) -> None:
        """Lab mode: close the associations :class:`LabAssociations` gives up on, and keep
        the driver's timer armed for the next one due (firing early is harmless)."""
        for assoc in assocs:
            assoc.link.close(ErrorCode.RESOURCE_EXHAUSTED, "lab association bound to nobody")
        if self._lab_driver is not None:
            self._lab_driver.arm()

    def _handle(self, msg: Message, peer: Peer, *,
                transport: str) -> Awaitable[Message | None]:
        """A request or one-way message on a connection (either direction): the pump's
        future of the node's answer.  The record signatures of a peer gateway's UPDATE
        are checked first, in a worker thread (:class:`SignaturePrecheck`): the UPDATE
        may then reach the node after a later sync message, which waits for it (Section
        6.5.1)."""
        assoc = self._association(peer.connection, transport)
        if self._lab_driver is not None:
            self._close_unbound(self.lab_associations.heard(assoc, self._lab_driver.now()))
        elif isinstance(msg, Update) and len(msg.advertise) > 1 and peer.identity is not None \
                and peer.identity.kind is Kind.GATEWAY:
            if self._freezer is not None:  # its records, decoded: the heap grew
                self._freezer.grew(len(msg.advertise))
            return self._prechecked(assoc, msg)
        return self._deliver(assoc, msg)

    async def _prechecked(self, assoc: Association, msg: Update) -> Message | None:
        await self._precheck.precheck([ad.record for ad in msg.advertise])
        return await self._deliver(assoc, msg)

    def _deliver(self, assoc: Association, msg: Message) -> Awaitable[Message | None]:
        assert self.pump is not None
        if self.metrics is not None and msg.TYPE is MessageType.DIGEST:
            return self._timed_digest(assoc, msg)
        return self.pump.deliver(assoc, msg)

    async def _timed_digest(self, assoc: Association, msg: Message) -> Message | None:
        """DIGEST handling time, for the metrics (one-way: handled at once)."""
        assert self.pump is not None and self.metrics is not None
        started = time.perf_counter()
        answer = await self.pump.deliver(assoc, msg)
        self.metrics.digest_handled(assoc, time.perf_counter() - started)
        return answer

    # --- stop ----------------------------------------------------------------------------
    async def stop(self) -> None:
        """NOTIFY CEASE to the peers, close every connection, stop the timers and close
        the store.  Every acknowledged change is already committed."""
        if self._stopping:
            return
        self._stopping = True
        if self.loop_lag is not None:  # what it measured while running
            log.info("event loop probe", extra=facts(
                loop_stall_ms_max=round(await self.loop_lag.stop(), 1),
                loop_stall_cpu_ms_max=round(self.loop_lag.worst_cpu * 1000, 1)))
        if self.management is not None:
            await self.management.stop()
        node, pump = self.node, self.pump
        if node is not None and pump is not None:
            for handle in list(node.sessions):
                with suppress(KeyError, ProtocolError):  # the session ended meanwhile
                    pump.call(node.disconnect, handle, pump.now())
            await asyncio.sleep(0)  # let the NOTIFYs be written
        for peer in self._peers:
            if peer.task is not None:
                peer.task.cancel()
        if self._lab_driver is not None:
            self._lab_driver.stop()
        conns = list(self._assocs)
        for conn in conns:
            conn.close(ErrorCode.CEASE, "gateway shutting down")
        for server in self.servers.values():
            server.close()
        if conns:  # QUIC's closing period, briefly
            waits = [asyncio.ensure_future(c.wait_closed()) for c in conns]
            await asyncio.wait(waits, timeout=1.0)
            for w in waits:
                w.cancel()
        for task in [*(p.task for p in self._peers if p.task), *self._watchers]:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        if pump is not None:
            await pump.close()
        if self.crl is not None:
            await self.crl.stop()
        self._precheck.close()
        if self.store is not None:
            self.store.close()
        for file in self._owned:
            file.close()
        log.info("gateway stopped", extra=facts(gateway=self.identity.uri))


class _UnboundExpiry:
    """Lab mode: the expiry of :class:`LabAssociations`, as the driver's timer."""

    def __init__(self, runtime: GatewayRuntime) -> None:
        self._runtime = runtime

    def get_timer(self) -> float | None:
        return self._runtime.lab_associations.next_expiry()

    def handle_timer(self, now: float) -> None:
        self._runtime._close_unbound(self._runtime.lab_associations.expired(now))


def _peer_of(handle: Any) -> Authenticated | None:
    """Who is behind an association, for the guard (None: not authenticated).  Given
    ``Any``, returned as it is: no ``cast`` call (twice a routed call)."""
    if isinstance(handle, Association) and handle.certificate is not None:
        return handle  # type: ignore[return-value]
    return None


def _pdu_limit(handle: Handle) -> int:
    """The largest PDU an association's transport carries (Sections 4.1, 9.2)."""
    if isinstance(handle, Association):
        return handle.link.max_pdu
    return MAX_PDU_SIZE
