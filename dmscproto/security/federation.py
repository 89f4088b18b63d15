"""Cross-domain trust (draft-dmsc-protocol-00, Sections 6.4, 7.4, 10.5 and 10.6).

A :class:`Federation` is one gateway's view of the domains it peers with: for each peer
domain its trust anchor, its export policy (which of our records it is shown, Section
7.4, :func:`dmscproto.protocol.policy.exportable`) and its import policy (which record
domains it may advertise to us, and which of its capabilities our agents may call).
It answers the gateway's security questions:

* :meth:`Federation.trust_store`: the anchors for TLS (own domain and peer domains,
  each name-constrained to its own domain), with revocation.
* :meth:`Federation.check_open`: an OPEN's GATEWAY_ID and DOMAIN are the peer
  certificate's, the peer is a gateway (IDENTITY_MISMATCH) of a federated domain
  (POLICY_DENIED).  :meth:`Federation.check_client` refuses agents of other domains.
* :meth:`Federation.export_filter`: the ``allow`` for discovery answers, UPDATE,
  DIGEST and TRACE towards a peer domain (the transit rule, Section 6.3): our own
  domain's records under the export policy; another domain's only to a peer whose
  ``transit`` names it (``True``: every domain but the peer's own; a peer's own records
  go back to it, for its gateways that reach each other only through us, only when
  named explicitly).
* :meth:`Federation.check_advertisement`: a learned record's signature (BAD_SIGNATURE)
  and whether the advertising peer may speak for the record's domain (POLICY_DENIED):
  the domains of its import policy (our own domain only if listed there: a cluster of
  our gateways joined through that domain), or another domain of the trust bundle
  advertised by a peer domain of :attr:`TransitPolicy.via`; an x5chain, if present,
  must chain to the record domain's anchor (record poisoning, Section 10.5).
* :meth:`Federation.check_call`: the import policy for a local agent calling a remote
  one (POLICY_DENIED); for a domain of the trust bundle that we do not peer with, the
  :class:`TransitPolicy`'s import policy and its path limit.
* :meth:`Federation.check_relay`: a gateway of another domain's ROUTE_REQUEST that we
  relay (we are a transit domain) must target a record we export to that domain.
* Transit trust (Section 10.6): a :class:`TransitPolicy` names a trust bundle of
  remote domains (their anchors) that we may call and be called by without peering,
  the peer domains they may be reached through, the longest path and what they see
  and may call.
* Origin assertions (:func:`~.origin.sign_origin`, :meth:`Federation.verify_origin`): a
  forwarded ROUTE_REQUEST carries, in ACCESS_TOKEN, a JWT signed by the origin gateway
  stating which agent sent it to which target with which route scope, bound to the
  payload hash.  It names the origin gateway's certificate by its SHA-256 thumbprint
  (``x5t#S256``), which each gateway resolves among the certificates of the peer session
  the request came over: the peer's own, or one the peer sent with CERTIFICATE
  (Section 6.10; :meth:`Federation.check_peer_certificate` is the check a CERTIFICATE
  passes before it is kept).  The gateway that delivers checks the assertion against
  the origin domain's anchor, its own export policy towards that domain, the scope and
  a replay cache, so a cross-domain call proves the origin's authorization.
"""

from __future__ import annotations

import hashlib
import ssl
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from ..codec.cose import SignedRecord
from ..codec.messages import Open, RouteRequest
from ..codec.registry import ErrorCode
from ..codec.values import CapabilityRecord, ExportPolicy
from ..protocol.policy import exportable
from .ca import Identity, Kind, anchor_domains, parse_identity_uri
from .errors import SecurityError
from .origin import ORIGIN_LIFETIME, OriginClaims, origin_thumbprint, payload_hash
from .proof import check_certificate, check_signature, x5chain
from .replay import ReplayCache
from .revocation import CrlFeed, RevocationChecker, RevocationTrustStore
from .tokens import (
    LEEWAY,
    Operation,
    ScopeSet,
    audiences,
    b64url,
    check_times,
    gateway_audience,
    verify_jwt,
)

#: Wildcard in an import policy's capabilities: every capability.
ANY = "*"
#: Read for every message from an agent, bound once: an Enum member read is ~60 ns on 3.11 (timeit).
_AGENT = Kind.AGENT


