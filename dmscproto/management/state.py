"""The live state of a running gateway as RFC 7951 JSON of the ``ietf-dmsc`` module
(draft-dmsc-yang-00, Section 3).

:class:`StateDocument` reads a running gateway through the :class:`ManagedGateway` port
(its configuration, node, core, listeners and :class:`~.metrics.GatewayMetrics`) and builds
the ``dmsc`` container or one of its children on demand; nothing is cached, so every
answer is the state at that moment.  The records list yields to the event loop every
:data:`RECORDS_PER_TURN` records, so that a gateway holding many keeps routing while an
operator reads them (each is read as it is at its turn).  Peers are the ``[[peers]]``
entries, named by :func:`peer_names`, each with the session matched to it the way the
runtime picks a peer's timers, plus any session no entry claims (named by its gateway's
URI).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from ..codec.registry import TIMERS, ErrorCode, timer
from ..codec.values import ExportPolicy
from ..gateway.core import GatewayCore
from ..gateway.node import GatewayNode
from ..host.config import GatewayConfig, PeerConfig
from ..host.pump import Association
from ..host.transports import Listener
from ..protocol.machine import Handle
from ..protocol.peering import PeerSession, PeerState
from ..security.ca import Identity
from ..transport.tls import TlsIdentity
from .metrics import GatewayMetrics, LinkStats, message_counts

#: The module's name, the prefix of top-level members (RFC 7951, Section 4).
MODULE = "ietf-dmsc"
#: Records converted between two yields to the event loop.
RECORDS_PER_TURN = 500
#: The key leaf of each list of the module (RFC 8040, Section 3.5.3).
LIST_KEYS = {"listener": "transport", "export-policy": "name", "peer": "name",
             "record": "agent-id", "route": "peer-gateway-id", "refusal": "code",
             "message": "type"}
#: Timers whose value in force is the gateway's configuration, not the default.
_CONFIGURED = {"HOLD_TIME": lambda rt: rt.config.hold_time,
               "MIN_LEASE": lambda rt: rt.config.min_lease,
               "MAX_LEASE": lambda rt: rt.config.max_lease,
               "RESTART_GRACE": lambda rt: rt.config.restart_grace}


def _now(build: Callable[[], dict[str, Any]]) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A child built at once, as an awaitable like the records'."""
    async def built() -> dict[str, Any]:
        return build()
    return built


def yang_enum(member: Enum) -> str:
    """A registry or state member as the module's enum: lower case, '-' for '_'."""
    return yang_name(member.name)


def yang_name(name: str) -> str:
    """A registry name (``HOLD_TIME``) as the module names it (``hold-time``)."""
    return name.lower().replace("_", "-")


def dmsc_id(value: bytes) -> str:
    """A 16-octet ID as the module's ``dmsc-id`` (a ``yang:hex-string``)."""
    return ":".join(f"{b:02x}" for b in value)


def date_and_time(epoch: float) -> str:
    """Seconds since the epoch as ``yang:date-and-time`` (UTC)."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def error_code(code: int) -> str | int:
    """An ``error-code``: the registered name, else the number."""
    try:
        return yang_enum(ErrorCode(code))
    except ValueError:
        return code


def decimal3(value: float) -> str:
    """A ``decimal64`` with three fraction digits, as RFC 7951 writes it (a string)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def peer_names(peers: Sequence[PeerConfig]) -> list[str]:
    """The names of the ``[[peers]]`` entries: ``host:port`` of a dialled peer, the
    domain of an accepted one, with ``#N`` (its position) when that is not unique."""
    plain = [f"{p.address[0]}:{p.address[1]}" if p.address else p.domain for p in peers]
    return [n if plain.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(plain)]


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """A peer of the document: a configured entry, its session's, or both."""

    name: str
    config: PeerConfig | None
    handle: Handle | None
    session: PeerSession | None


