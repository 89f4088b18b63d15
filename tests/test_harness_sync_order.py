"""Gateway sync when a DIGEST overtakes nothing but is overtaken by an UPDATE
(draft-dmsc-protocol-00, Section 6.6; draft-dmsc-state-machines-00, gateway sync).

QUIC does not order streams against each other and datagrams are reordered, so a DIGEST
generated before an UPDATE can arrive after it.  The DIGEST does not list the record the
UPDATE advertised; the receiver must not withdraw that record for it.
"""

from __future__ import annotations

from pathlib import Path

from dmscproto.codec.messages import Digest
from dmscproto.protocol.events import TableChanged
from dmscproto.testing.harness import Network


def test_digest_older_than_update_does_not_withdraw(tmp_path: Path) -> None:
    net = Network(tmp_path)
    try:
        gwa, gwb = net.gateway("gw-a"), net.gateway("gw-b")
        x = net.agent("x", "gw-a")
        gwa.connect("gw-b", net.now)
        net.pump()
        sync = gwa.sessions["gw-b"].sync
        assert sync is not None
        net.advance(1)
        sync.start(net.now)                      # gw-a generates a DIGEST without x ...
        held = gwa.messages_to_send()
        assert [type(m) for _, m in held] == [Digest]
        x.register(net.now)                      # ... then advertises x, delivered first
        net.pump()
        assert x.agent_id in gwb.core
        net.take("gw-b", TableChanged)
        for dest, msg in held:                   # the older DIGEST arrives last
            net.deliver("gw-a", dest, msg)
        net.pump()
        assert x.agent_id in gwb.core
        assert [e for e in net.take("gw-b", TableChanged) if e.withdrawn] == []
        # The next DIGEST lists x: nothing changes.
        net.advance(31)
        assert x.agent_id in gwb.core
        assert net.take("gw-b", TableChanged) == []
    finally:
        net.close()


def test_digest_still_withdraws_a_route_it_omits(tmp_path: Path) -> None:
    """Anti-entropy still works: a route held at the previous DIGEST that the peer no
    longer exports (its WITHDRAW lost) goes with the next DIGEST."""
    net = Network(tmp_path)
    try:
        gwa, gwb = net.gateway("gw-a"), net.gateway("gw-b")
        x = net.agent("x", "gw-a")
        gwa.connect("gw-b", net.now)
        x.register(net.now)
        net.advance(31)                          # a DIGEST listing x
        assert x.agent_id in gwb.core
        net.cut.add(frozenset(("gw-a", "gw-b")))
        x.deregister(net.now)                    # the WITHDRAW is lost
        net.pump()
        net.cut.clear()
        assert x.agent_id not in gwa.core and x.agent_id in gwb.core
        net.advance(30)                          # the next DIGEST omits x
        assert x.agent_id not in gwb.core
    finally:
        net.close()