def _denied(reason: str) -> SecurityError:
    return SecurityError(ErrorCode.POLICY_DENIED, reason)


@dataclass(frozen=True, slots=True)
class ImportPolicy:
    """What we take from a peer domain: the record domains it may advertise (default:
    its own), the capabilities (skill ids, or ``*``) our agents may call there, and
    which of our agents may (empty: all)."""

    domains: tuple[str, ...]
    capabilities: tuple[str, ...] = ()
    callers: tuple[str, ...] = ()

    def allows_call(self, caller_uri: str, target: CapabilityRecord) -> bool:
        if self.callers and caller_uri not in self.callers:
            return False
        if ANY in self.capabilities:
            return True
        return not {s.id for s in target.skills}.isdisjoint(self.capabilities)


@dataclass(frozen=True, slots=True)
class PeerDomain:
    """One federated domain (module docstring).  ``transit``: the other domains whose
    records we re-advertise to it (``True``: all but its own)."""

    domain: str
    anchor: x509.Certificate
    export: ExportPolicy
    imports: ImportPolicy
    transit: bool | tuple[str, ...] = False

    def __post_init__(self) -> None:
        if anchor_domains(self.anchor) != {self.domain}:
            raise ValueError(f"trust anchor of {self.domain} is not that domain's authority")

    def transits(self, record_domain: str) -> bool:
        """Whether records of ``record_domain`` (not ours) are re-advertised to it."""
        if isinstance(self.transit, bool):
            return self.transit and record_domain != self.domain
        return record_domain in self.transit or (
            ANY in self.transit and record_domain != self.domain)


#: Default most gateway ids on the path of a record or call of a remote domain.
DEFAULT_MAX_PATH = 16


@dataclass(frozen=True, slots=True)
class TransitPolicy:
    """Transit trust (module docstring, Section 10.6): the anchors of remote domains
    (the trust bundle), the peer domains they may be reached through (empty: any peer
    domain), the most gateways on the path of their records and calls, what they are
    shown (default: nothing) and what our agents may call there (default: nothing)."""

    bundle: tuple[x509.Certificate, ...] = ()
    via: tuple[str, ...] = ()
    max_path: int = DEFAULT_MAX_PATH
    export: ExportPolicy | None = None
    imports: ImportPolicy = ImportPolicy(())

    def domains(self) -> set[str]:
        """The remote domains the bundle's anchors are authorities of."""
        return {d for a in self.bundle for d in anchor_domains(a)}

    def through(self, peer_domain: str) -> bool:
        """Whether remote domains may be reached through ``peer_domain``."""
        return not self.via or peer_domain in self.via


def check_open_identity(msg: Open, peer: Identity) -> None:
    """OPEN's GATEWAY_ID and DOMAIN are those of the peer's certificate, which names a
    gateway (IDENTITY_MISMATCH, Section 6.4)."""
    if peer.kind is not Kind.GATEWAY:
        raise SecurityError(ErrorCode.IDENTITY_MISMATCH, f"{peer.uri} is not a gateway")
    if msg.gateway_id != peer.entity_id or msg.domain != peer.domain:
        raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                            f"OPEN names {msg.domain} {msg.gateway_id.hex()}, the "
                            f"certificate {peer.uri} {peer.entity_id.hex()}")


