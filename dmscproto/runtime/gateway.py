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
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO, cast

from cryptography import x509

from ..analysis.pcap import PcapWriter
from ..codec.messages import Error, Message, Update
from ..codec.registry import ANSWER_TO, MAX_PDU_SIZE, ErrorCode, MessageType, timer
from ..codec.values import ExportPolicy
from ..errors import require_extra
from ..gateway.core import GatewayCore
from ..gateway.limits import Budget, RequestLimits
from ..gateway.node import GatewayNode
from ..gateway.store import RegistryStore
from ..host.config import ConfigError, GatewayConfig, PeerConfig
from ..host.logs import facts
from ..host.pump import Association, Pump
from ..host.telemetry import GatewayHops
from ..host.transports import Connection, Listener, Peer, transport_named
from ..management.metrics import GatewayMetrics
from ..protocol.events import (
    AgentRegistered,
    AgentRemoved,
    ProtocolViolation,
    RecordRefused,
    SessionClosed,
    SessionEstablished,
    TableChanged,
)
from ..protocol.machine import Handle, ProtocolError
from ..protocol.peering import HELD_AFTER, SessionTimers
from ..protocol.summary import Replication
from ..protocol.tracecontext import trace_id_of
from ..security.ca import Credential, Kind, anchor_domains
from ..security.federation import Federation, ImportPolicy, PeerDomain, TransitPolicy
from ..security.guard import Authenticated, GatewayGuard, Guard
from ..security.proof import RequestVerifier, SignaturePrecheck
from ..security.revocation import CrlFeed
from ..security.tokens import TokenVerifier
from ..transport.driver import Driver
from ..transport.tls import TlsIdentity
from .lab import WARNING, LabAssociations, LabGuard
from .loop import HeapFreezer, LoopLag

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from ..management.server import ManagementServer

log = logging.getLogger("dmsc.gateway")
#: How often the event loop is probed for the management listener's lag metrics (s).
MANAGEMENT_LOOP_PERIOD = 0.25

_M = MessageType
#: Answers whose error STATUS is this gateway's own decision, and the request each
#: answers (ROUTE_REPLY and TRACE_REPLY may be relayed: their hop logs a refusal,
#: :mod:`..host.telemetry`; ERROR names its request in OFFENDING_TYPE).
_REFUSALS = {_M.REGISTER_ACK: _M.REGISTER, _M.REFRESH_ACK: _M.REFRESH,
             _M.DEREGISTER_ACK: _M.DEREGISTER, _M.DISCOVER_REPLY: _M.DISCOVER}
#: Requests whose refusal before their hop began is logged from ProtocolViolation.
_HOPS = frozenset({_M.ROUTE_REQUEST, _M.TRACE_REQUEST})
del _M



