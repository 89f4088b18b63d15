"""What one input changed in a gateway's record table (draft-dmsc-protocol-00, Section
6.5): the value the gateway core's sync methods return and gateway sync announces to the
peers.  It sits in the codec, below both the protocol machines and the gateway."""

from __future__ import annotations

from dataclasses import dataclass

from .wire import VersionedId


@dataclass(frozen=True, slots=True)
class TableChanges:
    """What one input changed in a gateway's record table, for the other peers
    (Section 6.5): ``advertised`` records have a new version or best route,
    ``withdrawn`` ones lost their last route, ``purged`` ones were removed by their
    origin."""

    advertised: tuple[bytes, ...] = ()
    withdrawn: tuple[VersionedId, ...] = ()
    purged: tuple[VersionedId, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.advertised or self.withdrawn or self.purged)
