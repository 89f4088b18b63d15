"""What a gateway's machines ask of it: the peering and routing ports
(:mod:`dmscproto.protocol.ports`; draft-dmsc-protocol-00, Sections 5.3, 6.1, 6.5),
answered from the state of the :class:`~.node.GatewayNode` they run in."""

from __future__ import annotations

import math
from collections.abc import Callable

from ..codec.messages import Open
from ..codec.registry import ErrorCode, Scope
from ..codec.values import CapabilityRecord, DiscoveryQuery
from ..protocol.certificates import CertificateCheck, SessionCertificates, thumbprint
from ..protocol.discovery import DiscoveryResponder, PolicyFor
from ..protocol.machine import Handle, Outbox, ProtocolError, Refusal, TransactionIds
from ..protocol.peering import ExportFor, OpenCheck, PeerSession
from ..protocol.ports import NextHop, query_key
from ..protocol.registration import GatewayRegistration, RecordVerifier
from ..protocol.routing import Relay
from ..protocol.summary import Replication
from ..protocol.sync import PeerSync, SyncPeer
from .core import GatewayCore
from .restart import RestartGrace
from .routing import DeliverLocal, Forward, Reject


class NodePorts:
    """The :class:`~dmscproto.protocol.ports.PeeringPort` and
    :class:`~dmscproto.protocol.ports.RoutingPort` of a gateway node, a base of
    :class:`~.node.GatewayNode`, which sets the attributes declared here."""

    core: GatewayCore
    accept_open: OpenCheck
    accept_certificate: CertificateCheck
    certificates: SessionCertificates
    _export_for: ExportFor
    replication: Callable[[str], Replication]
    pdu_limit: Callable[[Handle], int]
    held: dict[bytes, tuple[float, ErrorCode]]
    peers: dict[bytes, Handle]
    relays: dict[tuple[Handle, int], Relay]
    sessions: dict[Handle, PeerSession]
    registration: GatewayRegistration
    discovery: DiscoveryResponder
    discovery_policy: PolicyFor
    grace: RestartGrace | None
    txids: TransactionIds
    verifier: RecordVerifier
    slice_clock: Callable[[], float] | None
    learn_slice: float
    learn_budget: Callable[[float], float] | None
    work_slice: float
    syncs: dict[Handle, PeerSync]
    _out: Outbox

    def export_for(self, domain: str) -> Callable[[CapabilityRecord], bool] | None:
        """The records advertised to a peer of ``domain``: none to a domain that gets
        summaries only (``replication``), else the ``export_for`` hook's."""
        if domain != self.core.domain and self.replication(domain) is Replication.SUMMARY:
            return lambda _record: False
        return self._export_for(domain)

    # --- peering (the sessions' PeeringPort) --------------------------------------------------
    def check_open(self, handle: Handle, msg: Open, now: float) -> Refusal | None:
        """The ``accept_open`` hook (identity and federation), then the node's own OPEN
        check: not ourselves, not a gateway already peered over another association, not
        a peer held after exceeding a peer limit (with RETRY_AFTER)."""
        refused = self.accept_open(handle, msg)
        if refused is not None:
            return refused
        until, code = self.held.get(msg.gateway_id, (0.0, ErrorCode.SUCCESS))
        if now < until:
            return Refusal(code, f"held for {until - now:.0f} s after {code.name}",
                           max(1, math.ceil((until - now) * 1000)))
        self.held.pop(msg.gateway_id, None)
        if msg.gateway_id == self.core.gateway_id:
            return Refusal(ErrorCode.IDENTITY_MISMATCH, "OPEN carries our own gateway id")
        other = self.peers.get(msg.gateway_id)
        if other is not None and other != handle:
            return Refusal(ErrorCode.POLICY_DENIED,
                           "a session with that gateway exists on another association")
        return None

    def check_certificate(self, handle: Handle, der: bytes, now: float) -> Refusal | None:
        """The ``accept_certificate`` hook (Section 6.10)."""
        return self.accept_certificate(handle, der, now)

    def keep_certificate(self, handle: Handle, der: bytes) -> bytes:
        return self.certificates.keep(handle, der)

    def offer_certificate(self, dest: Handle, der: bytes, now: float) -> None:
        """Offered on the session over ``dest`` unless ours (Section 6.10)."""
        session = self.sessions.get(dest)
        if session is not None and thumbprint(der) != self.certificates.own:
            session.offer(der, now)

    # --- routing (the relays' RoutingPort) ---------------------------------------------------
    def next_hop(self, target: bytes, hop_limit: int, path: tuple[bytes, ...],
                 now: float) -> NextHop | Refusal:
        """The routing table's decision (Section 5.3), else a route kept from relayed
        discovery answers (Section 5.2.1), with the association it goes to."""
        core = self.core
        d = core.route(target, hop_limit, path)
        if isinstance(d, Reject) and d.code is ErrorCode.NO_ROUTE:
            d = core.remote.decide(core.gateway_id, target, hop_limit, path, now) or d
        if isinstance(d, DeliverLocal):
            return NextHop(self.registration.handles.get(d.agent_id), hop_limit, path, True)
        if isinstance(d, Forward):
            dest = self.peers.get(d.next_hop)
            if dest is not None:
                return NextHop(dest, d.hop_limit, d.path)
            return Refusal(ErrorCode.NO_ROUTE, "")
        return Refusal(d.code, "")

    def resolve(self, query: DiscoveryQuery, now: float,
                requester: Handle) -> bytes | Refusal | None:
        """The best record for a ROUTE_REQUEST's QUERY that the requester may be shown
        (:meth:`resolving_policy`): held, else kept from relayed discovery answers;
        QUERY_TOO_LARGE over the discovery budget (Section 10.7)."""
        budget = self.discovery.budget
        allow = self.resolving_policy(requester)
        try:
            best = self.core.discover(query, Scope.FEDERATED, 1, now, allow,
                                      spend=(lambda: None) if budget is None else budget())
        except ProtocolError as over:
            return Refusal(over.code, over.diagnostic)
        if best:
            return best[0].record.record.agent_id
        kept = self.core.remote.answers(query_key(query, 1), now) or ()
        return next((a.record.record.agent_id for a in kept
                     if allow is None or allow(a.record.record)), None)

    def resolving_policy(self, requester: Handle) -> Callable[[CapabilityRecord], bool] | None:
        """The records a ROUTE_REQUEST's QUERY may resolve to for ``requester``: for a
        peer gateway, what a DISCOVER of its domain is shown (Section 10.6: no record
        hidden from that domain is chosen, nor named in a refusal); for an agent, any
        (the import policy is checked on the record resolved)."""
        return self.discovery_policy(requester) if requester in self.sessions else None

    def relays_waiting(self, handle: Handle) -> bool:
        """Whether relayed ROUTE_REQUESTs or TRACE_REQUESTs wait on ``handle``."""
        return any(h == handle for h, _ in self.relays)

    def start_sync(self, handle: Handle, gateway_id: bytes, domain: str) -> PeerSync:
        """Record exchange on a session just established (Section 6.5)."""
        allow = self.export_for(domain)
        sync = PeerSync(self._out, self.core,
                        SyncPeer(handle, gateway_id, domain,
                                 lambda msg, _now: self._out.send(handle, msg),
                                 allow if self.grace is None
                                 else self.grace.exportable(allow), self.pdu_limit(handle)),
                        self.txids, self.verifier, slice_clock=self.slice_clock,
                        learn_slice=self.learn_slice, work_slice=self.work_slice,
                        learn_budget=self.learn_budget)
        self.syncs[handle] = sync  # freed in slices when the session ends
        return sync

