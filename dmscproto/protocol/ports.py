"""The small interfaces the gateway machines are written against (draft-dmsc-state-machines-00).

A machine takes these Protocols, never the concrete
:class:`~dmscproto.gateway.core.GatewayCore`, so its table and its actions are the whole
of its behaviour and a test can drive it with anything that has the same few methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..codec.changes import TableChanges
from ..codec.messages import Message, Open
from ..codec.values import CapabilityRecord
from ..codec.wire import Advertisement, VersionedId
from .machine import Handle, Refusal

#: The export filter towards a peer (None: export everything; Section 7.4).
ExportFilter = Callable[[CapabilityRecord], bool] | None


class SyncTable(Protocol):
    """The record table gateway sync reads and changes (Sections 6.2, 6.5, 6.6)."""

    def agent_ids_unordered(self) -> list[bytes]:
        """Every record held, local and learned, as a snapshot."""

    def advertisement(self, agent_id: bytes, to_peer: bytes,
                      allow: ExportFilter) -> Advertisement | None:
        """The ADVERTISE for ``agent_id`` towards ``to_peer`` (this gateway appended to
        the path), or None when it is not exported to that peer."""

    def learn_many(self, ads: Sequence[Advertisement], from_peer: bytes,
                   now: float) -> TableChanges:
        """Learn ADVERTISEs (already checked by the record check) in one commit."""

    def purge_held(self, adv: Advertisement, from_peer: bytes, now: float) -> bool:
        """Whether :meth:`learn_many` ignores ``adv`` for now: a version purged within
        PURGE_HOLD, not straight from its origin."""

    def withdraw_many(self, items: Sequence[VersionedId], from_peer: bytes) -> TableChanges:
        """Drop the routes through ``from_peer`` of the given versions or older."""

    def purge_many(self, items: Sequence[VersionedId], now: float) -> TableChanges:
        """Remove learned records of the given versions or older, every route."""

    def routes_via(self, peer: bytes) -> list[bytes]:
        """The Agent IDs this gateway holds a route to through ``peer``."""


class SyncLink(Protocol):
    """The peer session gateway sync runs on (Section 6.1)."""

    @property
    def handle(self) -> Handle: ...

    @property
    def gateway_id(self) -> bytes: ...

    @property
    def pdu_limit(self) -> int:
        """The largest PDU the session's transport carries (Section 9)."""

    @property
    def allow(self) -> ExportFilter:
        """The export filter towards the peer."""

    def send(self, msg: Message, now: float) -> None:
        """Send on the session."""


# --- peering (Sections 6.1, 6.4) -------------------------------------------------------------
class SessionSync(Protocol):
    """The record exchange running on an established session (Sections 6.5, 6.6)."""

    def start(self, now: float) -> None: ...

    def receive(self, msg: Message, now: float) -> None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class PeeringPort(Protocol):
    """What a peer session needs from its gateway."""

    def check_open(self, handle: Handle, msg: Open) -> Refusal | None:
        """Identity, federation policy, duplicate sessions: the refusal to NOTIFY, or
        None to accept."""

    def start_sync(self, handle: Handle, gateway_id: bytes, domain: str) -> SessionSync:
        """The sync machine for a session just established with ``gateway_id``."""


# --- the agent keepalive (Section 6.8.3) ----------------------------------------------------
class LivenessPort(Protocol):
    """What the watch needs from the agent."""

    def probe(self, now: float) -> None:
        """Send ECHO_REQUEST to the home gateway."""