def peer_entries(rt: ManagedGateway) -> list[PeerEntry]:
    """Every configured peer, then every session no configured entry claims."""
    configs = rt.config.peers
    claimed: dict[int, tuple[Handle, PeerSession]] = {}
    unclaimed: list[PeerEntry] = []
    sessions = dict(rt.node.sessions) if rt.node is not None else {}
    for handle, session in sessions.items():
        chosen = rt.peer_config(handle)
        at = next((i for i, p in enumerate(configs) if p is chosen), None)
        if at is not None and at not in claimed:
            claimed[at] = (handle, session)
        else:
            unclaimed.append(PeerEntry(_uri(handle), None, handle, session))
    entries = [PeerEntry(name, p, *claimed.get(i, (None, None)))
               for i, (name, p) in enumerate(zip(peer_names(configs), configs, strict=True))]
    return entries + sorted(unclaimed, key=lambda e: e.name)


def _uri(handle: Handle) -> str:
    return handle.identity.uri if isinstance(handle, Association) and handle.identity \
        else repr(handle)


class Bound(Protocol):
    """A listener that knows its address."""

    @property
    def address(self) -> tuple[str, int]: ...


class LagProbe(Protocol):
    """An event-loop probe: the last and the longest stall seen (seconds)."""

    @property
    def last(self) -> float: ...

    @property
    def worst(self) -> float: ...


class ManagedGateway(Protocol):
    """What the management interface reads of a running gateway (the runtime's
    :class:`~dmscproto.runtime.gateway.GatewayRuntime` is one)."""

    @property
    def config(self) -> GatewayConfig: ...

    @property
    def name(self) -> str: ...

    @property
    def identity(self) -> Identity: ...

    @property
    def gateway_id(self) -> bytes: ...

    @property
    def tls(self) -> TlsIdentity: ...

    @property
    def core(self) -> GatewayCore | None: ...

    @property
    def node(self) -> GatewayNode | None: ...

    @property
    def metrics(self) -> GatewayMetrics | None: ...

    @property
    def servers(self) -> dict[str, Listener]: ...

    @property
    def transports(self) -> dict[Handle, str]: ...

    @property
    def management(self) -> Bound | None: ...

    @property
    def loop_lag(self) -> LagProbe | None: ...

    def peer_config(self, handle: Handle) -> PeerConfig | None: ...


