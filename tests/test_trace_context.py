"""W3C trace context on every hop (draft-dmsc-protocol-00, Section 7.5; issue 11 items 4
and 6): the traceparent rules, the relaying machines through the in-memory harness,
and one trace across two domains of real gateways over real QUIC, recorded by the
OpenTelemetry SDK's in-memory exporter, with the gateways' log lines."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from test_harness_summary import summary_chain

from dmscproto.agent import AgentError
from dmscproto.codec.messages import (
    Discover,
    DiscoverReply,
    Message,
    RouteReply,
    RouteRequest,
    TraceReply,
    TraceRequest,
)
from dmscproto.codec.registry import ErrorCode
from dmscproto.codec.values import DiscoveryQuery, TraceContext
from dmscproto.host.config import GatewayConfig
from dmscproto.host.logs import TextFormatter
from dmscproto.protocol.events import RequestCompleted, RouteRequestReceived
from dmscproto.protocol.tracecontext import (
    TraceParent,
    hop_context,
    new_ids,
    new_span_id,
    start_trace,
)
from dmscproto.runtime.gateway import GatewayRuntime
from dmscproto.sandbox.domains import Domain, PeerSpec, write_gateway_config
from dmscproto.testing.harness import Network

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


# --- traceparent (W3C Trace Context, Section 3.2) --------------------------------------------
@pytest.mark.parametrize("text, valid", [
    (PARENT, True),
    (PARENT.upper(), False),                                   # upper-case hex
    ("ff" + PARENT[2:], False),                                # version ff
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", False),             # all-zero trace-id
    (f"00-{TRACE_ID}-{'0' * 16}-01", False),                   # all-zero parent-id
    (PARENT + "-extra", False),                                # version 00 is 55 long
    (PARENT[:-1], False),
    ("cc" + PARENT[2:] + "-what-the-future-holds", True),      # a higher version
    ("cc" + PARENT[2:] + "x", False),
    ("cc" + PARENT[2:], True),
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", False),
])
def test_traceparent_parsing(text: str, valid: bool) -> None:
    parsed = TraceParent.parse(text)
    assert (parsed is not None) is valid
    if parsed is not None:
        assert (parsed.trace_id.hex(), parsed.parent_id.hex(), parsed.flags) == (
            TRACE_ID, "00f067aa0ba902b7", 1)
        assert str(parsed) == "00" + text[2:55]  # sent on as version 00


def test_hop_context_keeps_the_trace_and_changes_the_parent() -> None:
    ids = new_ids(random.Random(1))
    span = bytes.fromhex("b7ad6b7169203331")
    out = hop_context(TraceContext("cc" + PARENT[2:] + "-x", STATE), span, ids)
    assert out == TraceContext(f"00-{TRACE_ID}-b7ad6b7169203331-01", STATE)
    assert hop_context(TraceContext(PARENT), span, ids, sampled=False) == TraceContext(
        f"00-{TRACE_ID}-b7ad6b7169203331-00")
    # unusable or absent: nothing, or a new trace without the old tracestate
    bad = TraceContext("00-xyz", STATE)
    assert hop_context(bad, span, ids) is None and hop_context(None, span, ids) is None
    new = hop_context(bad, span, ids, start=True)
    assert new is not None and new.tracestate is None
    parsed = TraceParent.parse(new.traceparent)
    assert parsed is not None and parsed.parent_id == span and parsed.trace_id.hex() != TRACE_ID


_ODD_PARENTS = [
    PARENT, PARENT.upper(), PARENT[:-2] + "00", PARENT[:-2] + "03", PARENT[:-2] + "fe",
    PARENT[:-2] + "ff", PARENT[:-2] + "0g", "ff" + PARENT[2:], "01" + PARENT[2:],
    "cc" + PARENT[2:] + "-x", "cc" + PARENT[2:] + "x", PARENT + "-x", PARENT + "\n",
    PARENT[:-1], " " + PARENT[1:], PARENT.replace("-", "_", 1),
    f"00-{'0' * 32}-00f067aa0ba902b7-01", f"00-{TRACE_ID}-{'0' * 16}-01",
    f"00-{'0' * 31}1-{'0' * 15}1-01", f"00-1{'0' * 31}-1{'0' * 15}-00",
    f"00-{TRACE_ID[:-1]}G-00f067aa0ba902b7-01", f"00-{TRACE_ID}-00f067aa0ba902bZ-01",
]


@pytest.mark.parametrize("sampled", [None, False, True])
def test_hop_context_of_any_traceparent_as_parsed_whole(sampled: bool | None) -> None:
    """hop_context's usual traceparent, kept as it is but for its parent-id and flags,
    sends on what the whole parse (TraceParent.parse) makes of it: the fast read
    against the general one, for every near-miss of its pattern and random ones."""
    rng = random.Random(7)
    texts = _ODD_PARENTS + [start_trace(rng.randbytes, sampled=rng.random() < 0.5).traceparent
                            for _ in range(200)]
    span = bytes.fromhex("b7ad6b7169203331")
    for text in texts:
        parsed = TraceParent.parse(text)
        flags = int(sampled if sampled is not None else parsed is not None and parsed.sampled)
        expected = None if parsed is None else TraceContext(
            str(parsed._replace(parent_id=span, flags=flags)), STATE)
        assert hop_context(TraceContext(text, STATE), span, new_ids(rng),
                           sampled=sampled) == expected, text


@pytest.mark.parametrize("zero", [slice(0, 16), slice(16, 24)])
def test_a_new_trace_draws_again_an_all_zero_id(zero: slice) -> None:
    """start_trace takes both ids from one draw: one that is all zero (W3C forbids
    either) is not sent, the next draw is."""
    first_bad = bytearray(range(1, 25))
    first_bad[zero] = bytes(zero.stop - zero.start)
    draws = iter([bytes(first_bad), bytes(range(1, 25))])
    trace = start_trace(lambda n: next(draws), sampled=True)
    parsed = TraceParent.parse(trace.traceparent)
    assert parsed is not None and parsed.sampled and trace.tracestate is None
    assert parsed.trace_id + parsed.parent_id == bytes(range(1, 25))


def test_a_span_id_draws_again_an_all_zero_one() -> None:
    """A hop's span id is never all zero (W3C forbids it as a parent-id): such a draw is
    not used, the next is."""
    draws = iter([0, 0, int.from_bytes(bytes(range(1, 9)), "little")])
    assert new_span_id(lambda n: next(draws) if n == 64 else -1) == bytes(range(1, 9))


# --- every hop, through the in-memory harness -------------------------------------------------
@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    n = summary_chain(tmp_path)
    yield n
    n.close()


def carried(net: Network, since: int, request: type[Message], answer: type[Message]
            ) -> list[tuple[str, str, TraceContext | None]]:
    """The hops of one request since log entry ``since`` (source, destination, TRACE_CONTEXT);
    checks that every answer carries the TRACE_CONTEXT of the request it answers on that
    link (Section 7.5)."""
    sent = net.log[since:]
    hops = [(s.source, s.dest, s.msg.trace) for s in sent if isinstance(s.msg, request)]
    for s in sent:
        if isinstance(s.msg, answer):
            [asked] = [t for src, dst, t in hops if (src, dst) == (s.dest, s.source)]
            assert s.msg.trace == asked  # type: ignore[attr-defined]
    return hops


def one_trace(hops: list[tuple[str, str, TraceContext | None]], state: str | None) -> None:
    """Every hop carries the first hop's trace-id and flags, its own parent-id, and the
    tracestate unchanged."""
    parsed = [TraceParent.parse(t.traceparent) if t else None for _, _, t in hops]
    assert all(p is not None for p in parsed), hops
    first = parsed[0]
    assert first is not None
    assert {(p.trace_id, p.flags) for p in parsed if p} == {(first.trace_id, first.flags)}
    assert len({p.parent_id for p in parsed if p}) == len(hops)
    assert {t.tracestate for _, _, t in hops if t} == {state}


def test_route_request_carries_the_trace_on_every_hop(net: Network) -> None:
    alice, carol = net.agents["alice"], net.agents["carol"]
    since = len(net.log)
    alice.route(b"hi", net.now, query=DiscoveryQuery(skills=("translate",)),
                trace=TraceContext(PARENT, STATE))
    net.pump()
    [req] = net.take("carol", RouteRequestReceived)
    carol.reply(req, b"hallo")
    net.pump()
    route = carried(net, since, RouteRequest, RouteReply)
    assert [(s, d) for s, d, _ in route] == [("alice", "gw-a"), ("gw-a", "gw-b"),
                                            ("gw-b", "gw-c"), ("gw-c", "carol")]
    one_trace(route, STATE)
    assert route[0][2] == TraceContext(PARENT, STATE)
    # the QUERY was resolved by a DISCOVER relayed along the summaries: the same trace
    resolve = carried(net, since, Discover, DiscoverReply)
    assert [(s, d) for s, d, _ in resolve] == [("gw-a", "gw-b"), ("gw-b", "gw-c")]
    one_trace([route[0], *resolve], STATE)


def test_relayed_discover_and_trace_carry_the_trace(net: Network) -> None:
    alice, carol = net.agents["alice"], net.agents["carol"]
    since = len(net.log)
    alice.discover(DiscoveryQuery(skills=("translate",)), net.now,
                   trace=TraceContext(PARENT))
    net.pump()
    hops = carried(net, since, Discover, DiscoverReply)
    assert [(s, d) for s, d, _ in hops] == [("alice", "gw-a"), ("gw-a", "gw-b"),
                                           ("gw-b", "gw-c")]
    one_trace(hops, None)
    since = len(net.log)
    alice.trace(carol.agent_id, net.now, trace=TraceContext(PARENT, STATE))
    net.pump()
    hops = carried(net, since, TraceRequest, TraceReply)
    assert [(s, d) for s, d, _ in hops] == [("alice", "gw-a"), ("gw-a", "gw-b"),
                                           ("gw-b", "gw-c")]
    one_trace(hops, STATE)


@pytest.mark.parametrize("trace", [None, TraceContext("00-not-a-traceparent", STATE)])
def test_a_request_without_a_usable_traceparent_is_sent_on_without_one(
        net: Network, trace: TraceContext | None) -> None:
    """A gateway that records nothing starts no trace, and never passes on a traceparent
    it cannot parse nor the tracestate that came with it."""
    alice, carol = net.agents["alice"], net.agents["carol"]
    alice.discover(DiscoveryQuery(skills=("translate",)), net.now)  # a route to carol
    net.pump()
    since = len(net.log)
    alice.trace(carol.agent_id, net.now, trace=trace)
    net.pump()
    hops = carried(net, since, TraceRequest, TraceReply)
    assert [t for _, _, t in hops] == [trace, None, None]
    done = net.take("alice", RequestCompleted)[-1]
    assert isinstance(done.answer, TraceReply) and done.answer.status is ErrorCode.SUCCESS


# --- one trace across two domains: real gateways, real QUIC, OpenTelemetry -------------------
@pytest.mark.oam
def test_one_trace_with_a_span_per_hop_across_two_domains(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """caller (a.example) -> gw-a -> gw-b -> responder (b.example): the SDK's CLIENT span,
    a SERVER span per gateway and the responder's SERVER span form one trace, each the
    parent of the next; the gateways log the call with its trace id, and the refused
    one by name."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    a, b = Domain.create(tmp_path, "a.example"), Domain.create(tmp_path, "b.example")
    caplog.set_level(logging.DEBUG, logger="dmsc.gateway")

    async def main() -> tuple[str, bytes, bytes]:
        gw_b = GatewayRuntime(GatewayConfig.load(write_gateway_config(b, "gw-b", peers=[
            PeerSpec(a)])), tracer_provider=provider)
        await gw_b.start()
        gw_a = GatewayRuntime(GatewayConfig.load(write_gateway_config(a, "gw-a", peers=[
            PeerSpec(b, gw_b.address)])), tracer_provider=provider)
        try:
            await gw_a.start()
            await gw_a.wait_peers(10)
            caller = a.agent("caller", gw_a.address, tracer_provider=provider)
            responder = b.agent("responder", gw_b.address, tracer_provider=provider)
            responder.serve(lambda payload, _r: b"re: " + payload)
            async with caller, responder:
                await responder.register(skills=["echo"])
                while gw_a.core is None or responder.agent_id not in gw_a.core:
                    await asyncio.sleep(0.02)
                exporter.clear()
                assert await caller.call(responder.agent_id, b"hi") == b"re: hi"
                trace_id = f"{exporter.get_finished_spans()[0].context.trace_id:032x}"
                with pytest.raises(AgentError) as refused:
                    await caller.call(bytes(16), b"nobody")
                assert refused.value.code is ErrorCode.NO_ROUTE
                with pytest.raises(AgentError):  # another agent's record
                    await caller.register(signed=responder.signed)
                return trace_id, caller.agent_id, responder.agent_id
        finally:
            await gw_a.stop()
            await gw_b.stop()

    trace_id, caller_id, responder_id = asyncio.run(asyncio.wait_for(main(), 30))
    spans = [s for s in exporter.get_finished_spans()
             if s.context is not None and f"{s.context.trace_id:032x}" == trace_id]
    chain = sorted(spans, key=lambda s: s.start_time or 0)

    def who(s: ReadableSpan) -> tuple[object, ...]:
        attrs = s.attributes or {}
        return (s.name, s.kind, attrs.get("dmsc.gateway") or attrs.get("dmsc.agent"))

    assert [who(s) for s in chain] == [
        ("dmsc ROUTE_REQUEST", SpanKind.CLIENT, "dmsc://a.example/caller"),
        ("dmsc ROUTE_REQUEST", SpanKind.SERVER, "gw-a"),
        ("dmsc ROUTE_REQUEST", SpanKind.SERVER, "gw-b"),
        ("dmsc ROUTE_REQUEST", SpanKind.SERVER, "dmsc://b.example/responder")]
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and parent.context is not None
        assert child.parent.span_id == parent.context.span_id
    assert chain[1].attributes is not None and chain[1].attributes["dmsc.status"] == "SUCCESS"
    # the logs: the routed call at both gateways with the trace id, the refusal by name
    calls = [r for r in caplog.records if r.getMessage() == "routed call"
             and r.dmsc["trace_id"] == trace_id]  # type: ignore[attr-defined]
    assert len(calls) == 2
    assert all(r.dmsc["source"] == caller_id.hex()  # type: ignore[attr-defined]
               and r.dmsc["target"] == responder_id.hex()  # type: ignore[attr-defined]
               and r.dmsc["latency_ms"] > 0 for r in calls)  # type: ignore[attr-defined]
    refusals = [TextFormatter().format(r) for r in caplog.records
                if r.getMessage() == "request refused" and r.levelno == logging.INFO]
    assert len(refusals) == 2
    assert "request=ROUTE_REQUEST status=NO_ROUTE" in refusals[0]
    assert "request=REGISTER status=" in refusals[1]


