"""Every table-driven protocol machine, in the order of draft-dmsc-state-machines-00 (the
state diagrams and the table tests walk this list; the datagram reliability layer's,
which sit above the protocol layer, are :data:`dmscproto.transport.transactions.MACHINES`).
"""

from .agent_registration import AgentRegistration
from .discovery import DiscoveryResponder
from .federated import FederatedDiscovery
from .liveness import GatewayLiveness
from .machine import Machine
from .oam import EchoResponder, TraceRelay
from .peering import PeerSession
from .registration import GatewayRegistration
from .requester import Requester
from .routing import RouteRelay
from .sync_in import SyncIn
from .sync_out import SyncOut

MACHINES: tuple[type[Machine], ...] = (
    AgentRegistration, GatewayRegistration, Requester, DiscoveryResponder,
    FederatedDiscovery, RouteRelay, PeerSession, SyncOut, SyncIn, EchoResponder, TraceRelay,
    GatewayLiveness,
)
