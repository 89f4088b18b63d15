"""The states, inputs and actions of :class:`~.sync_in.SyncIn`, the receiving half of gateway
sync (draft-dmsc-protocol-00, Sections 6.5, 6.6): each input a small dataclass carrying
its data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..codec.messages import Digest, Update
from ..codec.wire import DigestNode, VersionedId
from .typed import StepInput


class InState(Enum):
    AWAITING_TABLE = "AWAITING_TABLE"
    READY = "READY"
    RECONCILING = "RECONCILING"


class InInput(Enum):
    UPDATE = "UPDATE [next]"
    ANSWER_MORE = "UPDATE [next, answers SYNC_REQUEST, more to ask]"
    ANSWER_LAST = "UPDATE [next, answers SYNC_REQUEST, nothing left]"
    DIGEST_SAME = "DIGEST [next, root, equal]"
    DIGEST_DIFFERS = "DIGEST [next, root, differs]"
    NODE_PARTIAL = "DIGEST [next, node, more runs to come]"
    NODE_MORE = "DIGEST [next, node asked, more to ask]"
    NODE_LAST = "DIGEST [next, node asked, nothing left]"
    NODE_LATE = "DIGEST [next, node not asked]"
    AHEAD = "UPDATE or DIGEST [ahead of sequence]"
    AHEAD_APPLYING = "UPDATE or DIGEST [ahead of sequence, an UPDATE being applied]"
    STALE = ("UPDATE or DIGEST [already applied, being applied, or too many held], "
             "ERROR [answers no request]")
    SLICE_DUE = "next slice of the UPDATE being applied"
    ERROR_MORE = "ERROR [answers a request, others remain]"
    ERROR_LAST = "ERROR [answers the last request]"
    ACK_DUE = "ack timer"
    REORDER_DUE = "reorder timer"
    REQUEST_DUE = "request timer"
    PURGED = "records purged"


class InAction(Enum):
    APPLY = ("apply, a slice (LEARN_SLICE) at a time: record what the peer advertised; "
             "learn the ADVERTISEs that pass the record check (RecordRefused for the "
             "others); report TableChanged; if more remain, stop reorder timer and start "
             "slice timer, else apply WITHDRAWs and PURGEs, report, acknowledge")
    APPLY_ANSWER = "apply; ask again for the Agent IDs the answer left out"
    APPLY_LAST_ANSWER = "apply; stop request timer"
    SWEEP = ("remove routes through the peer to records it did not advertise on this "
             "session (stale after a restart); acknowledge")
    SWEEP_AND_RECONCILE = "sweep; send DIGEST_REQUEST for the root; start request timer"
    NOTHING = "acknowledge"
    RECONCILE = "send DIGEST_REQUEST for the root; start request timer; acknowledge"
    COLLECT = "keep the run of entries; acknowledge"
    DESCEND = ("remove routes to records the node's entries omit; DIGEST_REQUEST for each "
               "child that differs, SYNC_REQUEST for each entry newer or unknown here; "
               "acknowledge")
    DESCEND_LAST = "as DESCEND; stop request timer"
    HOLD = "hold it until the messages before it are applied; start reorder timer"
    HOLD_BEHIND = "hold it until the UPDATE being applied is done (nothing is missing)"
    APPLY_SLICE = "apply the next slice of the UPDATE (as APPLY)"
    DROP = "discard it"
    END_REQUEST = "forget the request"
    END_LAST_REQUEST = "forget the request; stop request timer"
    SEND_ACK = "send SYNC_ACK with the number of messages applied"
    SKIP = "skip the missing messages (apply the held ones)"
    SKIP_AND_RECONCILE = "skip the missing messages; send DIGEST_REQUEST for the root"
    ABANDON = "forget every request (the next DIGEST decides again)"
    FORGET = "stop mirroring them (Section 6.6.1)"


@dataclass(frozen=True, slots=True)
class UpdateNext(StepInput):
    KIND = InInput.UPDATE
    update: Update


@dataclass(frozen=True, slots=True)
class AnswerMore(StepInput):
    KIND = InInput.ANSWER_MORE
    update: Update
    ask_again: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AnswerLast(StepInput):
    KIND = InInput.ANSWER_LAST
    update: Update


@dataclass(frozen=True, slots=True)
class RootSame(StepInput):
    KIND = InInput.DIGEST_SAME


@dataclass(frozen=True, slots=True)
class RootDiffers(StepInput):
    KIND = InInput.DIGEST_DIFFERS


@dataclass(frozen=True, slots=True)
class NodePartial(StepInput):
    KIND = InInput.NODE_PARTIAL
    digest: Digest


@dataclass(frozen=True, slots=True)
class NodeDiff(StepInput):
    """A node's answer, complete, compared with ours: what to do about it."""

    KIND = InInput.NODE_MORE
    node: DigestNode
    children: tuple[DigestNode, ...]
    wanted: tuple[bytes, ...]
    omitted: tuple[VersionedId, ...]


@dataclass(frozen=True, slots=True)
class NodeDiffLast(NodeDiff):
    KIND = InInput.NODE_LAST


@dataclass(frozen=True, slots=True)
class NodeLate(StepInput):
    KIND = InInput.NODE_LATE


@dataclass(frozen=True, slots=True)
class Ahead(StepInput):
    KIND = InInput.AHEAD
    msg: Update | Digest


@dataclass(frozen=True, slots=True)
class AheadApplying(StepInput):
    KIND = InInput.AHEAD_APPLYING
    msg: Update | Digest


@dataclass(frozen=True, slots=True)
class Stale(StepInput):
    KIND = InInput.STALE


@dataclass(frozen=True, slots=True)
class SliceDue(StepInput):
    KIND = InInput.SLICE_DUE


@dataclass(frozen=True, slots=True)
class AnswerError(StepInput):
    KIND = InInput.ERROR_MORE
    transaction_id: int


@dataclass(frozen=True, slots=True)
class LastAnswerError(AnswerError):
    KIND = InInput.ERROR_LAST


@dataclass(frozen=True, slots=True)
class AckDue(StepInput):
    KIND = InInput.ACK_DUE


@dataclass(frozen=True, slots=True)
class ReorderDue(StepInput):
    KIND = InInput.REORDER_DUE


@dataclass(frozen=True, slots=True)
class RequestDue(StepInput):
    KIND = InInput.REQUEST_DUE


@dataclass(frozen=True, slots=True)
class Purged(StepInput):
    """Records purged from the table (:meth:`PeerSync.announce`)."""

    KIND = InInput.PURGED
    items: tuple[VersionedId, ...]


InEvent = (UpdateNext | AnswerMore | AnswerLast | RootSame | RootDiffers | NodePartial
           | NodeDiff | NodeLate | Ahead | AheadApplying | Stale | AnswerError)