#: ``dmsc`` with an OpenTelemetry SDK whose spans go to the file named by the first
#: argument, one JSON object per line (what ``opentelemetry-instrument`` sets up with an
#: exporter).
SPANS_CLI = """import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
out = open(sys.argv.pop(1), "a", encoding="utf-8")
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
    out=out, formatter=lambda span: span.to_json(indent=None) + "\\n")))
trace.set_tracer_provider(provider)
from dmscproto.cli import main
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.oam
def test_gateway_processes_record_a_span_per_hop(tmp_path: Path) -> None:
    """Two ``dmsc gateway`` processes of two domains: a call with the caller's own
    traceparent gives a span at gw-a (its parent: the caller's parent-id), one at gw-b
    (its parent: gw-a's span) and the responder's (its parent: gw-b's span)."""
    a, b = Domain.create(tmp_path, "a.example"), Domain.create(tmp_path, "b.example")
    ports = {"gw-a": free_port(), "gw-b": free_port()}
    configs = {
        "gw-b": write_gateway_config(b, "gw-b", listen=("127.0.0.1", ports["gw-b"]),
                                     peers=[PeerSpec(a)]),
        "gw-a": write_gateway_config(a, "gw-a", listen=("127.0.0.1", ports["gw-a"]),
                                     peers=[PeerSpec(b, ("127.0.0.1", ports["gw-b"]))])}
    logs = {n: tmp_path / f"{n}.log" for n in configs}
    procs = [subprocess.Popen([sys.executable, "-c", SPANS_CLI, str(tmp_path / f"{n}.json"),
                               "gateway", "--config", str(c)], stderr=logs[n].open("wb"))
             for n, c in configs.items()]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sent = TraceContext(PARENT, STATE)

    async def main() -> None:
        caller = a.agent("caller", ("127.0.0.1", ports["gw-a"]))
        responder = b.agent("responder", ("127.0.0.1", ports["gw-b"]),
                            tracer_provider=provider)
        responder.serve(lambda payload, _r: payload)
        while not all("gateway listening" in log.read_text() for log in logs.values()):
            await asyncio.sleep(0.05)
        async with caller, responder:
            await responder.register(skills=["echo"])
            while True:  # until gw-a has learned the responder's record
                try:
                    assert await caller.call(responder.agent_id, b"hi", trace=sent) == b"hi"
                    return
                except AgentError as exc:
                    assert exc.code is ErrorCode.NO_ROUTE
                    await asyncio.sleep(0.1)

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    spans = {}
    for name in configs:
        lines = (tmp_path / f"{name}.json").read_text(encoding="utf-8").splitlines()
        [ok] = [s for s in map(json.loads, lines) if s["context"]["trace_id"] == "0x" + TRACE_ID
                and s["attributes"]["dmsc.status"] == "SUCCESS"]
        assert (ok["name"], ok["kind"], ok["attributes"]["dmsc.gateway"]) == (
            "dmsc ROUTE_REQUEST", "SpanKind.SERVER", name)
        state = ok["context"]["trace_state"]  # carried unchanged, in order
        assert 0 <= state.find("key=rojo, value=00f067aa0ba902b7") \
            < state.find("key=congo, value=t61rcWkgMzE")
        spans[name] = ok
    assert spans["gw-a"]["parent_id"] == "0x00f067aa0ba902b7"
    assert spans["gw-b"]["parent_id"] == spans["gw-a"]["context"]["span_id"]
    [served] = [s for s in exporter.get_finished_spans()
                if s.context is not None and f"{s.context.trace_id:032x}" == TRACE_ID]
    assert served.parent is not None
    assert f"0x{served.parent.span_id:016x}" == spans["gw-b"]["context"]["span_id"]
