"""Gateway sync over a link with DTLS's PDU limit: the table transfer is paced by the
window, every UPDATE, DIGEST and SYNC_REQUEST fits 1163 octets (the harness checks each
PDU against the limit the node was given), the digest trees are walked down to the
leaves that differ, and the requester asks again for what an answer left out
(draft-dmsc-protocol-00, Sections 6.5, 6.6, 9.2)."""

from __future__ import annotations

import itertools
from pathlib import Path

from dmscproto.codec.digest import ROOT
from dmscproto.codec.messages import DigestRequest, SyncAck, SyncRequest, Update
from dmscproto.codec.registry import SYNC_WINDOW, timer
from dmscproto.testing.harness import Network

DTLS_PDU = 1163


def dtls_pair(tmp_path: Path) -> Network:
    net = Network(tmp_path)
    for name in ("gw-a", "gw-b"):
        net.gateway(name, pdu_limit=lambda _handle: DTLS_PDU)
    return net


def unacknowledged_peak(net: Network, source: str, dest: str) -> int:
    """The most UPDATEs ``source`` had sent ``dest`` beyond what ``dest`` had acknowledged
    to it, at any point of the delivery log."""
    sent = acked = peak = 0
    for s in net.log:
        if s.source == source and s.dest == dest and isinstance(s.msg, Update):
            sent = s.msg.sequence + 1
            peak = max(peak, sent - acked)
        elif s.source == dest and s.dest == source and isinstance(s.msg, SyncAck):
            acked = s.msg.sequence
    return peak


def test_table_transfer_is_windowed_and_sized(tmp_path: Path) -> None:
    net = dtls_pair(tmp_path)
    try:
        agents = [net.agent(f"agent{i}", "gw-a") for i in range(60)]
        for agent in agents:
            agent.register(net.now)
        net.pump()
        net.gateways["gw-a"].connect("gw-b", net.now)
        net.pump()
        assert all(agent.agent_id in net.gateways["gw-b"].core for agent in agents)
        ups = [s for s in net.sent("gw-a", "gw-b") if isinstance(s.msg, Update)]
        assert len(ups) > SYNC_WINDOW and all(s.size <= DTLS_PDU for s in ups)
        assert 0 < unacknowledged_peak(net, "gw-a", "gw-b") <= SYNC_WINDOW
    finally:
        net.close()


def test_reconciliation_walks_the_tree_and_asks_again(tmp_path: Path) -> None:
    """50 records registered while the link loses everything (what was sent before the
    window closed is lost): the next DIGEST differs, the root is asked for, and the
    records are pulled a PDU's worth at a time, the requester asking again after each
    answer."""
    net = dtls_pair(tmp_path)
    try:
        net.gateways["gw-a"].connect("gw-b", net.now)
        net.advance(1)
        net.cut.add(frozenset(("gw-a", "gw-b")))
        agents = [net.agent(f"agent{i}", "gw-a") for i in range(50)]
        for agent in agents:
            agent.register(net.now)
        net.pump()
        net.cut.clear()
        net.log.clear()
        net.advance(timer("DIGEST_INTERVAL") + timer("REORDER_TIMEOUT"))
        assert all(agent.agent_id in net.gateways["gw-b"].core for agent in agents)
        asked = [s.msg for s in net.sent("gw-b", "gw-a")]
        nodes = [m.node for m in asked if isinstance(m, DigestRequest)]
        assert nodes[0] == ROOT
        pulls = [m for m in asked if isinstance(m, SyncRequest)]
        assert len(pulls) >= 5                  # one answer carries one or two records
        first = pulls[0].agent_ids[0]
        for ask, again in itertools.pairwise(pulls):  # asked again for the rest
            assert set(again.agent_ids[0]) < set(ask.agent_ids[0]) <= set(first)
        net.log.clear()
        net.advance(timer("DIGEST_INTERVAL"))   # in agreement now: nothing asked
        assert not [s for s in net.log if isinstance(s.msg, DigestRequest | SyncRequest)]
    finally:
        net.close()