class StateDocument:
    """The ``ietf-dmsc:dmsc`` container of one running gateway (module docstring)."""

    def __init__(self, rt: ManagedGateway, clock: Callable[[], float] = time.time) -> None:
        self.rt = rt
        self.clock = clock
        self.children: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "gateway": _now(self.gateway), "timers": _now(self.timers),
            "policies": _now(self.policies), "peers": _now(self.peers),
            "records": self.records, "statistics": _now(self.statistics)}

    async def document(self) -> dict[str, Any]:
        """The whole container, as ``{"ietf-dmsc:dmsc": {...}}``."""
        return {f"{MODULE}:dmsc": {name: await build()
                                   for name, build in self.children.items()}}

    # --- children ------------------------------------------------------------------------
    def gateway(self) -> dict[str, Any]:
        rt, c = self.rt, self.rt.config
        listeners = []
        for name, (host, port) in c.listeners:
            bound = rt.servers[name].address if name in rt.servers else None
            listeners.append({"transport": name, "address": _ip(host, bound),
                              "port": port, **({"bound-port": bound[1]} if bound else {})})
        out: dict[str, Any] = {"name": rt.name, "domain": c.domain,
                               "gateway-id": dmsc_id(rt.gateway_id),
                               "require-tokens": c.require_tokens, "lab-mode": c.lab,
                               "listener": listeners}
        if c.management is not None:
            bound = rt.management.address if rt.management is not None else None
            out["management"] = {"address": _ip(c.management[0], bound),
                                 "port": c.management[1],
                                 **({"bound-port": bound[1]} if bound else {})}
        return out

    def timers(self) -> dict[str, Any]:
        return {yang_name(t.name): decimal3(
            _CONFIGURED[t.name](self.rt) if t.name in _CONFIGURED else timer(t.name))
            for t in TIMERS}

    def policies(self) -> dict[str, Any]:
        entries = peer_entries(self.rt)
        return {"export-policy": [_policy(e.name, e.config.export) for e in entries
                                  if e.config is not None and e.config.export is not None]}

    def peers(self) -> dict[str, Any]:
        return {"peer": [self._peer(e) for e in peer_entries(self.rt)]}

    async def records(self) -> dict[str, Any]:
        rt = self.rt
        if rt.core is None or rt.node is None:
            return {}
        core, handles = rt.core, rt.node.registration.handles
        out = []
        for n, aid in enumerate(core.agent_ids()):
            if n and n % RECORDS_PER_TURN == 0:
                await asyncio.sleep(0)
            rec = core.get(aid)
            if rec is None:
                continue
            item: dict[str, Any] = {"agent-id": dmsc_id(aid), "uri": rec.agent_uri,
                                    "origin": "local" if rec.local else "learned",
                                    "version": str(rec.version)}
            if rec.local:
                item["lease-expires"] = date_and_time(rec.expires_at)
                item["connected"] = aid in handles
            best = core.routes.best(aid)
            routes = [{"peer-gateway-id": dmsc_id(r.next_hop),
                       "path": [dmsc_id(g) for g in r.path], "best": r == best}
                      for r in core.routes.routes(aid) if r.next_hop is not None]
            if routes:
                item["route"] = routes
            out.append(item)
        return {"record": out}

    def statistics(self) -> dict[str, Any]:
        m = self.rt.metrics
        if m is None:
            return {}
        sent, received = m.errors()
        refusals = [{"code": error_code(code),
                     **({"sent": str(sent[code])} if code in sent else {}),
                     **({"received": str(received[code])} if code in received else {})}
                    for code in sorted({*sent, *received})]
        return {"discontinuity-time": date_and_time(m.started), "refusal": refusals}

    # --- one peer ------------------------------------------------------------------------
    def _peer(self, e: PeerEntry) -> dict[str, Any]:
        out: dict[str, Any] = {"name": e.name}
        p = e.config
        if p is not None:
            out.update(_peer_config(p))
            if p.export is not None:
                out["export-policy"] = e.name
        elif e.session is not None and e.session.peer_domain is not None:
            out["domain"] = e.session.peer_domain
        elif isinstance(e.handle, Association) and e.handle.identity is not None:
            out["domain"] = e.handle.identity.domain
        s = e.session
        out["session-state"] = yang_enum(s.state if s is not None else PeerState.IDLE)
        if s is not None and s.peer_id is not None:
            out["gateway-id"] = dmsc_id(s.peer_id)
        m = self.rt.metrics
        stats = m.links.get(e.handle) if m is not None and e.handle is not None else None
        if stats is not None:
            out.update(self._session_stats(stats))
        return out

    def _session_stats(self, s: LinkStats) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if s.established_at is not None:
            out["negotiated-hold-time"] = s.hold_time
            out["established-time"] = date_and_time(s.established_at)
            out["uptime"] = str(max(0, int(self.clock() - s.established_at)))
        if s.last_error is not None:
            code, direction, at, diagnostic = s.last_error
            out["last-error"] = {"code": error_code(code), "direction": direction,
                                 "time": date_and_time(at),
                                 **({"diagnostic": diagnostic} if diagnostic else {})}
        types = sorted({m for m, _ in message_counts(s.inp)}
                       | {m for m, _ in message_counts(s.out)})
        out["statistics"] = {
            "discontinuity-time": date_and_time(s.since),
            "message": [{"type": yang_enum(t), "in": str(s.inp[t]), "out": str(s.out[t])}
                        for t in types],
            "records-received": str(s.records_received),
            "records-accepted": str(s.records_accepted),
            "records-refused": str(s.records_refused)}
        return out


def _ip(host: str, bound: tuple[str, int] | None) -> str:
    """An ``inet:ip-address``: the configured host if it is one, else the bound one."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return bound[0] if bound is not None else "0.0.0.0"


def _policy(name: str, export: ExportPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    for key, values in (("include-tag", export.include_tags),
                        ("exclude-tag", export.exclude_tags),
                        ("include-agent", export.include_agents)):
        if values:
            out[key] = list(values)
    return out


def _peer_config(p: PeerConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"domain": p.domain}
    if p.address is not None:
        out["address"], out["port"] = p.address
    if p.transport is not None:
        out["transport"] = p.transport
    if p.hold_time is not None:
        out["hold-time"] = p.hold_time
    out["replication"] = p.replication
    imports = {k: list(v) for k, v in (("domain", p.import_domains),
                                       ("capability", p.import_capabilities),
                                       ("caller", p.import_callers)) if v}
    if imports:
        out["import"] = imports
    if p.transit is True:
        out["transit"] = {"all-domains": True}
    elif p.transit:
        out["transit"] = {"domain": list(p.transit)}
    return out
