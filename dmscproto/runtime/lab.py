"""Lab mode at a gateway (draft-dmsc-protocol-00, Section 9.4): the security hooks of a
gateway whose associations are cleartext UDP, without any authenticated peer.

Lab mode exists so that every DMSC message of a running federation can be captured
and read in clear (``dmsc decode --pcap``, the Wireshark dissector, scapy).  It is
never a default: the configuration needs ``gateway.lab = true`` *and* ``udp`` on every
listener and peer link (:mod:`.config`), the transport refuses to start without
``lab=True`` (:mod:`dmscproto.transport.udp`), and the gateway logs a WARNING at start.

With no TLS certificate, :class:`LabGuard` gives an association the identity the
protocol itself proves or claims, its *lab identity*, which stands in for the
certificate in every identity check (Section 9.4):

* a REGISTER's record must carry a valid COSE_Sign1 signature by the key its Agent ID
  derives from (BAD_SIGNATURE, Section 7.2.1), be of our domain (POLICY_DENIED), and
  have a fresh, unseen nonce (STALE_TIMESTAMP, REPLAY); the association is then bound
  to that agent, and a REGISTER of another Agent ID from it is IDENTITY_MISMATCH;
* an OPEN names the gateway (GATEWAY_ID, DOMAIN): the domain must be ours or a
  configured peer's (POLICY_DENIED), and the association is bound to that gateway;
  its UPDATEs are checked as a federated gateway's would be
  (:meth:`~dmscproto.security.federation.Federation.check_advertisement`: signature,
  which domains it may advertise), and so are the domains of its SUMMARYs;
* from an association bound to an agent, REFRESH and DEREGISTER must name it
  (AGENT_ID), and so must SOURCE_AGENT and a ROUTE_REPLY's TARGET_AGENT
  (IDENTITY_MISMATCH, :func:`~dmscproto.security.hooks.check_claimed_source`);
* an association bound to nobody is an *unregistered lab sender*: an agent of our
  domain without a name.  It may DISCOVER, ROUTE_REQUEST, ECHO_REQUEST and
  TRACE_REQUEST (what ``dmsc agent --call``, ``dmsc ping`` and ``dmsc trace`` send);
  its SOURCE_AGENT is taken as it comes (there is nothing to compare it with), it
  matches no import policy that names callers, and its REFRESH and DEREGISTER are
  IDENTITY_MISMATCH (no REGISTER proved that it is that agent).

What lab mode does NOT protect (say it wherever lab mode is offered):

* no confidentiality: every message, payload, record and token is readable on the path;
* no peer authentication: a record signature proves who *issued* the record, not who
  *sends* it.  Anyone who has seen a signed record (it travels in clear) can REGISTER
  it from another address with a fresh nonce until the record expires, and then
  receive that agent's calls; anyone can send an OPEN naming any gateway of a
  configured domain; any datagram from a bound address is taken as that peer's (UDP
  source addresses are not verified: no cookie exchange);
* no integrity of messages beyond the records' signatures: DISCOVER, ROUTE_REQUEST,
  ROUTE_REPLY payloads and UPDATE withdrawals can be forged or altered in flight;
* access tokens are off (they are bound to the TLS certificate, Section 10.3:
  ``require_tokens`` is refused) and tokens an agent sends anyway travel in clear;
  origin assertions are off (checked against the previous hop's certificate,
  ``require_origin`` is refused); certificate revocation does not apply.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from ..codec.cose import SignedRecord
from ..codec.messages import (
    Deregister,
    Message,
    Open,
    Refresh,
    Register,
    RouteRequest,
)
from ..codec.registry import ErrorCode, limit
from ..codec.values import CapabilityRecord
from ..host.pump import Association
from ..protocol.certificates import SessionCertificates
from ..protocol.machine import Handle, Refusal
from ..protocol.ports import GuardedTable
from ..security.ca import Identity, Kind, parse_identity_uri
from ..security.errors import SecurityError
from ..security.federation import Federation
from ..security.hooks import Guard, check_claimed_source, check_role
from ..security.proof import check_signature
from ..security.replay import ReplayCache

RecordFilter = Callable[[CapabilityRecord], bool]
#: The caller URI of an unregistered lab sender: no import policy's callers name it.
ANONYMOUS = ""

#: The loud line a lab gateway logs at start (module docstring, shortened).
WARNING = ("LAB MODE: cleartext UDP, no confidentiality, no peer authentication (only "
           "record signatures), no access tokens or origin assertions; never use it "
           "outside a lab (Section 9.4)")


class LabGuard(Guard):
    """The node hooks of a lab gateway (module docstring)."""

    def __init__(self, core: GuardedTable, federation: Federation,
                 replay: ReplayCache | None = None) -> None:
        if federation.domain != core.domain:
            raise ValueError("federation configuration is for another domain")
        self.core = core
        self.federation = federation
        self.replay = replay or ReplayCache()
        self.certificates = SessionCertificates()

    def transit(self, peer_domain: str, domain: str) -> bool:
        """Whether summaries and relayed answers of ``domain`` go to ``peer_domain``."""
        return self.federation.transits(peer_domain, domain)

    @staticmethod
    def identity(handle: Handle) -> Identity | None:
        """Who an association has proved to be (None: nobody yet)."""
        return handle.identity if isinstance(handle, Association) else None

    @staticmethod
    def _bindable(handle: Handle, identity: Identity) -> Association:
        """``handle``, if it is bound to nobody or to ``identity``'s entity already."""
        if not isinstance(handle, Association):
            raise SecurityError(ErrorCode.UNTRUSTED_CERTIFICATE, "not a lab association")
        bound = handle.identity
        if bound is not None and (bound.kind, bound.entity_id) != (identity.kind,
                                                                  identity.entity_id):
            raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                                f"this association is bound to {bound.uri}")
        return handle

    # --- admit -----------------------------------------------------------------------
    def admit(self, source: Handle, msg: Message, now: float) -> Refusal | None:
        try:
            self.check(source, msg, now)
        except SecurityError as exc:
            return exc.refusal()
        return None

    def check(self, source: Handle, msg: Message, now: float) -> None:
        """:meth:`admit`, raising :class:`SecurityError` with the reason."""
        if isinstance(msg, Register):
            self._register(source, msg, now)
            return
        identity = self.identity(source)
        if identity is not None:
            check_role(identity, msg)
        if isinstance(msg, Open):  # accept_open binds it
            return
        if identity is None:  # an unregistered lab sender (module docstring)
            if isinstance(msg, Refresh | Deregister):
                raise SecurityError(ErrorCode.IDENTITY_MISMATCH, "no REGISTER from this "
                                    "association proved that it is that agent")
            if isinstance(msg, RouteRequest):
                self._check_call(ANONYMOUS, msg)
            return
        if identity.kind is Kind.GATEWAY:
            if isinstance(msg, Refresh | Deregister):
                raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                                    f"{identity.uri} is a gateway, not an agent")
            if identity.domain != self.core.domain:
                self.federation.peer(identity.domain)
            return
        if isinstance(msg, Refresh | Deregister):
            if msg.agent_id != identity.entity_id:
                raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                                    "AGENT_ID is not the agent this association registered")
            self.replay.accept(identity.entity_id, msg.nonce, msg.timestamp, int(now * 1000))
            return
        check_claimed_source(msg, identity)
        if isinstance(msg, RouteRequest):
            self._check_call(identity.uri, msg)

    def _check_call(self, caller_uri: str, msg: RouteRequest) -> None:
        """The import policy for a call to a target named by Agent ID (POLICY_DENIED)."""
        target = self._target(msg)
        if target is not None:
            self.federation.check_call(caller_uri, target)

    def _register(self, source: Handle, msg: Register, now: float) -> None:
        """The REGISTER proof of lab mode: the record's signature and Agent ID, our
        domain, a fresh nonce; then the association is that agent."""
        check_signature(msg.record)
        rec = msg.record.record
        if rec.domain != self.core.domain:
            raise SecurityError(ErrorCode.POLICY_DENIED, f"{rec.agent_uri} is not of this "
                                "domain")
        try:
            domain, name = parse_identity_uri(rec.agent_uri)
        except ValueError as exc:
            raise SecurityError(ErrorCode.IDENTITY_MISMATCH, str(exc)) from None
        if domain != rec.domain:
            raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                                "the record's agent URI is not of the record's domain")
        identity = Identity(domain, name, Kind.AGENT, rec.agent_id)
        assoc = self._bindable(source, identity)
        self.replay.accept(identity.entity_id, msg.nonce, msg.timestamp, int(now * 1000))
        assoc.identity = identity

    def _target(self, msg: RouteRequest) -> CapabilityRecord | None:
        if msg.target_agent is None:
            return None
        held = self.core.get(msg.target_agent)
        return None if held is None else held.signed.record

    # --- records, OPEN, forwarding, export ----------------------------------------------
    def verify_record(self, source: Handle, signed: SignedRecord, now: float
                      ) -> Refusal | None:
        """A REGISTER's record was checked by :meth:`admit` (which bound the association);
        a peer's UPDATE record as a federated gateway's (signature, advertisement
        rights)."""
        identity = self.identity(source)
        if identity is None or identity.kind is not Kind.GATEWAY:
            return None
        try:
            self.federation.check_advertisement(signed, identity, now)
        except SecurityError as exc:
            return exc.refusal()
        return None

    def accept_open(self, source: Handle, msg: Open) -> Refusal | None:
        """OPEN: of our domain or a configured peer's; binds the association to the
        gateway it names (unproven: module docstring)."""
        try:
            if msg.domain != self.core.domain:
                self.federation.peer(msg.domain)
            identity = Identity(msg.domain, f"lab-{msg.gateway_id.hex()[:16]}", Kind.GATEWAY,
                                msg.gateway_id)
            self._bindable(source, identity).identity = identity
        except SecurityError as exc:
            return exc.refusal()
        return None

    def outgoing(self, upstream: Handle, msg: RouteRequest, incoming_txid: int,
                 now: float) -> RouteRequest | Refusal:
        """A ROUTE_REQUEST forwarded to a peer: the import policy for a target resolved
        from a query; no origin assertion (lab mode has none), the agent's token, if any,
        is not passed on."""
        identity = self.identity(upstream)
        if identity is not None and identity.kind is not Kind.AGENT:
            return msg
        try:
            self._check_call(ANONYMOUS if identity is None else identity.uri, msg)
        except SecurityError as exc:
            return exc.refusal()
        return msg if msg.token is None else replace(msg, token=None)

    def export_for(self, domain: str) -> RecordFilter | None:
        """Which records a peer of ``domain`` is shown (None: all, our own domain)."""
        return None if domain == self.core.domain else self.federation.export_filter(domain)

    def accept_certificate(self, source: Handle, der: bytes, now: float) -> Refusal | None:
        """CERTIFICATE: refused (lab mode has no origin assertions to name one)."""
        return Refusal(ErrorCode.POLICY_DENIED, "lab mode: no origin assertions")

    def summary_check(self, source: Handle, domain: str) -> Refusal | None:
        """A SUMMARY from a bound gateway: the domains it may advertise, as for records."""
        identity = self.identity(source)
        if identity is None or identity.kind is not Kind.GATEWAY:
            return Refusal(ErrorCode.UNEXPECTED_MESSAGE, "SUMMARY from no gateway")
        try:
            self.federation.check_domain(identity, domain)
        except SecurityError as exc:
            return exc.refusal()
        return None

    def discovery_policy(self, source: Handle) -> RecordFilter | None:
        """A DISCOVER from a gateway sees what we export to its domain; an agent's
        (registered or not), all."""
        identity = self.identity(source)
        if identity is not None and identity.kind is Kind.GATEWAY:
            return self.export_for(identity.domain)
        return None


