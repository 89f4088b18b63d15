"""Sizes and sequence arithmetic of gateway sync PDUs (draft-dmsc-protocol-00, 6.5, 6.6).

Every UPDATE, DIGEST and SYNC_REQUEST a session sends fits the PDU limit of the session's
transport (Section 9): these functions say how much fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..codec.changes import TableChanges
from ..codec.registry import HEADER_SIZE, ID_SIZE, TLV_HEADER_SIZE
from ..codec.wire import (
    MAX_TLV_VALUE,
    Advertisement,
    DigestEntry,
    DigestNodeFormat,
    DigestSummaryFormat,
    VersionedId,
)

#: Sequence numbers are taken modulo this (SEQUENCE is a uint32).
SEQUENCE_SPACE = 2**32
_HALF = SEQUENCE_SPACE // 2
_SEQUENCE_TLV = TLV_HEADER_SIZE + 4
_ENTRY_SIZE: int = DigestEntry.sizeof()
#: Octets of one WITHDRAW or PURGE TLV.
ITEM_SIZE = TLV_HEADER_SIZE + _ENTRY_SIZE
_DIGEST_HEAD: int = (HEADER_SIZE + _SEQUENCE_TLV + TLV_HEADER_SIZE + DigestSummaryFormat.sizeof()
                     + TLV_HEADER_SIZE + DigestNodeFormat.sizeof())


def update_budget(pdu_limit: int) -> int:
    """Octets left for ADVERTISE, WITHDRAW and PURGE TLVs in one UPDATE."""
    return pdu_limit - HEADER_SIZE - _SEQUENCE_TLV


def entries_per_digest(pdu_limit: int) -> int:
    """DIGEST_ENTRIES items that fit into one DIGEST (one TLV)."""
    room = pdu_limit - _DIGEST_HEAD - TLV_HEADER_SIZE - 2
    return max(1, min(room, MAX_TLV_VALUE - 2) // _ENTRY_SIZE)


def ids_per_request(pdu_limit: int) -> int:
    """Agent IDs that fit into one SYNC_REQUEST (one AGENT_IDS TLV)."""
    room = pdu_limit - HEADER_SIZE - TLV_HEADER_SIZE - 2
    return max(1, min(room, MAX_TLV_VALUE - 2) // ID_SIZE)


def ad_size(ad: Advertisement) -> int:
    """Octets of an ADVERTISE TLV: version (8), path count (1), path, record (Section 6.5)."""
    return TLV_HEADER_SIZE + 8 + 1 + ID_SIZE * len(ad.path) + len(ad.record.encode())


def ahead(seq: int, expected: int) -> int:
    """How far ``seq`` is ahead of ``expected`` in sequence space (negative: behind)."""
    d = (seq - expected) % SEQUENCE_SPACE
    return d if d < _HALF else d - SEQUENCE_SPACE


def merge(*changes: TableChanges) -> TableChanges:
    """Several table changes as one."""
    return TableChanges(tuple(dict.fromkeys(a for c in changes for a in c.advertised)),
                        tuple(w for c in changes for w in c.withdrawn),
                        tuple(p for c in changes for p in c.purged))


@dataclass
class PduSpace:
    """An UPDATE being filled up to the session's budget: at most one TLV per record,
    keyed by Agent ID (Section 6.5: a pending UPDATE carries a record's newest state)."""

    room: int
    advertise: dict[bytes, Advertisement] = field(default_factory=dict)
    withdraw: dict[bytes, VersionedId] = field(default_factory=dict)
    purge: dict[bytes, VersionedId] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.advertise or self.withdraw or self.purge)

    def take(self, aid: bytes) -> None:
        """Take ``aid``'s TLV out again, giving its octets back."""
        ad = self.advertise.pop(aid, None)
        if ad is not None:
            self.room += ad_size(ad)
        elif self.withdraw.pop(aid, None) is not None or self.purge.pop(aid, None) is not None:
            self.room += ITEM_SIZE
