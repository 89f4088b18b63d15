"""Routing table: best-route choice and forwarding decisions (Section 5.3)."""

from __future__ import annotations

from dmscproto.codec.registry import ErrorCode
from dmscproto.gateway.routing import (
    MAX_PATH,
    DeliverLocal,
    Forward,
    Reject,
    Route,
    RoutingTable,
)

ME, A, B, C = (bytes([n]) * 16 for n in (0xEE, 0x0A, 0x0B, 0x0C))
AGENT, OTHER = b"\x01" * 16, b"\x02" * 16


def test_best_route_preference() -> None:
    rt = RoutingTable()
    assert rt.best(AGENT) is None
    long_via_a = Route(A, (C, B, A), 1, C)
    short_via_c = Route(C, (B, C), 1, B)
    same_len_via_b = Route(B, (C, B), 1, C)
    assert rt.add(AGENT, long_via_a)
    assert rt.add(AGENT, short_via_c)            # shorter path wins
    assert rt.best(AGENT) == short_via_c
    assert rt.add(AGENT, same_len_via_b)         # same length: lower next hop wins
    assert rt.best(AGENT) == same_len_via_b
    assert not rt.add(AGENT, long_via_a)         # re-adding a worse route changes nothing
    assert rt.add_local(AGENT, 1)                # local beats everything
    assert rt.best(AGENT) == Route(None, (), 1, None)
    assert [r.next_hop for r in rt.routes(AGENT)] == [None, B, C, A]
    assert rt.remove(AGENT, None)                # back to the best remote route
    assert rt.best(AGENT) == same_len_via_b
    assert not rt.remove(AGENT, A)               # not the best: best unchanged
    assert via(rt, C) == [AGENT] and via(rt, A) == [] and rt.route_via(AGENT, C) == short_via_c
    rt.add(OTHER, Route(C, (C,), 2, C))
    assert sorted(via(rt, C)) == sorted([AGENT, OTHER])
    assert rt.remove_agent(AGENT) and rt.best(AGENT) is None and AGENT not in rt
    assert via(rt, C) == [OTHER] and via(rt, B) == [] and rt.route_via(AGENT, C) is None


def via(rt: RoutingTable, peer: bytes) -> list[bytes]:
    return [a for chunk in rt.via_chunks(peer) for a in chunk]


def test_local_delivery() -> None:
    rt = RoutingTable()
    rt.add_local(AGENT, 3)
    assert rt.decide(ME, AGENT, 8, (A,)) == DeliverLocal(AGENT)
    # delivery consumes no hop: hop limit 0 still reaches a local agent
    assert rt.decide(ME, AGENT, 0, (A, B)) == DeliverLocal(AGENT)


def test_forward_decrements_and_appends() -> None:
    rt = RoutingTable()
    rt.add(AGENT, Route(B, (B,), 1, B))
    assert rt.decide(ME, AGENT, 8, (A,)) == Forward(B, 7, (A, ME))
    assert rt.decide(ME, AGENT, 1, ()) == Forward(B, 0, (ME,))


def test_hop_limit_checked_before_decrement() -> None:
    rt = RoutingTable()
    rt.add(AGENT, Route(B, (B,), 1, B))
    assert rt.decide(ME, AGENT, 0, (A,)) == Reject(ErrorCode.HOP_LIMIT_EXCEEDED)
    full = tuple(i.to_bytes(16, "big") for i in range(MAX_PATH))
    assert rt.decide(ME, AGENT, 8, full) == Reject(ErrorCode.HOP_LIMIT_EXCEEDED)


def test_loops_and_unknown_targets() -> None:
    rt = RoutingTable()
    rt.add(AGENT, Route(B, (B,), 1, B))
    rt.add_local(OTHER, 1)
    assert rt.decide(ME, AGENT, 8, (A, ME)) == Reject(ErrorCode.LOOP_DETECTED)
    assert rt.decide(ME, OTHER, 8, (ME,)) == Reject(ErrorCode.LOOP_DETECTED)
    assert rt.decide(ME, b"\x09" * 16, 8, ()) == Reject(ErrorCode.NO_ROUTE)
    # the only next hop already carried the request: sending it back would loop
    assert rt.decide(ME, AGENT, 8, (B,)) == Reject(ErrorCode.LOOP_DETECTED)
    # an alternative next hop avoids the loop even though it is not the best route
    rt.add(AGENT, Route(C, (A, C), 1, A))
    assert rt.decide(ME, AGENT, 8, (B,)) == Forward(C, 7, (B, ME))


def test_the_inputs_of_a_routed_call_are_made_by_their_slot_stores() -> None:
    """The node's next hop (node_ports) and a relay's RouteLocal (routing) are made by
    the constructors slot_stores gave them (test_protocol_machines checks those against
    the frozen dataclass's): the fields where they belong, the next hop's ``local`` as
    decided."""
    from dmscproto.codec.messages import RouteRequest
    from dmscproto.protocol.ports import NextHop
    from dmscproto.protocol.routing import RouteLocal

    for cls in (NextHop, RouteLocal):  # slot_stores' __init__ (its setters), not the frozen one
        assert "_set_dest" in cls.__init__.__code__.co_freevars
    dest = object()
    for local in (True, False):
        made = NextHop(dest, 7, (A, B), local)
        assert (made.dest, made.hop_limit, made.path, made.local) == (dest, 7, (A, B), local)
    assert NextHop(dest, 7, (A, B)).local is False
    request = RouteRequest(transaction_id=9, source_agent=OTHER, target_agent=AGENT,
                           hop_limit=8, path=(), payload=b"x")
    inp = RouteLocal(dest, request)
    assert inp.dest is dest and inp.request is request