class Federation:
    """One gateway's federation configuration (module docstring)."""

    def __init__(self, domain: str, anchor: x509.Certificate, peers: Iterable[PeerDomain], *,
                 revocation: RevocationChecker | None = None,
                 replay: ReplayCache | None = None,
                 crl_sources: Iterable[str] = (),
                 transit: TransitPolicy = TransitPolicy()) -> None:
        if anchor_domains(anchor) != {domain}:
            raise ValueError(f"trust anchor is not the authority of {domain}")
        self.domain = domain
        self.anchor = anchor
        #: How an advertised record's signature is checked (a gateway process may
        #: check them ahead, :class:`~.proof.SignaturePrecheck`).
        self.check_signature: Callable[[SignedRecord], None] = check_signature
        self.peers = {p.domain: p for p in peers}
        if domain in self.peers:
            raise ValueError("a domain does not federate with itself")
        self.transit = transit
        #: Other domains of the trust bundle: their records are accepted in transit.
        self.bundled = transit.domains() - {domain}
        #: Those we do not peer with (reached only in transit).
        self.remote = self.bundled - set(self.peers)
        anchors = [anchor, *(p.anchor for p in self.peers.values())]
        remote = [a for a in transit.bundle if anchor_domains(a) <= self.remote]
        revocation = revocation or RevocationChecker([*anchors, *remote])
        # TLS admits our own and peer domains only; origin assertions and x5chains may
        # also come from the remote domains of the bundle
        self._trust = RevocationTrustStore(anchors, revocation)
        self._origin_trust = RevocationTrustStore([*anchors, *remote], revocation)
        #: Where the CRLs of our own and the peer domains come from (files, URLs).
        self.crl_sources = tuple(crl_sources)
        # keyed by origin gateway, which speaks for many agents: no per-entity bound
        self._replay = replay or ReplayCache(window_ms=(ORIGIN_LIFETIME + LEEWAY) * 1000,
                                             per_agent=1_000_000)

    # --- configuration --------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Federation:
        """Read a TOML federation file (paths in it are relative to the file)::

            domain = "a.example"
            anchor = "ca.pem"
            crl = "crl.pem"                  # our CRL: a file or the authority's URL
            [[peers]]
            domain = "b.example"
            anchor = "b-ca.pem"
            crl = "https://authority.b.example:8443/crl"
            transit = false                  # other domains' records re-exported to it:
                                             # true (all but its own) or a list
            [peers.export]                   # absent: it is shown nothing
            include_tags = ["public"]        # ExportPolicy members (Section 7.4)
            exclude_tags = ["internal"]
            include_agents = []
            [peers.import]
            capabilities = ["forecast"]      # remote skills our agents may call, or "*"
            callers = []                     # our agents that may call (empty: all)
            domains = ["b.example"]          # record domains it may advertise
        """
        path = Path(path)
        conf = tomllib.loads(path.read_text())

        def anchor_at(name: str) -> x509.Certificate:
            return x509.load_pem_x509_certificate((path.parent / name).read_bytes())

        def crl_at(table: dict[str, Any]) -> list[str]:
            source = table.get("crl")
            if source is None:
                return []
            return [source if source.startswith("https://") else str(path.parent / source)]

        crls = crl_at(conf)
        peers = []
        for p in conf.get("peers", []):
            crls += crl_at(p)
            dom = p["domain"]
            exp = p.get("export")
            export = ExportPolicy(peer_domains=(), include_tags=(), exclude_tags=()) \
                if exp is None else ExportPolicy(
                    peer_domains=(dom,), include_tags=tuple(exp.get("include_tags", ())),
                    exclude_tags=tuple(exp.get("exclude_tags", ())),
                    include_agents=tuple(exp.get("include_agents", ())))
            imp = p.get("import", {})
            peers.append(PeerDomain(
                dom, anchor_at(p["anchor"]), export,
                ImportPolicy(tuple(imp.get("domains", (dom,))),
                             tuple(imp.get("capabilities", ())), tuple(imp.get("callers", ()))),
                p.get("transit", False) if isinstance(p.get("transit"), bool)
                else tuple(p.get("transit", ()))))
        return cls(conf["domain"], anchor_at(conf["anchor"]), peers, crl_sources=crls)

    def trust_store(self) -> RevocationTrustStore:
        """Own and peer anchors with revocation (for :class:`TlsIdentity`)."""
        return self._trust

    @property
    def revocation(self) -> RevocationChecker:
        return self._trust.revocation

    def crl_feed(self, ssl_context: ssl.SSLContext | None = None) -> CrlFeed:
        """A feed of :attr:`crl_sources` into our revocation checker; HTTPS sources are
        fetched trusting the federation's anchors unless ``ssl_context`` is given."""
        if ssl_context is None:
            ssl_context = ssl.create_default_context(cadata=self._trust.pem().decode())
        return CrlFeed(self.revocation, self.crl_sources, ssl_context=ssl_context)

    def peer(self, domain: str) -> PeerDomain:
        """The peer domain's configuration; POLICY_DENIED if not federated."""
        try:
            return self.peers[domain]
        except KeyError:
            raise _denied(f"{domain} is not a federated domain") from None

    # --- associations (Section 6.4) -------------------------------------------------
    def check_open(self, msg: Open, peer: Identity) -> PeerDomain | None:
        """An OPEN received over an association authenticated as ``peer``; returns the
        peer domain (None for a gateway of our own domain)."""
        check_open_identity(msg, peer)
        return None if peer.domain == self.domain else self.peer(peer.domain)

    def check_client(self, peer: Identity) -> None:
        """An association from an agent: only agents of our own domain are served."""
        if peer.kind is _AGENT and peer.domain != self.domain:
            raise _denied(f"{peer.uri} is an agent of another domain")

    # --- what we show (Section 7.4, 10.6) -------------------------------------------
    def exports(self, peer_domain: str, record: CapabilityRecord) -> bool:
        """Whether ``record`` may be shown to a gateway (or requester) of ``peer_domain``
        (the transit rule, module docstring); a remote domain of the trust bundle is
        shown our own records under the transit policy's export policy."""
        if peer_domain == self.domain:
            return True
        peer = self.peers.get(peer_domain)
        if peer is None:
            export = self.transit.export
            return (peer_domain in self.remote and record.domain == self.domain
                    and export is not None
                    and exportable(replace(export, peer_domains=(peer_domain,)),
                                   peer_domain, record))
        if record.domain != self.domain and not peer.transits(record.domain):
            return False
        return exportable(peer.export, peer_domain, record)

    def export_filter(self, peer_domain: str) -> Callable[[CapabilityRecord], bool]:
        """:meth:`exports` bound to one domain, as ``GatewayCore.discover(allow=...)``."""
        return lambda record: self.exports(peer_domain, record)

    # --- what we take (Section 10.5) ------------------------------------------------
    def check_advertisement(self, signed: SignedRecord, peer: Identity, now: float) -> None:
        """A record ADVERTISEd by ``peer`` (a gateway, authenticated): may we learn it?"""
        self.check_signature(signed)
        rec = signed.record
        self.check_domain(peer, rec.domain)
        chain = x5chain(signed)
        if chain:
            identity = check_certificate(self._origin_trust, chain[0], now)
            if identity.uri != rec.agent_uri or identity.entity_id != rec.agent_id:
                raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                                    "x5chain certificate is not the record's agent")

    def check_domain(self, peer: Identity, domain: str) -> None:
        """Whether ``peer`` (a gateway) may advertise records, or capability summaries,
        of ``domain`` (module docstring); POLICY_DENIED otherwise."""
        if peer.domain != self.domain:
            imports = self.peer(peer.domain).imports.domains
            if domain == self.domain and domain not in imports:
                raise _denied(f"{peer.uri} may not advertise records of {self.domain}")
            if domain not in imports and not (
                    domain in self.bundled and self.transit.through(peer.domain)):
                raise _denied(f"{peer.domain} may not advertise records of {domain}")
        elif domain != self.domain and domain not in self.peers and domain not in self.bundled:
            raise _denied(f"records of {domain} are not accepted here")

    def transits(self, peer_domain: str, domain: str) -> bool:
        """Whether records (or summaries) of ``domain`` may be shown to a gateway of
        ``peer_domain``: always within our domain; to a peer domain, by its transit."""
        if peer_domain == self.domain:
            return True
        peer = self.peers.get(peer_domain)
        return peer is not None and (domain == self.domain or peer.transits(domain))

    def check_call(self, caller_uri: str, target: CapabilityRecord,
                   path: tuple[bytes, ...] = ()) -> None:
        """A local agent calling ``target``, whose route has ``path``: the import policy
        of the target's domain, or for a remote domain the transit policy's import
        policy and path limit."""
        if target.domain == self.domain:
            return
        if target.domain in self.remote:
            self.check_path(path)
            imports = self.transit.imports
        else:
            imports = self.peer(target.domain).imports
        if not imports.allows_call(caller_uri, target):
            raise _denied(f"{caller_uri} may not call {target.agent_uri}")

    def check_path(self, path: tuple[bytes, ...]) -> None:
        """A record or call of a remote domain crossed at most ``max_path`` gateways."""
        if len(path) > self.transit.max_path:
            raise _denied(f"path of {len(path)} gateways is longer than the transit "
                          f"policy's max_path ({self.transit.max_path})")

    def check_relay(self, from_domain: str, target: CapabilityRecord) -> None:
        """A ROUTE_REQUEST from a gateway of ``from_domain`` that we forward on: we
        carry calls from a domain only towards what we export to it (transit)."""
        if not self.exports(from_domain, target):
            raise _denied(f"no transit from {from_domain} to {target.agent_uri}")

    # --- origin assertions --------------------------------------------------------------
    def check_peer_certificate(self, der: bytes, now: float) -> Identity:
        """A certificate a peer sends with CERTIFICATE (Section 6.10): one DER
        certificate (INVALID_TLV_VALUE) of a gateway (IDENTITY_MISMATCH) that chains to an
        anchor origin assertions are accepted from (UNTRUSTED_CERTIFICATE, expired,
        revoked), checked as an origin assertion's certificate is."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise SecurityError(ErrorCode.INVALID_TLV_VALUE, f"CERTIFICATE: {exc}") from None
        return self._origin_gateway(cert, now)

    def _origin_gateway(self, cert: x509.Certificate, now: float) -> Identity:
        gateway = check_certificate(self._origin_trust, cert, now, usage=None)
        if gateway.kind is not Kind.GATEWAY:
            raise SecurityError(ErrorCode.IDENTITY_MISMATCH, f"{gateway.uri} is not a gateway")
        return gateway

    def verify_origin(self, token: bytes, msg: RouteRequest, target: CapabilityRecord,
                      now: float, resolve: Callable[[bytes], x509.Certificate | None],
                      via: str | None = None) -> OriginClaims:
        """Check the origin assertion of a ROUTE_REQUEST about to be delivered to the
        local agent ``target`` (module docstring); records its jti.  ``resolve`` gives
        the certificate of a thumbprint held by the peer session the request came over
        (CERTIFICATE_UNKNOWN if none).  From a remote domain of the trust bundle,
        ``via`` (the previous hop's domain) must be a transit domain of the policy and
        the path at most ``max_path``."""
        key = origin_thumbprint(token)
        if key is None:
            raise SecurityError(ErrorCode.INVALID_TOKEN, "not an origin assertion")
        cert = resolve(key)
        if cert is None:
            raise SecurityError(ErrorCode.CERTIFICATE_UNKNOWN,
                                "the origin assertion's certificate is not held on this "
                                "session: send it with CERTIFICATE")
        gateway = self._origin_gateway(cert, now)
        c = verify_jwt(token, cert.public_key()).claims  # type: ignore[arg-type]
        if c.get("iss") != gateway.uri:
            raise SecurityError(ErrorCode.INVALID_TOKEN, "iss is not the signing gateway")
        check_times(c, now, "origin assertion")
        if gateway_audience(self.domain) not in audiences(c):
            raise SecurityError(ErrorCode.WRONG_AUDIENCE,
                                f"origin assertion is not for {self.domain}")
        sub = c.get("sub")
        try:
            source_domain = parse_identity_uri(sub)[0] if isinstance(sub, str) else None
        except ValueError:
            source_domain = None
        if source_domain != gateway.domain or c.get("src") != b64url(msg.source_agent) \
                or c.get("tgt") != b64url(target.agent_id) \
                or c.get("pld") != payload_hash(msg.payload):
            raise SecurityError(ErrorCode.IDENTITY_MISMATCH,
                                "origin assertion is for another source, target or payload")
        if gateway.domain in self.remote:
            if via is None or not self.transit.through(via):
                raise _denied(f"calls from {gateway.domain} may not come through {via}")
            self.check_path(msg.path)
        if not self.exports(gateway.domain, target):
            raise _denied(f"{target.agent_uri} is not exported to {gateway.domain}")
        try:
            scope = ScopeSet.parse(str(c.get("scope", "")))
        except ValueError as exc:
            raise SecurityError(ErrorCode.INVALID_TOKEN, str(exc)) from None
        if not scope.allows(Operation.ROUTE, (s.id for s in target.skills)):
            raise SecurityError(ErrorCode.INSUFFICIENT_SCOPE,
                                f"origin scope {str(scope)!r} does not reach {target.agent_uri}")
        jti = c.get("jti")
        if not isinstance(jti, str):
            raise SecurityError(ErrorCode.INVALID_TOKEN, "origin assertion lacks a jti")
        now_ms = int(now * 1000)
        self._replay.accept(gateway.entity_id, hashlib.sha256(jti.encode()).digest()[:16],
                            now_ms, now_ms)
        return OriginClaims(gateway, str(sub), scope, jti)