class LabAssociations:
    """Bounds and expiry of a lab gateway's associations (Sections 9.4 and 10.7).  An
    association bound to nobody (an unregistered lab sender, or a source address that
    sent garbage) is closed after ``unbound_timeout`` without a message
    (LAB_UNBOUND_TIMEOUT, longer than ROUTE_TIMEOUT so that no call in flight loses its
    association), and at most ``max_unbound`` of them are kept (LAB_MAX_UNBOUND), the
    least recently heard closed first.  Closing forgets the source address; its next
    datagram opens a new association.  The transport bounds the source addresses it
    associates in all (LAB_MAX_PEERS, :class:`~dmscproto.transport.udp.CleartextEndpoint`)."""

    def __init__(self, *, max_unbound: int = int(limit("LAB_MAX_UNBOUND")),
                 unbound_timeout: float = limit("LAB_UNBOUND_TIMEOUT")) -> None:
        self.max_unbound = max_unbound
        self.unbound_timeout = unbound_timeout
        #: Associations not known to be bound, by when they were last heard, oldest first.
        self._unbound: OrderedDict[Association, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._unbound)

    def heard(self, assoc: Association, now: float) -> list[Association]:
        """A message on ``assoc`` (new or not); returns the associations to close now."""
        if assoc.identity is None:
            self._unbound[assoc] = now
            self._unbound.move_to_end(assoc)
        else:
            self._unbound.pop(assoc, None)
        return self.expired(now)

    def closed(self, assoc: Association) -> None:
        self._unbound.pop(assoc, None)

    def expired(self, now: float) -> list[Association]:
        """Forget the associations bound meanwhile; return (and forget) those unbound and
        silent for too long, and the least recently heard beyond ``max_unbound``."""
        for assoc in [a for a in self._unbound if a.identity is not None]:
            del self._unbound[assoc]
        out: list[Association] = []
        while self._unbound:
            assoc, heard = next(iter(self._unbound.items()))
            if now < heard + self.unbound_timeout and len(self._unbound) <= self.max_unbound:
                break
            del self._unbound[assoc]
            out.append(assoc)
        return out

    def next_expiry(self) -> float | None:
        """When :meth:`expired` next has something to close (None: nothing unbound)."""
        first = next(iter(self._unbound.values()), None)
        return None if first is None else first + self.unbound_timeout
