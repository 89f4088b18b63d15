"""What a gateway node's security hooks are (draft-dmsc-protocol-00, Section 10): the
:class:`Guard` protocol that :class:`~.guard.GatewayGuard` and lab mode's
:class:`~dmscproto.runtime.lab.LabGuard` implement, the :class:`NodeHooks` it hands to
:class:`~dmscproto.gateway.node.GatewayNode`, who is behind an association
(:class:`Authenticated`), and the role and claimed-source checks both guards make."""

from __future__ import annotations

from collections.abc import Callable
from typing import NotRequired, Protocol, TypedDict

from cryptography import x509

from ..codec.cose import SignedRecord
from ..codec.messages import Discover, Message, Open, RouteReply, RouteRequest
from ..codec.registry import SESSION_MESSAGES, ErrorCode
from ..codec.values import CapabilityRecord
from ..protocol.certificates import CertificateCheck, SessionCertificates
from ..protocol.discovery import PolicyFor
from ..protocol.machine import Refusal
from ..protocol.peering import ExportFor, OpenCheck
from ..protocol.ports import Admission
from ..protocol.registration import RecordVerifier
from ..protocol.routing import Outbound, Outgoing
from ..protocol.summary import SummaryCheck, SummaryTransit
from .ca import Identity, Kind
from .errors import SecurityError

#: Read for every message admitted, bound once: an Enum member read is ~60 ns on 3.11 (timeit).
_GATEWAY = Kind.GATEWAY
#: The messages that name their sender in SOURCE_AGENT, a tuple made once (a union made at
#: every test costs 1.8k instructions against 1.2k: callgrind).
_NAMING_SOURCE = (Discover, RouteRequest)

Handle = object
RecordFilter = Callable[[CapabilityRecord], bool]


def check_claimed_source(msg: Message, agent: Identity) -> None:
    """Section 10.2: a message in which an agent names itself (SOURCE_AGENT of DISCOVER
    and ROUTE_REQUEST, TARGET_AGENT of the ROUTE_REPLY it answers with) must name the
    agent behind the association: IDENTITY_MISMATCH otherwise.  (REGISTER, REFRESH and
    DEREGISTER are checked in the order of Section 5.1 by their verifier.)"""
    if isinstance(msg, _NAMING_SOURCE):
        claimed, name = msg.source_agent, "SOURCE_AGENT"
    elif isinstance(msg, RouteReply):
        claimed, name = msg.target_agent, "TARGET_AGENT"
    else:
        return
    if claimed is not None and claimed != agent.entity_id:
        raise SecurityError(ErrorCode.IDENTITY_MISMATCH, f"{name} is not the sender's Agent ID")


def check_role(identity: Identity, msg: Message) -> None:
    """An agent sends no peer-session message (Section 6): UNEXPECTED_MESSAGE at once,
    whatever the gateway's session state (an OPEN or SYNC_REQUEST would otherwise wait
    for an answer no role of the gateway gives)."""
    if identity.kind is not _GATEWAY and msg.TYPE in SESSION_MESSAGES:
        raise SecurityError(ErrorCode.UNEXPECTED_MESSAGE,
                            f"{msg.TYPE.name} is a gateway's message; {identity.uri} is an agent")


class Authenticated(Protocol):
    """Who is behind an association."""

    @property
    def identity(self) -> Identity: ...

    @property
    def certificate(self) -> x509.Certificate: ...


class NodeHooks(TypedDict):
    """The keyword arguments of :class:`~dmscproto.gateway.node.GatewayNode` a guard
    supplies."""

    admit: Admission
    verifier: RecordVerifier
    accept_open: OpenCheck
    outgoing: Outgoing
    export_for: ExportFor
    discovery_policy: PolicyFor
    summary_check: NotRequired[SummaryCheck]
    transit: NotRequired[SummaryTransit]
    accept_certificate: NotRequired[CertificateCheck]
    certificates: NotRequired[SessionCertificates]


class Guard(Protocol):
    """A gateway's security hooks, the node's ``admit``, ``verifier``, ``accept_open``,
    ``outgoing``, ``export_for``, ``discovery_policy``, ``summary_check`` and ``transit``
    arguments: :class:`GatewayGuard` and lab mode's
    :class:`~dmscproto.runtime.lab.LabGuard` are both one (they subclass it for
    :meth:`node_hooks`)."""

    def admit(self, source: Handle, msg: Message, now: float) -> Refusal | None: ...

    def verify_record(self, source: Handle, signed: SignedRecord, now: float
                      ) -> Refusal | None: ...

    def accept_open(self, source: Handle, msg: Open) -> Refusal | None: ...

    def outgoing(self, upstream: Handle, msg: RouteRequest, incoming_txid: int,
                 now: float) -> RouteRequest | Outbound | Refusal: ...

    def export_for(self, domain: str) -> RecordFilter | None: ...

    def discovery_policy(self, source: Handle) -> RecordFilter | None: ...

    def summary_check(self, source: Handle, domain: str) -> Refusal | None: ...

    def transit(self, peer_domain: str, domain: str) -> bool: ...

    def accept_certificate(self, source: Handle, der: bytes, now: float
                           ) -> Refusal | None: ...

    #: The certificates each peer session keeps (Section 6.10), shared with the node.
    certificates: SessionCertificates

    def node_hooks(self) -> NodeHooks:
        """Every hook, as ``GatewayNode(core, **guard.node_hooks())``."""
        return NodeHooks(admit=self.admit, verifier=self.verify_record,
                         accept_open=self.accept_open, outgoing=self.outgoing,
                         export_for=self.export_for, discovery_policy=self.discovery_policy,
                         summary_check=self.summary_check, transit=self.transit,
                         accept_certificate=self.accept_certificate,
                         certificates=self.certificates)
