"""An ADVERTISE repeated by a peer is not checked again when learning it would change
nothing, so a peer cannot spend a gateway's CPU by resending one valid record; a new
version, a new path or a forged twin still goes through the record check
(draft-dmsc-protocol-00, Sections 6.5, 10 Denial of Service).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dmscproto.codec.cose import SignedRecord
from dmscproto.codec.messages import Update
from dmscproto.codec.wire import Advertisement
from dmscproto.protocol.events import RecordRefused, TableChanged
from dmscproto.protocol.machine import Handle, Refusal
from dmscproto.protocol.sync import PeerSync
from dmscproto.protocol.sync_in import SyncIn
from dmscproto.testing.harness import Network, make_record


def test_repeated_advertise_skips_the_record_check(tmp_path: Path) -> None:
    net = Network(tmp_path)
    try:
        net.gateway("gw-a")
        gwb = net.gateway("gw-b")
        net.gateways["gw-a"].connect("gw-b", net.now)
        net.advance(1)
        sync = gwb.sessions["gw-a"].sync
        assert isinstance(sync, PeerSync)
        inc: SyncIn = sync.inc
        checked: list[SignedRecord] = []
        verify = inc.verifier

        def counted(h: Handle, rec: SignedRecord, now: float) -> Refusal | None:
            checked.append(rec)
            return verify(h, rec, now)

        inc.verifier = counted
        peer = net.gateway_id("gw-a")

        def send(*ads: Advertisement) -> list[TableChanged]:
            checked.clear()
            net.deliver("gw-a", "gw-b", Update(transaction_id=1, advertise=ads,
                                               sequence=net.next_sequence("gw-a", "gw-b")))
            net.advance(1)
            return net.take("gw-b", TableChanged)

        v1 = make_record(77, "x", "a.example")
        aid = v1.record.agent_id
        ad = Advertisement(1, (peer,), v1)
        assert [c.advertised for c in send(ad, ad, ad)] == [(aid,)]
        assert len(checked) == 1            # copies in one UPDATE: checked once
        held = gwb.core.get(aid)
        assert send(*[ad] * 40) == [] and checked == []   # held: none checked
        assert gwb.core.get(aid) == held and inc.unchanged == 42

        forged = replace(v1, signature=bytes(64))        # same id and version
        assert send(Advertisement(1, (peer,), forged)) == [] and len(checked) == 1
        assert [e.agent_id for e in net.take("gw-b", RecordRefused)] == [aid]
        assert gwb.core.get(aid) == held
        assert send(ad) == [] and checked == []          # the verified one stays

        other = bytes(range(16))                         # another path: checked
        assert [c.advertised for c in send(Advertisement(1, (other, peer), v1))] == [(aid,)]
        assert len(checked) == 1
        v2 = make_record(77, "x", "a.example", version=2)
        assert [c.advertised for c in send(Advertisement(2, (peer,), v2))] == [(aid,)]
        stored = gwb.core.get(aid)
        assert len(checked) == 1 and stored is not None and stored.version == 2
    finally:
        net.close()
