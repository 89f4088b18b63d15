"""The DMSC protocol state machines, sans-I/O (draft-dmsc-state-machines-00).

Each machine is fed decoded messages and ``now`` and produces messages to send, timers and
events; none touches a socket, a clock or asyncio.  :data:`MACHINES` lists them in the
order of the draft; each one's transitions are its ``TABLE``.
"""

from ..codec.registry import ANSWER_TO
from .agent import AgentClient
from .discovery import DiscoveryResponder
from .federated import FederatedDiscovery
from .machine import Machine, Outbox, ProtocolError, TransactionIds
from .oam import EchoResponder, TraceRelay
from .peering import LocalGateway, PeerSession
from .registration import AgentRegistration, GatewayRegistration
from .requester import Requester, Requests
from .routing import RelayContext, RouteRelay
from .sync import PeerSync
from .sync_in import SyncIn
from .sync_out import SyncOut

#: Every table-driven machine, in the order of draft-dmsc-state-machines-00.
MACHINES: tuple[type[Machine], ...] = (
    AgentRegistration, GatewayRegistration, Requester, DiscoveryResponder,
    FederatedDiscovery, RouteRelay, PeerSession, SyncOut, SyncIn, EchoResponder, TraceRelay,
)

__all__ = [
    "ANSWER_TO", "MACHINES", "AgentClient", "AgentRegistration", "DiscoveryResponder",
    "EchoResponder", "FederatedDiscovery", "GatewayRegistration", "LocalGateway", "Machine",
    "Outbox", "PeerSession",
    "PeerSync", "ProtocolError", "RelayContext", "Requester", "Requests", "RouteRelay",
    "SyncIn", "SyncOut", "TraceRelay", "TransactionIds",
]
