"""The states, inputs and actions of :class:`~.sync_out.SyncOut`, the sending half of
gateway sync (draft-dmsc-protocol-00, Sections 6.5, 6.6): each input a small dataclass
carrying its data."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..codec.changes import TableChanges
from ..codec.messages import DigestRequest, SyncRequest
from .typed import StepInput


class OutState(Enum):
    NEW = "NEW"
    BULK = "BULK"
    READY = "READY"


class OutInput(Enum):
    START = "session established"
    CHANGED = "records changed"
    ACK = "SYNC_ACK"
    ACK_INVALID = "SYNC_ACK [more than was sent]"
    SYNC_REQUEST = "SYNC_REQUEST"
    DIGEST_REQUEST = "DIGEST_REQUEST"
    DIGEST_REQUEST_INVALID = "DIGEST_REQUEST [no such node]"
    TABLE_SENT = "[bulk table sent]"
    ADVERTISE_DUE = "advertisement timer"
    DIGEST_DUE = "digest timer"
    SLICE_DUE = "slice timer"


class OutAction(Enum):
    BEGIN = ("take the table a chunk at a time, each copied when reached; send its "
             "exported records in UPDATEs as the window allows")
    QUEUE = "queue the changed records; send what the window and the interval allow"
    OPEN_WINDOW = "note what the peer applied; send what the window now allows"
    REFUSE_ACK = "close the session (NOTIFY INVALID_TLV_VALUE)"
    ANSWER_RECORDS = ("answer UPDATE: ADVERTISE of each requested record exported to the "
                      "peer, in order, as many as fit, filled a slice at a time and sent "
                      "before any other UPDATE")
    ANSWER_NODE = "answer DIGEST of the node: its entries if they fit, else its children"
    REFUSE_NODE = "answer ERROR INVALID_TLV_VALUE"
    END_TABLE = "send DIGEST of the root (end of the table); start digest timer"
    SEND_DUE = "queue the records whose interval ended; send what the window allows"
    SEND_DIGEST = "send DIGEST of the root; restart digest timer"
    SEND_SLICE = ("fill on the answer or UPDATE where the last slice ended; send what the "
                  "window allows")


@dataclass(frozen=True, slots=True)
class Start(StepInput):
    KIND = OutInput.START


@dataclass(frozen=True, slots=True)
class Changed(StepInput):
    KIND = OutInput.CHANGED
    changes: TableChanges


@dataclass(frozen=True, slots=True)
class Acked(StepInput):
    KIND = OutInput.ACK
    applied: int


@dataclass(frozen=True, slots=True)
class AckInvalid(StepInput):
    KIND = OutInput.ACK_INVALID
    applied: int


@dataclass(frozen=True, slots=True)
class RecordsAsked(StepInput):
    KIND = OutInput.SYNC_REQUEST
    request: SyncRequest


@dataclass(frozen=True, slots=True)
class NodeAsked(StepInput):
    KIND = OutInput.DIGEST_REQUEST
    request: DigestRequest


@dataclass(frozen=True, slots=True)
class NodeInvalid(StepInput):
    KIND = OutInput.DIGEST_REQUEST_INVALID
    request: DigestRequest


@dataclass(frozen=True, slots=True)
class TableSent(StepInput):
    KIND = OutInput.TABLE_SENT


@dataclass(frozen=True, slots=True)
class AdvertiseDue(StepInput):
    KIND = OutInput.ADVERTISE_DUE


@dataclass(frozen=True, slots=True)
class DigestDue(StepInput):
    KIND = OutInput.DIGEST_DUE


@dataclass(frozen=True, slots=True)
class SliceDue(StepInput):
    KIND = OutInput.SLICE_DUE
