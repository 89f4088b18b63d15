"""The security hooks of a gateway node (draft-dmsc-protocol-00, Section 10): one object
that gives :class:`~dmscproto.gateway.node.GatewayNode` its ``admit``, ``verifier``,
``accept_open``, ``outgoing``, ``export_for`` and ``discovery_policy`` arguments
(:meth:`GatewayGuard.node_hooks`), built from a :class:`~.proof.RequestVerifier` and, for
a federated gateway, a :class:`~.federation.Federation`.  Every refusal is a
:class:`~dmscproto.protocol.machine.Refusal` carrying the :class:`SecurityError`'s code
and reason, which the node sends in STATUS and DIAGNOSTIC.

``peer_of(handle)`` tells who is behind an association: anything with ``identity`` and
``certificate`` (the QUIC transport's :class:`~dmscproto.transport.quic.PeerInfo`, or a
:class:`~.ca.Credential` in tests); ``None`` for an unauthenticated one, whose every
request is refused with UNTRUSTED_CERTIFICATE.  The peer's certificate is checked again
on every message (cached until its notAfter, the CRL's nextUpdate or the next CRL
installed; :func:`~.proof.check_held_certificate`), so an association outliving its
certificate or its revocation can do nothing more (CERTIFICATE_EXPIRED,
CERTIFICATE_REVOKED).

:meth:`GatewayGuard.admit` checks, before the node dispatches a message:

* from an agent: that it belongs to our domain (POLICY_DENIED); REGISTER, REFRESH and
  DEREGISTER with :meth:`RequestVerifier.check`; in every other message that names its
  sender (SOURCE_AGENT of DISCOVER and ROUTE_REQUEST, TARGET_AGENT of its ROUTE_REPLY),
  that the name is the agent itself (IDENTITY_MISMATCH, :func:`check_claimed_source`);
  DISCOVER with a token for ``discover``; ROUTE_REQUEST with a token for ``route`` on
  the target's skills (or the query's), and the import policy for a remote target
  (POLICY_DENIED);
* from a gateway: that its domain is ours or federated (POLICY_DENIED); agent requests
  are refused (IDENTITY_MISMATCH); the certificate a ROUTE_REQUEST's origin assertion
  names (``x5t#S256``) must be held on the session it came over, the peer's own or one
  it sent with CERTIFICATE (CERTIFICATE_UNKNOWN, Section 6.10); a ROUTE_REQUEST for an
  agent registered here must carry a valid origin assertion when ``require_origin`` is
  set.

:meth:`GatewayGuard.accept_certificate` is the check a peer's CERTIFICATE passes before
its session keeps it in :attr:`GatewayGuard.certificates` (a gateway of this domain or a
federated one; the certificate checked as an origin assertion's,
:meth:`~.federation.Federation.check_peer_certificate`).

:meth:`GatewayGuard.verify_record` is the node's record check: each record of a peer's
UPDATE must pass :meth:`Federation.check_advertisement` (signature, and whether that
peer may advertise that record's domain: record poisoning, Section 10.5); a refused
record is skipped, the rest of the UPDATE is learned.  An agent's REGISTER record was
checked in full by :meth:`GatewayGuard.admit` (:meth:`RequestVerifier.register`).

:meth:`GatewayGuard.outgoing` is what the origin gateway does to a ROUTE_REQUEST from
one of its agents before forwarding it to a peer: the import policy and the agent's
route scope are checked against the resolved target (a QUERY is resolved only after
admission), and the agent's token, bound to the agent's certificate and useless to the
next hop, is replaced by an origin assertion (:func:`~.origin.sign_origin`) carrying
the route scope the agent was granted and naming our certificate by thumbprint.  Relayed
requests pass unchanged; one from a gateway of another domain only towards a target that
we export to that domain (transit, :meth:`~.federation.Federation.check_relay`).  Either
goes with the certificate its assertion names (:class:`~..protocol.routing.Outbound`),
which the relay sends a next hop that answers CERTIFICATE_UNKNOWN.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..codec.cose import SignedRecord
from ..codec.messages import (
    Deregister,
    Discover,
    Message,
    Open,
    Refresh,
    Register,
    RouteRequest,
)
from ..codec.registry import GUARD_MAX_PENDING, ErrorCode
from ..codec.values import CapabilityRecord
from ..protocol.certificates import SessionCertificates, thumbprint
from ..protocol.machine import Refusal
from ..protocol.ports import GuardedTable
from ..protocol.routing import Outbound
from .ca import Credential, Identity, Kind
from .errors import SecurityError
from .federation import Federation, check_open_identity
from .hooks import Authenticated, Guard, Handle, RecordFilter, check_claimed_source, check_role
from .origin import origin_thumbprint, sign_origin
from .proof import RequestVerifier, check_held_certificate
from .revocation import RevocationTrustStore
from .tokens import AccessToken, Operation, ScopeSet

_AGENT_REQUESTS = (Register, Refresh, Deregister)
#: Read for every message admitted, bound once: an Enum member read is ~60 ns on 3.11 (timeit).
_OPERATOR, _GATEWAY = Kind.OPERATOR, Kind.GATEWAY
_ROUTE = Operation.ROUTE  # an enum member read through its class costs ~120 ns (3.11)


class GatewayGuard(Guard):
    """Admission, OPEN, export and discovery policy of one gateway (module docstring)."""

    def __init__(self, core: GuardedTable, verifier: RequestVerifier,
                 peer_of: Callable[[Any], Authenticated | None], *,
                 federation: Federation | None = None, credential: Credential | None = None,
                 require_origin: bool = False) -> None:
        if federation is not None and federation.domain != core.domain:
            raise ValueError("federation configuration is for another domain")
        if require_origin and federation is None:
            raise ValueError("origin assertions need a federation configuration")
        self.core = core
        self.verifier = verifier
        self.peer_of = peer_of
        self.federation = federation
        self.credential = credential
        self.require_origin = require_origin
        # scopes verified by admit() for discovery_policy() and outgoing(), which the
        # node calls right after; bounded, oldest first out (a refused request leaves one)
        self._discover_scope: OrderedDict[object, ScopeSet] = OrderedDict()
        self._route_scope: OrderedDict[object, ScopeSet] = OrderedDict()
        #: id(certificate) -> (certificate, CRL generation, valid until, identity)
        self._valid: dict[int, tuple[x509.Certificate, int, float, Identity]] = {}
        self.certificates = SessionCertificates(own=None if credential is None else thumbprint(
            credential.certificate.public_bytes(serialization.Encoding.DER)))

    # --- GatewayNode(admit=...) -------------------------------------------------------------
    def admit(self, source: Handle, msg: Message, now: float) -> Refusal | None:
        try:
            self.check(source, msg, now)
        except SecurityError as exc:
            return exc.refusal()
        return None

    def check(self, source: Handle, msg: Message, now: float) -> None:
        """:meth:`admit`, raising :class:`SecurityError` with the reason."""
        peer_of = self.peer_of  # a function held: a method load of it is not specialised
        peer = peer_of(source)
        if peer is None:
            raise SecurityError(ErrorCode.UNTRUSTED_CERTIFICATE,
                                "the association is not authenticated")
        identity = self._still_valid(peer.certificate, now)
        if identity.kind is _OPERATOR:
            raise SecurityError(ErrorCode.POLICY_DENIED, f"{identity.uri} is an operator "
                                "certificate: the management interface only")
        if identity.kind is _GATEWAY:
            self._from_gateway(source, peer, identity, msg, now)
            return
        if self.federation is not None:
            self.federation.check_client(identity)
        elif identity.domain != self.core.domain:
            raise SecurityError(ErrorCode.POLICY_DENIED, f"{identity.uri} is not of this domain")
        check_role(identity, msg)
        if isinstance(msg, _AGENT_REQUESTS):
            try:
                self.verifier.check(msg, peer.certificate, now)
            except SecurityError as exc:
                if not (exc.code is ErrorCode.REPLAY and isinstance(msg, Register)
                        and self._committed(msg.record, now)):
                    raise
            return
        check_claimed_source(msg, identity)
        if isinstance(msg, Discover):
            token = self.verifier.authorize(msg.token, peer.certificate, now,
                                            Operation.DISCOVER)
            self._remember(self._discover_scope, source, token)
        elif isinstance(msg, RouteRequest):
            self._route(source, peer, msg, now)

    def _committed(self, signed: SignedRecord, now: float) -> bool:
        """Whether ``signed`` is the record registered here now, octet for octet: a
        REGISTER sent again with its nonce (the agent did not get the answer) is then
        answered as the first was, not REPLAY; its record and the sender's certificate
        have been checked (Section 5.1), and the registry does not change."""
        held = self.core.get(signed.record.agent_id)
        return held is not None and held.origin is None and held.expires_at > now \
            and held.signed.payload == signed.payload

    def _still_valid(self, cert: x509.Certificate, now: float) -> Identity:
        """The peer certificate checked again (it may have expired or been revoked since
        the handshake), with the verdict cached until the certificate's notAfter or the
        next CRL installed, whichever comes first.  This runs for every message, so the
        cache is keyed by the certificate object the association holds (kept alive in
        the entry, so its id cannot be reused), not by a per-message fingerprint."""
        trust = self.verifier.trust
        revocation = trust.revocation if isinstance(trust, RevocationTrustStore) else None
        generation = 0 if revocation is None else revocation.generation
        cached = self._valid.get(id(cert))
        if (cached is not None and cached[0] is cert and cached[1] == generation
                and now <= cached[2]):
            return cached[3]
        identity = check_held_certificate(trust, cert, now, usage=None)
        until = cert.not_valid_after_utc.timestamp()
        next_update = None if revocation is None else revocation.next_update()
        if next_update is not None:
            until = min(until, next_update.timestamp())
        if len(self._valid) >= GUARD_MAX_PENDING:
            self._valid.clear()
        self._valid[id(cert)] = (cert, generation, until, identity)
        return identity

    def _from_gateway(self, source: Handle, peer: Authenticated, identity: Identity,
                      msg: Message, now: float) -> None:
        if isinstance(msg, _AGENT_REQUESTS):
            raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                                f"{identity.uri} is a gateway, not an agent")
        if identity.domain == self.core.domain:
            pass
        elif self.federation is None:
            raise SecurityError(ErrorCode.POLICY_DENIED,
                                f"{identity.domain} is not a federated domain")
        else:
            self.federation.peer(identity.domain)
        if not isinstance(msg, RouteRequest):
            return
        cert = self._origin_certificate(source, peer, msg.token)  # delivered or relayed
        if self._delivered_here(msg):
            assert self.federation is not None and msg.target_agent is not None
            if msg.token is None:
                raise SecurityError(ErrorCode.INVALID_TOKEN,
                                    "a relayed ROUTE_REQUEST needs an origin assertion")
            held = self.core.get(msg.target_agent)
            assert held is not None
            self.federation.verify_origin(msg.token, msg, held.signed.record, now,
                                          lambda _key: cert, via=identity.domain)

    def _delivered_here(self, msg: RouteRequest) -> bool:
        """Whether a gateway's ROUTE_REQUEST is for an agent registered here, whose
        origin assertion is then required (``require_origin``)."""
        if not self.require_origin or not msg.target_agent:
            return False
        held = self.core.get(msg.target_agent)
        return held is not None and held.origin is None

    def _origin_certificate(self, source: Handle, peer: Authenticated,
                            token: bytes | None) -> x509.Certificate | None:
        """The certificate an origin assertion in ``token`` names, held on the session
        over ``source``: the peer's own (its (D)TLS handshake's) or one it sent with
        CERTIFICATE (Section 6.10); CERTIFICATE_UNKNOWN if neither.  None without an
        origin assertion.  A copy: the checks' parse caches do not stay on the
        association's certificate (as :func:`~.proof.check_held_certificate`)."""
        key = None if token is None else origin_thumbprint(token)
        if key is None:
            return None
        own = peer.certificate.public_bytes(serialization.Encoding.DER)
        der = own if thumbprint(own) == key else self.certificates.get(source, key)
        if der is None:
            raise SecurityError(ErrorCode.CERTIFICATE_UNKNOWN,
                                "the origin assertion's certificate is not held on this "
                                "session: send it with CERTIFICATE")
        return x509.load_der_x509_certificate(der)

    # --- GatewayNode(accept_certificate=...) -------------------------------------------------
    def accept_certificate(self, source: Handle, der: bytes, now: float) -> Refusal | None:
        """A peer's CERTIFICATE (Section 6.10; its sender, a gateway of our domain or a
        federated one, was admitted by :meth:`admit`): a certificate an origin assertion
        may name."""
        try:
            if self.federation is None:
                raise SecurityError(ErrorCode.POLICY_DENIED, "no federation: origin "
                                    "assertions are not accepted here")
            self.federation.check_peer_certificate(der, now)
        except SecurityError as exc:
            return exc.refusal()
        return None

    # --- GatewayNode(verifier=...) ----------------------------------------------------------
    def verify_record(self, source: Handle, signed: SignedRecord, now: float
                      ) -> Refusal | None:
        """A record to store (REGISTER, checked by :meth:`admit`) or learn (UPDATE)."""
        peer = self.peer_of(source)
        if peer is None:
            return Refusal(ErrorCode.UNTRUSTED_CERTIFICATE,
                           "the association is not authenticated")
        if peer.identity.kind is not Kind.GATEWAY:
            return None
        try:
            self._check_learned(signed, peer.identity, now)
        except SecurityError as exc:
            return exc.refusal()
        return None

    def _check_learned(self, signed: SignedRecord, peer: Identity, now: float) -> None:
        if self.federation is not None:
            self.federation.check_advertisement(signed, peer, now)
        elif signed.record.domain != self.core.domain:
            raise SecurityError(ErrorCode.POLICY_DENIED,
                                f"records of {signed.record.domain} are not accepted here")

    def _route(self, source: Handle, peer: Authenticated, msg: RouteRequest,
               now: float) -> None:
        identity = peer.identity
        target = self._target(msg)
        token = None
        # the target's capabilities listed only for a token verifier to check them against
        # (authorize is None without one): ~0.3 us a routed call (timeit)
        if self.verifier.tokens is not None:
            caps = [s.id for s in target.skills] if target is not None else \
                list(msg.query.skills) if msg.query is not None else []
            token = self.verifier.authorize(msg.token, peer.certificate, now, _ROUTE, caps)
        # our own domain's target is past the import policy (check_call's first test,
        # made here: no call, and no identity.uri made, for a call within the domain)
        if target is not None and self.federation is not None \
                and target.domain != self.core.domain:
            self.federation.check_call(identity.uri, target)
        self._remember(self._route_scope, (source, msg.transaction_id), token)

    def _target(self, msg: RouteRequest) -> CapabilityRecord | None:
        """The target's record: held, or from a relayed DISCOVER answer."""
        if msg.target_agent is None:
            return None
        held = self.core.domain_record(msg.target_agent)  # no StoredRecord made per call
        if held is not None:
            return held
        relayed = self.core.remote.get(msg.target_agent)
        return None if relayed is None else relayed.record.record

    @staticmethod
    def _remember(table: OrderedDict[object, ScopeSet], key: object,
                  token: AccessToken | None) -> None:
        table.pop(key, None)
        if token is not None:
            table[key] = token.scope
            if len(table) > GUARD_MAX_PENDING:
                table.popitem(last=False)

    # --- GatewayNode(accept_open=...) --------------------------------------------------------
    def accept_open(self, source: Handle, msg: Open) -> Refusal | None:
        """OPEN: the sender's certificate is the gateway it claims to be, of our domain or
        a federated one."""
        peer = self.peer_of(source)
        try:
            if peer is None:
                raise SecurityError(ErrorCode.UNTRUSTED_CERTIFICATE,
                                    "the association is not authenticated")
            if self.federation is not None:
                self.federation.check_open(msg, peer.identity)
            else:
                check_open_identity(msg, peer.identity)
                if peer.identity.domain != self.core.domain:
                    raise SecurityError(ErrorCode.POLICY_DENIED,
                                        f"{peer.identity.domain} is not a federated domain")
        except SecurityError as exc:
            return exc.refusal()
        return None

    # --- GatewayNode(summary_check=..., transit=...): capability summaries -------------------
    def summary_check(self, source: Handle, domain: str) -> Refusal | None:
        """May the gateway behind ``source`` advertise summaries of ``domain``?  As for
        its records (Section 10.5)."""
        peer = self.peer_of(source)
        try:
            if peer is None:
                raise SecurityError(ErrorCode.UNTRUSTED_CERTIFICATE,
                                    "the association is not authenticated")
            if self.federation is not None:
                self.federation.check_domain(peer.identity, domain)
            elif domain != self.core.domain:
                raise SecurityError(ErrorCode.POLICY_DENIED,
                                    f"records of {domain} are not accepted here")
        except SecurityError as exc:
            return exc.refusal()
        return None

    def transit(self, peer_domain: str, domain: str) -> bool:
        """Whether summaries and relayed answers of ``domain`` go to ``peer_domain``."""
        if self.federation is None:
            return peer_domain == self.core.domain
        return self.federation.transits(peer_domain, domain)

    # --- GatewayNode(export_for=..., discovery_policy=...) -----------------------------------
    def export_for(self, domain: str) -> RecordFilter | None:
        """Which records a peer of ``domain`` is shown (None: all, our own domain)."""
        if domain == self.core.domain:
            return None
        if self.federation is None:
            return lambda _record: False
        return self.federation.export_filter(domain)

    def discovery_policy(self, source: Handle) -> RecordFilter | None:
        """Which records a DISCOVER from ``source`` may return: the export policy for a
        gateway of another domain; for an agent, what its discover scope shows."""
        peer = self.peer_of(source)
        if peer is None:
            return lambda _record: False
        if peer.identity.kind is Kind.GATEWAY:
            return self.export_for(peer.identity.domain)
        scope = self._discover_scope.pop(source, None)
        if scope is None:
            return None
        return lambda record: scope.visible(s.id for s in record.skills)

    # --- GatewayNode(outgoing=...): the origin gateway's forwarding --------------------------
    def outgoing(self, upstream: Handle, msg: RouteRequest, incoming_txid: int,
                 now: float) -> RouteRequest | Outbound | Refusal:
        """The ROUTE_REQUEST to forward to a peer (module docstring): from one of our
        agents, checked against the resolved target and with its token replaced by an
        origin assertion; relayed ones unchanged, where transit allows them; either with
        the certificate the assertion names."""
        peer = self.peer_of(upstream)
        scope = self._route_scope.pop((upstream, incoming_txid), None)
        if peer is None or msg.target_agent is None:
            return msg
        if peer.identity.kind is not Kind.AGENT:
            return self._relayed(upstream, peer, msg)
        if self.credential is None:
            raise ValueError("forwarding for agents needs the gateway's credential")
        target = self._target(msg)
        if target is None:  # a route without a record: the node never forwards one
            return Refusal(ErrorCode.NO_ROUTE, "the target's record is not held here")
        granted = ScopeSet.parse(Operation.ROUTE.value)
        if scope is not None:  # only the route grant travels on
            granted = ScopeSet({Operation.ROUTE: scope.grants.get(Operation.ROUTE)})
        held = self.core.get(msg.target_agent)
        try:
            if self.federation is not None:
                self.federation.check_call(peer.identity.uri, target,
                                           () if held is None else held.path)
            if not granted.allows(Operation.ROUTE, (s.id for s in target.skills)):
                raise SecurityError(ErrorCode.INSUFFICIENT_SCOPE,
                                    f"route scope {str(granted)!r} does not reach "
                                    f"{target.agent_uri}")
        except SecurityError as exc:
            return exc.refusal()
        token = sign_origin(self.credential, msg, source_uri=peer.identity.uri,
                            target_agent=msg.target_agent, target_domain=target.domain,
                            scope=granted, now=now)
        return Outbound(replace(msg, token=token), self.credential.certificate.public_bytes(
            serialization.Encoding.DER))

    def _relayed(self, source: Handle, upstream: Authenticated, msg: RouteRequest
                 ) -> RouteRequest | Outbound | Refusal:
        """A gateway's ROUTE_REQUEST we forward on: unchanged, if a request from its
        domain may transit us towards the target (:meth:`Federation.check_relay`), with
        the certificate its origin assertion names (held on the session it came over:
        :meth:`admit` made sure)."""
        target = self._target(msg)
        domain = upstream.identity.domain
        try:
            if domain != self.core.domain and self.federation is not None \
                    and target is not None:
                self.federation.check_relay(domain, target)
            cert = self._origin_certificate(source, upstream, msg.token)
        except SecurityError as exc:
            return exc.refusal()
        return msg if cert is None else \
            Outbound(msg, cert.public_bytes(serialization.Encoding.DER))
