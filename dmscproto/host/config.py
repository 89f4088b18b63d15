"""Configuration files (TOML) for ``dmsc gateway --config FILE`` and ``dmsc agent
--config FILE``.

Relative paths are relative to the file's directory.  Every error names the key it is
about (``peers[1].address``) and what is wrong, as :class:`ConfigError`.  The keys are
declared once, in :mod:`.schema`; a gateway's file (:class:`GatewayConfig`)::

{gateway}

An agent's file (:class:`AgentConfig`)::

{agent}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codec.registry import limit
from . import schema
from .reader import ConfigError, PeerConfig, Reader, TransitConfig, lab_only, read_toml

__all__ = ["AgentConfig", "ConfigError", "GatewayConfig", "PeerConfig", "TransitConfig"]


def _indented(text: str) -> str:
    return "\n".join(f"    {line}" if line else "" for line in text.split("\n"))


__doc__ = (__doc__ or "").format(gateway=_indented(schema.document(schema.GATEWAY_FILE)),
                                 agent=_indented(schema.document((schema.AGENT,))))


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A validated gateway configuration (module docstring)."""

    domain: str
    listen: tuple[str, int]
    certificate: Path
    key: Path
    trust_anchors: tuple[Path, ...]
    store: Path
    name: str | None
    #: The primary listener's transport (``listen``); peers are dialled over it by default.
    transport: str
    require_tokens: bool
    peers: tuple[PeerConfig, ...]
    #: Further listeners, (transport, address), each on another transport (Section 9).
    also_listen: tuple[tuple[str, tuple[str, int]], ...]
    min_lease: int
    max_lease: int
    hold_time: int
    keepalive: float | None
    restart_grace: float
    log_format: str
    log_level: str
    pcap: Path | None
    keylog: Path | None
    crl: tuple[str, ...]
    require_origin: bool
    #: Lab mode: cleartext UDP everywhere, identities from the protocol (runtime.lab).
    lab: bool
    transit: TransitConfig
    #: Resource limits set in ``[limits]`` (Section 10.7), by registry name.
    resource_limits: tuple[tuple[str, float], ...]
    #: The management listener (``[management] listen``; None: off).
    management: tuple[str, int] | None
    source: Path | None = field(default=None, compare=False)

    def limit(self, name: str) -> float:
        """A resource limit (codec.registry.LIMITS): the configured value or the default."""
        return dict(self.resource_limits).get(name, limit(name))

    @property
    def listeners(self) -> tuple[tuple[str, tuple[str, int]], ...]:
        """Every listener, (transport, address), the primary one first."""
        return ((self.transport, self.listen), *self.also_listen)

    def warnings(self) -> list[str]:
        """What is valid but probably not meant (``dmsc gateway`` logs these at start
        and ``--check`` prints them)."""
        return [f"peers[{n}] ({p.domain}) has no [peers.export] table: none of our "
                "records are shown to it (add an empty table to show every one)"
                for n, p in enumerate(self.peers) if p.export is None]

    @classmethod
    def load(cls, path: str | Path) -> GatewayConfig:
        """Read and check a TOML file; :class:`ConfigError` on any problem."""
        path = Path(path)
        data = read_toml(path)
        return cls.from_dict(data, base=path.parent, source=path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Path = Path("."),
                  source: Path | None = None) -> GatewayConfig:
        r = Reader(source, base)
        r.only(data, "", schema.GATEWAY_TOP)
        gw = r.table(data, "gateway", required=True)
        r.only(gw, "gateway", schema.GATEWAY.keys)
        limits = r.section(data, schema.LIMITS_TABLE)
        log = r.section(data, schema.LOG)
        capture = r.section(data, schema.CAPTURE)
        security = r.section(data, schema.SECURITY)
        management = r.section(data, schema.MANAGEMENT)
        min_lease = r.value(limits, schema.LIMITS_TABLE, "min_lease", int)
        max_lease = r.value(limits, schema.LIMITS_TABLE, "max_lease", int)
        if min_lease <= 0:
            raise r.error("limits.min_lease", "must be a positive number of seconds")
        if max_lease < min_lease:
            raise r.error("limits.max_lease", f"must be at least min_lease ({min_lease})")
        hold_time, keepalive = r.session_timers(
            limits, "limits", r.value(limits, schema.LIMITS_TABLE, "hold_time", int), None)
        restart_grace = r.seconds_value(limits, schema.LIMITS_TABLE, "restart_grace")
        log_format = r.value(log, schema.LOG, "format", str)
        if log_format not in ("text", "json"):
            raise r.error("log.format", f"must be \"text\" or \"json\", not {log_format!r}")
        log_level = r.value(log, schema.LOG, "level", str).lower()
        if log_level not in ("debug", "info", "warning", "error"):
            raise r.error("log.level", "must be one of debug, info, warning, error")
        anchors = r.get(gw, "gateway", "trust_anchors", list, [])
        if not anchors:
            raise r.error("gateway.trust_anchors",
                          "missing or empty: list the domain authority's certificate (PEM)")
        domain = r.domain(gw, "gateway.domain")
        listeners = r.listeners(gw)
        transport = listeners[0][0]
        peers = tuple(r.peer(p, i, hold_time, keepalive)
                      for i, p in enumerate(r.get(data, "", "peers", list, [])))
        modes: dict[str, str] = {}
        for i, peer in enumerate(peers):
            if peer.domain != domain and peer.anchor is None:
                raise r.error(f"peers[{i}].anchor", f"missing: the authority certificate of "
                              f"{peer.domain} is needed to authenticate its gateways")
            if peer.domain == domain and peer.replication != "full":
                raise r.error(f"peers[{i}].replication", "the gateways of our own domain "
                              "always get records (\"full\")")
            if modes.setdefault(peer.domain, peer.replication) != peer.replication:
                raise r.error(f"peers[{i}].replication", f"another [[peers]] entry of "
                              f"{peer.domain} says {modes[peer.domain]!r}: it applies to "
                              "the domain")
        lab = r.value(gw, schema.GATEWAY, "lab", bool)
        require_tokens = r.value(gw, schema.GATEWAY, "require_tokens", bool)
        require_origin = r.get(security, "security", "require_origin", bool, not lab)
        r.lab_mode(lab, listeners, peers, require_tokens, require_origin)
        return cls(
            domain=domain,
            listen=listeners[0][1],
            also_listen=listeners[1:],
            certificate=r.file(gw, "gateway", "certificate"),
            key=r.file(gw, "gateway", "key"),
            trust_anchors=tuple(r.file_value(a, f"gateway.trust_anchors[{i}]")
                                for i, a in enumerate(anchors)),
            store=r.path(r.need(gw, "gateway", "store", str), "gateway.store",
                         must_exist=False),
            name=r.get(gw, "gateway", "name", str, None),
            transport=transport,
            require_tokens=require_tokens,
            peers=peers,
            min_lease=min_lease, max_lease=max_lease, hold_time=hold_time,
            keepalive=keepalive, restart_grace=restart_grace,
            log_format=log_format, log_level=log_level,
            pcap=r.optional_path(capture, "capture", "pcap"),
            keylog=r.optional_path(capture, "capture", "keylog"),
            crl=r.sources(security, "security", "crl"),
            require_origin=require_origin,
            lab=lab,
            transit=r.transit(r.table(data, "federation")),
            resource_limits=r.resource_limits(limits),
            management=r.address(management, "management.listen",
                                 required="management" in data),
            source=source,
        )


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """A validated agent configuration (module docstring)."""

    certificate: Path
    key: Path
    trust_anchors: tuple[Path, ...]
    gateway: tuple[str, int]
    #: The name the gateway certificate must carry (None: the gateway's host name, or
    #: no name for an IP address).
    server_name: str | None
    transport: str
    token: Path | None
    skills: tuple[str, ...]
    lease: int
    #: Lab mode: the cleartext ``udp`` transport was asked for deliberately.
    lab: bool
    #: The agent keepalive interval (None: off).
    keepalive: float | None

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        """Read and check a TOML file; :class:`ConfigError` on any problem."""
        path = Path(path)
        r = Reader(path, path.parent)
        data = read_toml(path)
        r.only(data, "", {schema.AGENT.name})
        ag = r.table(data, "agent", required=True)
        r.only(ag, "agent", schema.AGENT.keys)
        anchors = r.get(ag, "agent", "trust_anchors", list, [])
        if not anchors:
            raise r.error("agent.trust_anchors",
                          "missing or empty: list the domain authority's certificate (PEM)")
        transport = r.transport(ag, "agent.transport")
        lab = r.value(ag, schema.AGENT, "lab", bool)
        if transport == "udp" and not lab:
            raise r.error("agent.transport", lab_only("agent.lab"))
        if lab and transport != "udp":
            raise r.error("agent.lab", "lab mode is cleartext UDP: agent.transport must "
                          "be \"udp\"")
        lease = r.value(ag, schema.AGENT, "lease", int)
        if lease <= 0:
            raise r.error("agent.lease", "must be a positive number of seconds")
        token = r.get(ag, "agent", "token", str, None)
        keepalive = (None if ag.get("keepalive") == 0  # 0: off
                     else r.seconds_value(ag, schema.AGENT, "keepalive"))
        return cls(
            certificate=r.file(ag, "agent", "certificate"),
            key=r.file(ag, "agent", "key"),
            trust_anchors=tuple(r.file_value(a, f"agent.trust_anchors[{i}]")
                                for i, a in enumerate(anchors)),
            gateway=r.address(ag, "agent.gateway", required=True),  # type: ignore[arg-type]
            server_name=r.get(ag, "agent", "server_name", str, None) or None,
            transport=transport,
            token=None if token is None else r.path(token, "agent.token"),
            skills=r.strings(ag, "agent", "skills"),
            lease=lease,
            lab=lab,
            keepalive=keepalive,
        )


