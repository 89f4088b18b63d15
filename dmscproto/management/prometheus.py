"""``/metrics``: the gateway's counters in the Prometheus text exposition format
(draft-dmsc-yang-00, Section 6), built with ``prometheus-client`` on each scrape.

:class:`GatewayCollector` turns the plain counters of :class:`~.metrics.GatewayMetrics`
and the runtime's live state (records, sessions, connections, handshakes) into metric
families when scraped; nothing of ``prometheus-client`` runs per PDU.  Names follow the
Prometheus conventions: ``dmsc_`` prefix, base units (``_seconds``), ``_total`` for
counters.  :data:`METRICS` lists every family name (the Grafana dashboard's test checks
its queries against it).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from ..codec.registry import SESSION_MESSAGES, ErrorCode
from ..protocol.peering import PeerState
from .metrics import Histogram, message_counts
from .state import ManagedGateway, peer_entries

#: Every metric family the gateway exposes (process_* aside), with its type.
METRICS = {
    "dmsc_gateway_info": "gauge",
    "dmsc_pdus_received_total": "counter",
    "dmsc_pdus_sent_total": "counter",
    "dmsc_errors_received_total": "counter",
    "dmsc_errors_sent_total": "counter",
    "dmsc_routed_calls_total": "counter",
    "dmsc_routed_call_duration_seconds": "histogram",
    "dmsc_discovery_duration_seconds": "histogram",
    "dmsc_records": "gauge",
    "dmsc_agents_connected": "gauge",
    "dmsc_peer_sessions": "gauge",
    "dmsc_peer_pdus_received_total": "counter",
    "dmsc_peer_pdus_sent_total": "counter",
    "dmsc_peer_records_received_total": "counter",
    "dmsc_peer_records_accepted_total": "counter",
    "dmsc_peer_records_refused_total": "counter",
    "dmsc_peer_digest_duration_seconds": "summary",
    "dmsc_peer_uptime_seconds": "gauge",
    "dmsc_connections": "gauge",
    "dmsc_handshakes_pending": "gauge",
    "dmsc_event_loop_lag_seconds": "gauge",
    "dmsc_event_loop_lag_max_seconds": "gauge",
}


def _code(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:04x}"


def _histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[])
    family.add_metric([], [(f"{b:g}" if b != float("inf") else "+Inf", n)
                           for b, n in h.cumulative()], h.total)
    return family


class GatewayCollector(Collector):
    """The metric families of one running gateway, built on each scrape."""

    def __init__(self, rt: ManagedGateway) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        rt = self.rt
        m = rt.metrics
        if m is None or rt.node is None or rt.core is None:
            return
        info = GaugeMetricFamily("dmsc_gateway_info", "The gateway's identity (value 1).",
                                 labels=["gateway", "domain", "gateway_id"])
        info.add_metric([rt.identity.uri, rt.config.domain, rt.gateway_id.hex()], 1)
        yield info
        pdus = {d: CounterMetricFamily(f"dmsc_pdus_{d}", f"PDUs {d}, by message type and "
                                       "transport.", labels=["type", "transport"])
                for d in ("received", "sent")}
        errors = {d: CounterMetricFamily(f"dmsc_errors_{d}", f"Errors {d} (a STATUS other "
                                         "than SUCCESS, ERROR, NOTIFY), by code.",
                                         labels=["code", "transport"])
                  for d in ("received", "sent")}
        for transport, t in sorted(m.totals().items()):
            for d, counts, errs in (("received", t.inp, t.errors_in),
                                    ("sent", t.out, t.errors_out)):
                for mt, n in message_counts(counts):
                    pdus[d].add_metric([mt.name, transport], n)
                for code, n in sorted(errs.items()):
                    errors[d].add_metric([_code(code), transport], n)
        yield from pdus.values()
        yield from errors.values()
        calls = CounterMetricFamily("dmsc_routed_calls", "ROUTE_REQUESTs answered, by the "
                                    "answer's status.", labels=["status"])
        for code, n in sorted(m.routed_by_status.items()):
            calls.add_metric([_code(code)], n)
        yield calls
        yield _histogram("dmsc_routed_call_duration_seconds", "Time from a ROUTE_REQUEST "
                         "received to its answer sent.", m.routed_calls)
        yield _histogram("dmsc_discovery_duration_seconds", "Time from a DISCOVER received "
                         "to its answer sent.", m.discoveries)
        local = len(rt.core.agent_ids(local_only=True))
        records = GaugeMetricFamily("dmsc_records", "Records held, by table.",
                                    labels=["table"])
        records.add_metric(["local"], local)
        records.add_metric(["learned"], len(rt.core) - local)
        yield records
        yield GaugeMetricFamily("dmsc_agents_connected", "Agents registered over a live "
                                "association.", value=len(rt.node.registration.handles))
        yield from self._peers()
        connections = GaugeMetricFamily("dmsc_connections", "Associations (agents and "
                                        "peers), by transport.", labels=["transport"])
        pending = GaugeMetricFamily("dmsc_handshakes_pending", "Handshakes in progress on "
                                    "a listener, by transport.", labels=["transport"])
        by_transport: dict[str, int] = {}
        for name in rt.transports.values():
            by_transport[name] = by_transport.get(name, 0) + 1
        for name, server in rt.servers.items():
            by_transport.setdefault(name, 0)
            waiting = getattr(server, "pending", None)
            if isinstance(waiting, int):
                pending.add_metric([name], waiting)
        for name, n in sorted(by_transport.items()):
            connections.add_metric([name], n)
        yield connections
        yield pending
        lag = rt.loop_lag
        yield GaugeMetricFamily("dmsc_event_loop_lag_seconds", "How late the event loop "
                                "last woke a sleeping probe.", value=lag.last if lag else 0.0)
        yield GaugeMetricFamily("dmsc_event_loop_lag_max_seconds", "The worst event-loop "
                                "lag seen.", value=lag.worst if lag else 0.0)

    def _peers(self) -> Iterator[Metric]:
        rt = self.rt
        assert rt.metrics is not None
        states = dict.fromkeys(PeerState, 0)
        labels = ["peer", "domain"]
        received = CounterMetricFamily("dmsc_peer_pdus_received", "Peer-session PDUs "
                                       "received (UPDATE, DIGEST, SYNC_...), by peer.",
                                       labels=[*labels, "type"])
        sent = CounterMetricFamily("dmsc_peer_pdus_sent", "Peer-session PDUs sent, by "
                                   "peer.", labels=[*labels, "type"])
        records = {what: CounterMetricFamily(f"dmsc_peer_records_{what}", f"ADVERTISE "
                                             f"entries {what}, by peer.", labels=labels)
                   for what in ("received", "accepted", "refused")}
        digest = SummaryMetricFamily("dmsc_peer_digest_duration_seconds", "Time spent on "
                                     "the DIGESTs received, by peer.", labels=labels)
        uptime = GaugeMetricFamily("dmsc_peer_uptime_seconds", "How long the session has "
                                   "been established, by peer.", labels=labels)
        now = rt.metrics.clock()
        for e in peer_entries(rt):
            states[PeerState(e.session.state) if e.session is not None
                   else PeerState.IDLE] += 1
            s = rt.metrics.links.get(e.handle) if e.handle is not None else None
            if s is None:
                continue
            domain = e.config.domain if e.config is not None else (
                e.session.peer_domain if e.session is not None else None) or ""
            key = [e.name, domain]
            for family, counts in ((received, s.inp), (sent, s.out)):
                for mt, n in message_counts(counts):
                    if mt in SESSION_MESSAGES:
                        family.add_metric([*key, mt.name], n)
            records["received"].add_metric(key, s.records_received)
            records["accepted"].add_metric(key, s.records_accepted)
            records["refused"].add_metric(key, s.records_refused)
            digest.add_metric(key, s.digests, s.digest_seconds)
            if s.established_at is not None:
                uptime.add_metric(key, now - s.established_at)
        sessions = GaugeMetricFamily("dmsc_peer_sessions", "Peers, by session state.",
                                     labels=["state"])
        for state, n in states.items():
            sessions.add_metric([state.name], n)
        yield sessions
        yield received
        yield sent
        yield from records.values()
        yield digest
        yield uptime


def registry(rt: ManagedGateway) -> CollectorRegistry:
    """A registry of the gateway's families and the process's (CPU, memory, files)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(rt))
    ProcessCollector(registry=reg)
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The text exposition format (version 0.0.4) of a registry."""
    return generate_latest(reg)

