"""One test per row of a machine's table (draft-dmsc-state-machines-00): a case drives the
machine into the row's state and through the row's input by the machine's public inputs
(PDUs through the codec), and asserts what the row's action did and the state it left;
the test running it also checks that the row really ran.  Each module of row cases
checks that every row of its machines has a case (``tests/test_protocol_tables.py``
checks that every table machine has such a check)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import Rows, every_row

from dmscproto.codec import decode, encode
from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.messages import Message
from dmscproto.codec.registry import ErrorCode
from dmscproto.codec.wire import Advertisement
from dmscproto.fsm import TableMachine
from dmscproto.gateway.core import GatewayCore
from dmscproto.gateway.store import RegistryStore
from dmscproto.protocol.events import ProtocolEvent
from dmscproto.protocol.machine import Outbox, TransactionIds
from dmscproto.protocol.registration import verify_signature
from dmscproto.protocol.sync import PeerSync, SyncPeer
from dmscproto.testing.harness import T0

#: One row: the machine, the state, the input.
Row = tuple[type[TableMachine], Enum, Enum]
#: A case: given the row's state and a fresh directory, drive the row and assert it.
Case = Callable[[Any, Path], None]
MsgT = TypeVar("MsgT", bound=Message)


def wire(msg: MsgT) -> MsgT:
    """``msg`` as a peer's bytes decode (what a machine is fed is a real PDU)."""
    out = decode(encode(msg))
    assert type(out) is type(msg) and encode(out) == encode(msg)
    return out  # type: ignore[return-value]


class RowCases:
    """The cases of the rows of ``machine``'s table."""

    def __init__(self, machine: type[TableMachine]) -> None:
        self.machine = machine
        self.cases: dict[Row, Case] = {}

    def row(self, states: Enum | tuple[Enum, ...], inp: Enum) -> Callable[[Case], Case]:
        """Register the decorated case for ``inp`` in each of ``states``."""
        def register(case: Case) -> Case:
            for s in states if isinstance(states, tuple) else (states,):
                key = (self.machine, s, inp)
                assert key in every_row(self.machine), f"no row {s.name} x {inp.name}"
                assert key not in self.cases, f"two cases for {s.name} x {inp.name}"
                self.cases[key] = case
            return case
        return register

    def params(self) -> list[Any]:
        return [pytest.param(r, id=f"{r[0].__name__}-{r[1].name}-{r[2].name}")
                for r in self.cases]

    def run(self, row: Row, ran: Rows, tmp_path: Path) -> None:
        """Run the case of ``row`` and check that the row ran."""
        self.cases[row](row[1], tmp_path)
        assert row in ran, f"the case of {row[1].name} x {row[2].name} never ran that row"

    def check_complete(self) -> None:
        missing = every_row(self.machine) - set(self.cases)
        assert not missing, "rows without a case: " + ", ".join(
            f"{s.name} x {i.name}" for _, s, i in sorted(missing, key=str))


def row_tests(*all_cases: RowCases) -> tuple[Callable[..., None], Callable[..., None]]:
    """The two tests of a module of row cases: each row's case (``test_row``), and
    that every row of each machine has one (``test_every_row_has_a_case``)."""
    by_machine = {c.machine: c for c in all_cases}

    @pytest.mark.parametrize("row", [p for c in all_cases for p in c.params()])
    def test_row(row: Row, table_rows: Rows, tmp_path: Path) -> None:
        by_machine[row[0]].run(row, table_rows, tmp_path)

    @pytest.mark.parametrize("cases", all_cases, ids=[c.machine.__name__ for c in all_cases])
    def test_every_row_has_a_case(cases: RowCases) -> None:
        cases.check_complete()

    return test_row, test_every_row_has_a_case


# --- gateway sync on one session (both halves), for the sync machines' cases ---------------
ME, PEER = bytes([0xEE]) * 16, bytes([0x01]) * 16


@dataclass
class SyncRig:
    """Both halves of gateway sync on a session to PEER, over a gateway's real SQLite
    registry; what they send is collected (through the codec) in ``msgs``."""

    sync: PeerSync
    core: GatewayCore
    out: Outbox
    msgs: list[Message] = field(default_factory=list)

    def feed(self, msg: Message, at: float) -> None:
        self.sync.receive(wire(msg), at)

    def sent(self) -> list[Message]:
        out = [wire(m) for m in self.msgs]
        self.msgs.clear()
        return out

    def events(self) -> list[ProtocolEvent]:
        out = list(self.out.events)
        self.out.events.clear()
        return out


def sync_rig(tmp_path: Path, *, local: Sequence[SignedRecord] = (),
             learned: Sequence[SignedRecord] = (), sliced: bool = False) -> SyncRig:
    """Sync on a session just established (not started) by a gateway holding ``local``
    records registered here and ``learned`` ones routed through PEER before the session
    (as a restart loads them).  ``sliced``: a slice clock of one second a reading, so a
    slice of UPDATE building (WORK_SLICE 0.5 s) takes one record, and one of UPDATE
    applying (LEARN_SLICE 2.5 s) a record or two."""
    core = GatewayCore(ME, "a.example", RegistryStore(tmp_path / "gw.db"))
    for signed in local:
        assert core.register(signed, 600, T0).status is ErrorCode.SUCCESS
    for signed in learned:
        assert core.learn(Advertisement(1, (PEER,), signed), PEER, T0)
    ticks = iter(range(10**6))
    msgs: list[Message] = []
    out = Outbox()
    sync = PeerSync(out, core, SyncPeer("peer", PEER, "b.example",
                                        lambda m, _t: msgs.append(m)),
                    TransactionIds(), verify_signature,
                    slice_clock=(lambda: float(next(ticks))) if sliced else None,
                    learn_slice=2.5, work_slice=0.5)
    return SyncRig(sync, core, out, msgs)