class Redial:
    """Delays between dials of one peer (Section 6.7): exponential from REDIAL_INITIAL,
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
class Observer:
    """Optional callbacks for every message the gateway sends and receives and every
    event of its node (the demo's step display, tests)."""

    sent: Callable[[Handle, Message], None] | None = None
    received: Callable[[Handle, Message], None] | None = None
    event: Callable[[object], None] | None = None


def build_federation(config: GatewayConfig) -> Federation:
    """The federation of a configuration: the own domain's anchor from
    ``trust_anchors`` and one :class:`PeerDomain` per peer of another domain."""
    own: x509.Certificate | None = None
    for path in config.trust_anchors:
        for cert in x509.load_pem_x509_certificates(path.read_bytes()):
            if anchor_domains(cert) == {config.domain}:
                own = cert
    if own is None:
        raise ConfigError(config.source, "gateway.trust_anchors",
                          f"none is the authority of {config.domain}")
    peers: dict[str, PeerDomain] = {}
    for i, p in enumerate(config.peers):
        if p.domain == config.domain or p.domain in peers or p.anchor is None:
            continue
        try:
            anchor = x509.load_pem_x509_certificate(p.anchor.read_bytes())
            peers[p.domain] = PeerDomain(
                p.domain, anchor, p.export or ExportPolicy(peer_domains=()),
                ImportPolicy(p.import_domains, p.import_capabilities, p.import_callers),
                p.transit)
        except ValueError as exc:
            raise ConfigError(config.source, f"peers[{i}].anchor", str(exc)) from None
    sources = [*config.crl, *(s for p in config.peers for s in p.crl)]
    return Federation(config.domain, own, peers.values(), crl_sources=sources,
                      transit=transit_policy(config))


def transit_policy(config: GatewayConfig) -> TransitPolicy:
    """The ``[federation]`` table as a :class:`TransitPolicy`: every certificate of the
    trust bundle's files must be one domain's authority."""
    t = config.transit
    bundle = []
    for i, path in enumerate(t.trust_bundle):
        key = f"federation.trust_bundle[{i}]"
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except ValueError:
            raise ConfigError(config.source, key, f"{path} holds no PEM certificate") from None
        for cert in certs:
            if len(anchor_domains(cert)) != 1:
                raise ConfigError(config.source, key, f"{path}: {cert.subject.rfc4514_string()}"
                                  " is not the authority of one domain")
        bundle += certs
    return TransitPolicy(tuple(bundle), t.via, t.max_path, t.export,
                         ImportPolicy((), t.capabilities, t.callers))


class CrlRefresher:
    """Keeps the federation's revocation lists current (Section 10): fetches every
    source (files, the authorities' ``/crl`` URLs) off the event loop, at start and then
    before each list's nextUpdate (:meth:`CrlFeed.next_refresh`)."""

    def __init__(self, feed: CrlFeed) -> None:
        self.feed = feed
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> dict[str, str]:
        """Fetch and install now; returns the sources that failed, with why."""
        errors = await asyncio.to_thread(self.feed.refresh)
        for source, why in errors.items():
            log.warning("CRL not refreshed", extra=facts(source=source, error=why))
        return errors

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            wait = self.feed.next_refresh() - dt.datetime.now(dt.UTC)
            await asyncio.sleep(max(wait.total_seconds(), 1.0))
            await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task


@dataclass
class _PeerLink:
    """A configured peer this gateway dials, and the task that keeps it connected."""

    config: PeerConfig
    task: asyncio.Task[None] | None = None
    connection: Connection | None = None
    established: asyncio.Event = field(default_factory=asyncio.Event)
    redial: Redial = field(default_factory=Redial)


class GatewayRuntime:
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
        self._freezer = HeapFreezer() if tune_gc else None
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
        self._peers = [_PeerLink(p) for p in config.peers if p.address is not None]
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
                                work_slice=c.limit("WORK_SLICE"),
                                tracer=GatewayHops(self.name, c.domain,
                                                   provider=self.tracer_provider),
                                limit_hold=c.limit("PEER_LIMIT_HOLD"),
                                budget=Budget(c.limit("DISCOVER_BUDGET") / 1000),
                                relay_max_hops=int(c.limit("RELAY_MAX_HOPS")),
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
            sent = _both(self.metrics.sent, sent)
            received = _both(self.metrics.received, received)
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

    async def wait_peers(self, timeout: float = 10.0) -> None:
        """Wait until every dialled peer's session is ESTABLISHED."""
        await asyncio.wait_for(asyncio.gather(*(p.established.wait() for p in self._peers)),
                               timeout)

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

    async def _keep_peer(self, peer: _PeerLink) -> None:
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
                peer.connection = conn
                assoc = self._association(conn, transport.name)
                assert self.pump is not None and self.node is not None
                self.pump.call(self.node.connect, assoc, self.pump.now())
                await conn.wait_closed()
                peer.established.clear()
                peer.connection = None
            if not self._stopping:
                await asyncio.sleep(peer.redial.next())

    # --- events --------------------------------------------------------------------------
    def _sent(self, dest: Handle, msg: Message) -> None:
        """Every message sent: one INFO line per request this gateway refused.  The
        records of an UPDATE may have been decoded to be sent: the heap grew."""
        if isinstance(msg, Update) and self._freezer is not None:
            self._freezer.grew(len(msg.advertise))
        request: MessageType | int | None = _REFUSALS.get(msg.TYPE)
        if isinstance(msg, Error) and msg.offending_type is not None:
            request = msg.offending_type
            with suppress(ValueError):
                request = MessageType(request)
        status = getattr(msg, "status", ErrorCode.SUCCESS)
        if request is not None and status is not ErrorCode.SUCCESS:
            log.info("request refused", extra=facts(
                peer=_uri(dest), request=request, status=status,
                reason=getattr(msg, "diagnostic", None),
                trace_id=trace_id_of(getattr(msg, "trace", None))))
        if self.observer.sent is not None:
            self.observer.sent(dest, msg)

    def _on_event(self, event: object) -> None:
        if self.metrics is not None:
            self.metrics.event(event)
        if isinstance(event, SessionEstablished | SessionClosed):
            for peer in self._peers:
                if peer.connection is not None and isinstance(event.handle, Association) \
                        and event.handle.link is peer.connection:
                    if isinstance(event, SessionEstablished):
                        peer.established.set()
                        peer.redial.reset()
                    else:
                        peer.established.clear()
                        if event.status in HELD_AFTER:
                            peer.redial.hold(self.config.limit("PEER_LIMIT_HOLD"))
        if isinstance(event, SessionClosed) and not self._stopping:
            self._close_association(event.handle, event.status)
        if isinstance(event, SessionEstablished):
            log.info("peer session established", extra=facts(
                peer=_uri(event.handle), gateway_id=event.gateway_id, domain=event.domain,
                hold_time=event.hold_time))
        elif isinstance(event, SessionClosed):
            log.info("peer session closed", extra=facts(
                peer=_uri(event.handle), status=event.status, by_peer=event.by_peer))
        elif isinstance(event, AgentRegistered):
            log.info("agent registered", extra=facts(
                agent=_uri(event.handle), agent_id=event.agent_id, lease=event.lease))
            if isinstance(event.replaced, Association):  # Section 5.1: tell the other one
                log.warning("registration replaced", extra=facts(
                    agent=_uri(event.handle), agent_id=event.agent_id))
                event.replaced.link.close(
                    ErrorCode.NAME_CONFLICT,
                    f"{_uri(event.handle)} registered again on another connection")
        elif isinstance(event, AgentRemoved):
            log.info("agent removed", extra=facts(agent_id=event.withdrawn.agent_id,
                                                  status=event.status))
            if isinstance(event.bound, Association):  # Section 5.1: tell the agent
                event.bound.link.close(
                    ErrorCode.UNKNOWN_AGENT, "registration removed from another connection")
        elif isinstance(event, ProtocolViolation) and event.message_type in _HOPS:
            log.info("request refused", extra=facts(
                peer=_uri(event.handle), request=event.message_type, status=event.status,
                reason=event.diagnostic))
        elif isinstance(event, ProtocolViolation) and event.message_type not in ANSWER_TO:
            log.warning("message refused", extra=facts(
                peer=_uri(event.handle), message=event.message_type, status=event.status,
                reason=event.diagnostic))
        elif isinstance(event, TableChanged) and self._freezer is not None:
            self._freezer.grew(len(event.advertised))
        elif isinstance(event, RecordRefused):
            log.warning("advertised record refused", extra=facts(
                peer=_uri(event.handle), agent_id=event.agent_id, status=event.status,
                reason=event.diagnostic))
        if self.observer.event is not None:
            self.observer.event(event)

    def _close_association(self, handle: Handle, status: ErrorCode) -> None:
        """A session ended: close its association (Section 6.7), once what the node
        queued for it (its NOTIFY) is on its way; the peer is then dialled again."""
        for conn, assoc in self._assocs.items():
            if assoc is handle:
                asyncio.get_running_loop().call_soon(conn.close, status, "session closed")
                return

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


def _both(first: Callable[[Handle, Message], None],
          then: Callable[[Handle, Message], None] | None) -> Callable[[Handle, Message], None]:
    """``first``, then ``then`` if there is one."""
    if then is None:
        return first

    def both(handle: Handle, msg: Message) -> None:
        first(handle, msg)
        then(handle, msg)
    return both


def _peer_of(handle: object) -> Authenticated | None:
    """Who is behind an association, for the guard (None: not authenticated)."""
    if isinstance(handle, Association) and handle.certificate is not None:
        return cast(Authenticated, handle)
    return None


def _pdu_limit(handle: Handle) -> int:
    """The largest PDU an association's transport carries (Sections 4.1, 9.2)."""
    if isinstance(handle, Association):
        return handle.link.max_pdu
    return MAX_PDU_SIZE


def _uri(handle: Handle) -> str:
    return handle.identity.uri if isinstance(handle, Association) and handle.identity \
        else repr(handle)
