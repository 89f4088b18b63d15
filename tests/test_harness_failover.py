"""Graceful restart, fail-fast and the redial schedule (draft-dmsc-protocol-00, Sections
6.1.1 and 6.1.2): real nodes in the in-memory harness, the real codec on every PDU, a
fake clock."""

from __future__ import annotations

import random
from pathlib import Path

from dmscproto.codec.messages import EchoRequest, RouteReply
from dmscproto.codec.registry import ErrorCode, timer
from dmscproto.gateway.node import GatewayNode
from dmscproto.protocol.agent import AgentClient
from dmscproto.protocol.events import RequestCompleted, SessionClosed
from dmscproto.runtime.gateway import Redial
from dmscproto.testing.harness import Network


def test_restarted_gateway_withholds_records_until_their_agents_return(tmp_path: Path
                                                                        ) -> None:
    net = Network(tmp_path)
    try:
        net.gateway("gw-a", hold_time=9)
        gwb = net.gateway("gw-b", hold_time=9)
        x, y = net.agent("x", "gw-a"), net.agent("y", "gw-a")
        x.register(net.now, lease=60)   # refreshes after 30 s
        y.register(net.now, lease=600)  # silent for 300 s
        net.gateways["gw-a"].connect("gw-b", net.now)
        net.pump()
        assert x.agent_id in gwb.core and y.agent_id in gwb.core

        gwa = net.restart("gw-a")  # the store kept both registrations
        assert gwa.restarted(net.now, grace=60) == 2
        restart_at = net.now
        net.advance(10)  # gw-b's hold timer: the routes through gw-a are gone
        [closed] = net.take("gw-b", SessionClosed)
        assert closed.status is ErrorCode.HOLD_TIMER_EXPIRED
        assert x.agent_id not in gwb.core and y.agent_id not in gwb.core
        gwa.connect("gw-b", net.now)
        net.pump()
        assert gwb.peers and x.agent_id not in gwb.core and y.agent_id not in gwb.core
        assert x.agent_id in gwa.core and y.agent_id in gwa.core  # still stored

        net.advance(restart_at + 35 - net.now)  # x refreshes over its association
        assert x.agent_id in gwb.core and y.agent_id not in gwb.core
        net.advance(restart_at + 61 - net.now)  # the grace period is over
        assert y.agent_id in gwb.core
        assert gwa.grace is not None and gwa.grace.get_timer() is None
    finally:
        net.close()


def _caller_and_server_across_two_gateways(
        net: Network) -> tuple[GatewayNode, AgentClient, AgentClient]:
    """gw-a (a.example) peered with gw-b (b.example), hold time 3 s; ``client`` registered
    at gw-a, ``server`` at gw-b: gw-a, the server and the client."""
    gwa = net.gateway("gw-a", hold_time=3)
    net.gateway("gw-b", "b.example", hold_time=3)
    server = net.agent("server", "gw-b")
    client = net.agent("client", "gw-a")
    server.register(net.now)
    client.register(net.now)
    gwa.connect("gw-b", net.now)
    net.pump()
    return gwa, server, client


def test_call_through_a_next_hop_that_went_silent_fails_at_hold_expiry(tmp_path: Path
                                                                       ) -> None:
    net = Network(tmp_path)
    try:
        gwa, server, client = _caller_and_server_across_two_gateways(net)
        assert server.agent_id in gwa.core
        net.cut.add(frozenset(("gw-a", "gw-b")))  # gw-b dies: nothing comes back
        sent_at = net.now
        client.route(b"hi", net.now, target=server.agent_id)
        net.advance(3.5)
        [done] = net.take("client", RequestCompleted)
        assert isinstance(done.answer, RouteReply)
        assert done.answer.status is ErrorCode.TARGET_UNREACHABLE
        assert net.sent("gw-a", "client")[-1].time - sent_at <= 3  # not ROUTE_TIMEOUT
        assert server.agent_id not in gwa.core
    finally:
        net.close()


def test_redial_delays_double_up_to_the_cap_with_jitter_and_reset() -> None:
    redial = Redial(random.Random(7))
    first, cap, jitter = timer("REDIAL_INITIAL"), timer("REDIAL_MAX"), timer("REDIAL_JITTER")
    waits = [redial.next() for _ in range(10)]
    for n, wait in enumerate(waits):
        base = min(first * 2 ** n, cap)
        assert base * (1 - jitter) <= wait <= base * (1 + jitter)
    assert len(set(waits[-3:])) == 3  # capped, yet not in step
    redial.reset()
    assert first * (1 - jitter) <= redial.next() <= first * (1 + jitter)


def test_a_peer_a_call_waits_on_is_probed_a_probe_interval_after_the_call(tmp_path: Path
                                                                           ) -> None:
    """Section 6.1.1: the ECHO_REQUEST probe of the next hop a forwarded call waits on is
    due PROBE_IDLE_FRACTION of the keepalive after the call went out; the node's timer
    must say so then, not only once something else ran that session."""
    net = Network(tmp_path)
    try:
        _gwa, server, client = _caller_and_server_across_two_gateways(net)  # keepalive 1 s
        net.advance(0.1)
        sent_at = net.now
        client.route(b"hi", net.now, target=server.agent_id)  # the server never answers
        net.advance(0.9)
        probes = [s.time for s in net.sent("gw-a", "gw-b") if isinstance(s.msg, EchoRequest)]
        assert probes and probes[0] == sent_at + timer("PROBE_IDLE_FRACTION")
    finally:
        net.close()
