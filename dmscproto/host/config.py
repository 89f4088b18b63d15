"""Configuration files (TOML) for ``dmsc gateway --config FILE`` and ``dmsc agent
--config FILE``.

Relative paths are relative to the file's directory.  Every error names the key it is
about (``peers[1].address``) and what is wrong, as :class:`ConfigError`::

    [gateway]
    domain = "a.example"              # this gateway's domain (its certificate's)
    listen = "127.0.0.1:4433"         # host:port, port 0 for an ephemeral one; or one
                                      # listener per transport, the first one primary:
                                      # { quic = "127.0.0.1:4433", dtls = "127.0.0.1:4434" }
    certificate = "gw.pem"            # gateway certificate (PEM) ...
    key = "gw.key"                    # ... and its private key
    trust_anchors = ["ca.pem"]        # own domain's authority; peer anchors are added
    store = "registry.sqlite"         # the registry (SQLite, WAL)
    name = "gw1"                      # optional, for HOP records (default: the cert's)
    transport = "quic"                # or "dtls" (Section 9.2; needs a P-256 certificate):
                                      # the transport of a "host:port" listen (not allowed
                                      # with a listen table)
    require_tokens = false            # true: every agent request carries an access token
                                      # from the domain authority (Section 10.3)
    lab = false                       # true, and only deliberately: LAB MODE, cleartext
                                      # UDP (transport "udp", Section 9.4) on every
                                      # listener and peer; no confidentiality, no peer
                                      # authentication (dmscproto.runtime.lab); tokens
                                      # and origin assertions off.  "udp" anywhere
                                      # without it is a configuration error

    [limits]                          # optional (Section 8 defaults)
    min_lease = 30
    max_lease = 86400
    hold_time = 90                    # proposed in OPEN: 0 (none) or at least 3 s
    keepalive = 30                    # optional: largest KEEPALIVE interval (default
                                      # and cap: a third of the negotiated hold time)
    restart_grace = 60                # after a restart, records of agents that have not
                                      # come back are not advertised for this long
    quic_max_pending = 256            # and any resource limit of Section 10.7 by its
                                      # name in lower case (codec.registry.LIMITS)

    [log]                             # optional
    format = "text"                   # or "json" (JSON lines)
    level = "info"

    [capture]                         # optional: every datagram, and the TLS secrets
    pcap = "gw.pcap"
    keylog = "keys.log"

    [security]                        # optional (Section 10)
    crl = ["crl.pem"]                 # our domain's CRL: files or the authority's
                                      # https:// URL, refreshed before nextUpdate
    require_origin = true             # calls from other domains carry an origin assertion

    [management]                      # optional: the management listener (off without
    listen = "127.0.0.1:8830"         # it): RESTCONF and /metrics over HTTPS with mutual
                                      # TLS, for operator certificates of our authority
                                      # (dmscproto.management)

    [[peers]]                         # a federated (or same-domain) gateway
    domain = "b.example"
    address = "127.0.0.1:4434"        # optional: dialled if given, else only accepted
    anchor = "b-ca.pem"               # the peer domain's authority (other domains)
    crl = "https://ca.b.example:8443/crl"  # optional: its CRL (file or URL)
    server_name = "localhost"         # optional TLS server name to check
    transport = "quic"                # optional: how it is dialled (default: the primary
                                      # listener's transport)
    transit = false                   # other domains' records re-advertised to it
                                      # (Section 6.3): true (every domain but its own)
                                      # or a list of domains ("*": true); its own domain
                                      # only when listed (its gateways reach each other
                                      # only through us)
    hold_time = 3                     # optional: this peer's hold time and keepalive
    keepalive = 1                     # (default: [limits]); detection in about 3 s
    replication = "full"              # or "summary": its domain's gateways get only
                                      # capability summaries, no records (Section 6.9;
                                      # one mode per domain, "full" for our own)
    [peers.export]                    # which of our records it is shown (Section 7.4).
                                      # ABSENT TABLE: NOTHING (a warning says so); an
                                      # empty table: every record
    include_tags = []                 # only records with one of these tags (empty: all)
    exclude_tags = ["internal"]       # never records with one of these tags
    include_agents = []               # only these agent URIs (empty: all)
    [peers.import]                    # what we take from it (Section 10.5)
    capabilities = ["*"]              # skill ids of its agents ours may call, or "*"
    callers = []                      # URIs of our agents that may call there (empty:
                                      # every one of our agents)
    domains = ["b.example"]           # record domains it may advertise; our own only
                                      # when listed (our gateways joined through it)

    [federation]                      # optional: transit trust (Section 10.6)
    trust_bundle = ["remote/"]        # PEM files or directories of them (*.pem): the
                                      # authorities of domains we call and are called by
                                      # through transit domains, without peering
    via = ["b.example"]               # peer domains they may be reached through
                                      # (default: every peer domain)
    max_path = 16                     # most gateways on the path of their records/calls
    [federation.export]               # which of our records they may call (absent: none)
    include_tags = ["public"]
    [federation.import]               # what our agents may call there (default: nothing)
    capabilities = ["*"]
    callers = []

An agent's file (:class:`AgentConfig`)::

    [agent]
    certificate = "hello.pem"         # the agent's certificate and key
    key = "hello.key"
    trust_anchors = ["ca.pem"]        # its domain's authority
    gateway = "127.0.0.1:4433"        # the home gateway
    server_name = "localhost"         # optional: name the gateway certificate carries
                                      # (default: the gateway's host name; none for an
                                      # IP address: the domain is always checked)
    transport = "quic"                # optional: or "dtls"; "udp" (cleartext) only with
    lab = true                        # (lab mode, Section 9.4; default false)
    token = "hello.jwt"               # optional: file holding its access token
    skills = ["greet"]                # what it registers (dmsc agent serves them)
    lease = 300                       # optional: seconds asked for
    keepalive = 5                     # optional: ECHO_REQUEST after that much silence,
                                      # gateway lost after three times that (Section
                                      # 6.8.3); 0 turns the keepalive off
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..codec.registry import LIMITS, MAX_PATH, limit, timer
from ..codec.values import ExportPolicy
from ..errors import DmscError
from ..protocol.peering import MIN_HOLD_TIME, acceptable_hold_time
from ..security.ca import parse_identity_uri
from ..security.federation import DEFAULT_MAX_PATH

T = TypeVar("T")
D = TypeVar("D")


class ConfigError(DmscError, ValueError):
    """A configuration file that cannot be used: ``key`` is where, ``reason`` what."""

    named = False

    def __init__(self, path: Path | None, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        super().__init__(reason)

    def message(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        return f"{where}{self.key}: {self.reason}" if self.key else f"{where}{self.reason}"


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """One ``[[peers]]`` entry."""

    domain: str
    address: tuple[str, int] | None = None
    anchor: Path | None = None
    server_name: str | None = None
    transit: bool | tuple[str, ...] = False
    export: ExportPolicy | None = None
    import_domains: tuple[str, ...] = ()
    import_capabilities: tuple[str, ...] = ("*",)
    import_callers: tuple[str, ...] = ()
    crl: tuple[str, ...] = ()
    #: The transport it is dialled over (None: the gateway's primary transport).
    transport: str | None = None
    #: Hold time and keepalive towards it (None: the gateway's ``[limits]``).
    hold_time: int | None = None
    keepalive: float | None = None
    #: "full" (records) or "summary" (capability summaries only), Section 6.9.
    replication: str = "full"


@dataclass(frozen=True, slots=True)
class TransitConfig:
    """The ``[federation]`` table: transit trust (module docstring)."""

    #: The trust bundle's PEM files (directories expanded to their ``*.pem``).
    trust_bundle: tuple[Path, ...] = ()
    via: tuple[str, ...] = ()
    max_path: int = DEFAULT_MAX_PATH
    export: ExportPolicy | None = None
    capabilities: tuple[str, ...] = ()
    callers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A validated gateway configuration (module docstring)."""

    domain: str
    listen: tuple[str, int]
    certificate: Path
    key: Path
    trust_anchors: tuple[Path, ...]
    store: Path
    name: str | None = None
    #: The primary listener's transport (``listen``); peers are dialled over it by default.
    transport: str = "quic"
    require_tokens: bool = False
    peers: tuple[PeerConfig, ...] = ()
    #: Further listeners, (transport, address), each on another transport (Section 9).
    also_listen: tuple[tuple[str, tuple[str, int]], ...] = ()
    min_lease: int = int(timer("MIN_LEASE"))
    max_lease: int = int(timer("MAX_LEASE"))
    hold_time: int = int(timer("HOLD_TIME"))
    keepalive: float | None = None
    restart_grace: float = timer("RESTART_GRACE")
    log_format: str = "text"
    log_level: str = "info"
    pcap: Path | None = None
    keylog: Path | None = None
    crl: tuple[str, ...] = ()
    require_origin: bool = True
    #: Lab mode: cleartext UDP everywhere, identities from the protocol (runtime.lab).
    lab: bool = False
    transit: TransitConfig = TransitConfig()
    #: Resource limits set in ``[limits]`` (Section 10.7), by registry name.
    resource_limits: tuple[tuple[str, float], ...] = ()
    #: The management listener (``[management] listen``; None: off).
    management: tuple[str, int] | None = None
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
        data = _read_toml(path)
        return cls.from_dict(data, base=path.parent, source=path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Path = Path("."),
                  source: Path | None = None) -> GatewayConfig:
        r = _Reader(source, base)
        r.only(data, "", {"gateway", "limits", "log", "capture", "security", "peers",
                          "federation", "management"})
        gw = r.table(data, "gateway", required=True)
        r.only(gw, "gateway", {"domain", "listen", "certificate", "key", "trust_anchors",
                               "store", "name", "transport", "require_tokens", "lab"})
        limits = r.table(data, "limits")
        r.only(limits, "limits", {"min_lease", "max_lease", "hold_time", "keepalive",
                                  "restart_grace", *(lim.name.lower() for lim in LIMITS)})
        log = r.table(data, "log")
        r.only(log, "log", {"format", "level"})
        capture = r.table(data, "capture")
        r.only(capture, "capture", {"pcap", "keylog"})
        security = r.table(data, "security")
        r.only(security, "security", {"crl", "require_origin"})
        management = r.table(data, "management")
        r.only(management, "management", {"listen"})
        min_lease = r.get(limits, "limits", "min_lease", int, int(timer("MIN_LEASE")))
        max_lease = r.get(limits, "limits", "max_lease", int, int(timer("MAX_LEASE")))
        if min_lease <= 0:
            raise r.error("limits.min_lease", "must be a positive number of seconds")
        if max_lease < min_lease:
            raise r.error("limits.max_lease", f"must be at least min_lease ({min_lease})")
        hold_time, keepalive = r.session_timers(limits, "limits", int(timer("HOLD_TIME")),
                                                None)
        restart_grace = r.seconds(limits, "limits", "restart_grace")
        if restart_grace is None:
            restart_grace = timer("RESTART_GRACE")
        log_format = r.get(log, "log", "format", str, "text")
        if log_format not in ("text", "json"):
            raise r.error("log.format", f"must be \"text\" or \"json\", not {log_format!r}")
        log_level = r.get(log, "log", "level", str, "info").lower()
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
        lab = r.get(gw, "gateway", "lab", bool, False)
        require_tokens = r.get(gw, "gateway", "require_tokens", bool, False)
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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """A validated agent configuration (module docstring)."""

    certificate: Path
    key: Path
    trust_anchors: tuple[Path, ...]
    gateway: tuple[str, int]
    #: The name the gateway certificate must carry (None: the gateway's host name, or
    #: no name for an IP address).
    server_name: str | None = None
    transport: str = "quic"
    token: Path | None = None
    skills: tuple[str, ...] = ()
    lease: int = int(timer("DEFAULT_LEASE"))
    #: Lab mode: the cleartext ``udp`` transport was asked for deliberately.
    lab: bool = False
    #: The agent keepalive interval (None: off).
    keepalive: float | None = timer("AGENT_KEEPALIVE")

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        """Read and check a TOML file; :class:`ConfigError` on any problem."""
        path = Path(path)
        r = _Reader(path, path.parent)
        data = _read_toml(path)
        r.only(data, "", {"agent"})
        ag = r.table(data, "agent", required=True)
        r.only(ag, "agent", {"certificate", "key", "trust_anchors", "gateway", "server_name",
                             "transport", "token", "skills", "lease", "lab", "keepalive"})
        anchors = r.get(ag, "agent", "trust_anchors", list, [])
        if not anchors:
            raise r.error("agent.trust_anchors",
                          "missing or empty: list the domain authority's certificate (PEM)")
        transport = r.transport(ag, "agent.transport")
        lab = r.get(ag, "agent", "lab", bool, False)
        if transport == "udp" and not lab:
            raise r.error("agent.transport", _lab_only("agent.lab"))
        if lab and transport != "udp":
            raise r.error("agent.lab", "lab mode is cleartext UDP: agent.transport must "
                          "be \"udp\"")
        lease = r.get(ag, "agent", "lease", int, int(timer("DEFAULT_LEASE")))
        if lease <= 0:
            raise r.error("agent.lease", "must be a positive number of seconds")
        token = r.get(ag, "agent", "token", str, None)
        keepalive: float | None = timer("AGENT_KEEPALIVE")
        if ag.get("keepalive") != 0:
            keepalive = r.seconds(ag, "agent", "keepalive") or keepalive
        else:
            keepalive = None
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


def _lab_only(lab_key: str) -> str:
    """Why "udp" is refused without ``lab = true``."""
    return ("must be \"quic\" or \"dtls\": \"udp\" is cleartext lab mode (Section 9.4: "
            f"no confidentiality, no peer authentication) and needs {lab_key} = true, set "
            "deliberately")


_TRANSPORTS = ("quic", "dtls", "udp")
#: ``peers[].replication`` (Section 6.9).
REPLICATION_MODES = ("full", "summary")


_TYPE_NAMES: dict[type, str] = {str: "a string", int: "an integer", bool: "true or false",
                                list: "a list", dict: "a table"}


class _Reader:
    """Typed access to the parsed TOML with errors naming the key."""

    def __init__(self, source: Path | None, base: Path) -> None:
        self.source = source
        self.base = base

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.source, key, reason)

    def only(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                expected = ", ".join(sorted(allowed))
                raise self.error(name, f"unknown key (expected one of {expected})")

    def table(self, data: Mapping[str, Any], key: str, *, required: bool = False
              ) -> Mapping[str, Any]:
        value = data.get(key)
        if value is None:
            if required:
                raise self.error(key, f"missing [{key}] table")
            return {}
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        return value

    def need(self, table: Mapping[str, Any], where: str, key: str, kind: type[T]) -> T:
        """A required value of type ``kind``."""
        value = self.get(table, where, key, kind, None)
        if value is None:
            raise self.error(f"{where}.{key}" if where else key, "missing")
        return value

    def get(self, table: Mapping[str, Any], where: str, key: str, kind: type[T],
            default: D) -> T | D:
        """An optional value of type ``kind``, ``default`` when absent."""
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            name = f"{where}.{key}" if where else key
            raise self.error(name, f"must be {_TYPE_NAMES[kind]}, not {type(value).__name__}")
        return value

    def resource_limits(self, table: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
        """The Section 10.7 limits set in ``[limits]``: numbers, counts whole, none
        negative."""
        out = []
        for lim in LIMITS:
            key = lim.name.lower()
            if key not in table:
                continue
            kind: type[Any] = float if lim.unit == "s" else int
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | kind) or value < 0:
                raise self.error(f"limits.{key}", f"must be a non-negative "
                                 f"{'number' if kind is float else 'integer'} ({lim.unit})")
            out.append((lim.name, float(value)))
        return tuple(out)

    def strings(self, table: Mapping[str, Any], where: str, key: str,
                default: tuple[str, ...] = ()) -> tuple[str, ...]:
        if key not in table:
            return default
        value = self.get(table, where, key, list, [])
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{where}.{key}[{i}]", "must be a string")
        return tuple(value)

    def sources(self, table: Mapping[str, Any], where: str, key: str) -> tuple[str, ...]:
        """CRL sources: a string or a list; ``https://`` URLs as they are, files
        relative to the configuration and required to exist."""
        value = table.get(key)
        items = [value] if isinstance(value, str) else self.strings(table, where, key)
        out = []
        for i, item in enumerate(items):
            name = f"{where}.{key}" if isinstance(value, str) else f"{where}.{key}[{i}]"
            if item.startswith("https://"):
                out.append(item)
            elif "://" in item:
                raise self.error(name, f"a file or an https:// URL, not {item!r}")
            else:
                out.append(str(self.path(item, name)))
        return tuple(out)

    def domain(self, table: Mapping[str, Any], name: str) -> str:
        where, _, key = name.rpartition(".")
        return self.checked_domain(self.need(table, where, key, str), name)

    def checked_domain(self, value: str, name: str) -> str:
        try:
            return parse_identity_uri(f"dmsc://{value}/x")[0]
        except ValueError:
            raise self.error(name, f"not a valid DNS-style domain name: {value!r}") from None

    def address(self, table: Mapping[str, Any], name: str, *, required: bool = False
                ) -> tuple[str, int] | None:
        where, _, key = name.rpartition(".")
        if key not in table and not required:
            return None
        value = self.need(table, where, key, str)
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise self.error(name, f"must be \"host:port\" (port 0-65535), not {value!r}")
        return host, int(port)

    def transport(self, table: Mapping[str, Any], name: str, default: str = "quic") -> str:
        where, _, key = name.rpartition(".")
        value = self.get(table, where, key, str, default)
        if value not in _TRANSPORTS:
            raise self.error(name, f"must be \"quic\" or \"dtls\" (or \"udp\" with lab = "
                             f"true), not {value!r}")
        return value

    def lab_mode(self, lab: bool, listeners: tuple[tuple[str, tuple[str, int]], ...],
                 peers: tuple[PeerConfig, ...], require_tokens: bool,
                 require_origin: bool) -> None:
        """``gateway.lab``: cleartext UDP on every listener and peer link, or nowhere;
        tokens and origin assertions, which need the TLS certificate, off."""
        keys = [f"gateway.listen.{t}" for t, _ in listeners]
        keys[0] = "gateway.listen" if len(listeners) == 1 else keys[0]
        kinds = [t for t, _ in listeners]
        for i, p in enumerate(peers):
            if p.transport is not None:
                keys.append(f"peers[{i}].transport")
                kinds.append(p.transport)
        for key, kind in zip(keys, kinds, strict=True):
            if kind == "udp" and not lab:
                raise self.error(key, _lab_only("gateway.lab"))
            if lab and kind != "udp":
                raise self.error("gateway.lab", f"a lab gateway uses cleartext UDP only, "
                                 f"but {key} is {kind!r}")
        if lab and require_tokens:
            raise self.error("gateway.require_tokens", "access tokens are bound to the "
                             "TLS certificate, which lab mode has not: set it false")
        if lab and require_origin:
            raise self.error("security.require_origin", "origin assertions are checked "
                             "against the previous hop's TLS certificate, which lab mode "
                             "has not: set it false")

    def listeners(self, gw: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, int]], ...]:
        """``gateway.listen``: "host:port" on ``gateway.transport``, or a table of them by
        transport (the first one primary)."""
        listen = gw.get("listen")
        if not isinstance(listen, dict):
            addr = self.address(gw, "gateway.listen", required=True)
            assert addr is not None
            return ((self.transport(gw, "gateway.transport"), addr),)
        if "transport" in gw:
            raise self.error("gateway.transport", "not allowed with a listen table (its "
                             "first entry is the primary transport)")
        if not listen:
            raise self.error("gateway.listen", "empty table: name at least one transport")
        out = []
        for name in listen:
            if name not in _TRANSPORTS:
                raise self.error(f"gateway.listen.{name}",
                                 "not a transport (\"quic\" or \"dtls\", or \"udp\" "
                                 "with lab = true)")
            addr = self.address(listen, f"gateway.listen.{name}", required=True)
            assert addr is not None
            out.append((name, addr))
        return tuple(out)

    def path(self, value: str, name: str, *, must_exist: bool = True) -> Path:
        path = Path(value)
        path = path if path.is_absolute() else self.base / path
        if must_exist and not path.is_file():
            raise self.error(name, f"no such file: {path}")
        if not must_exist and not path.parent.is_dir():
            raise self.error(name, f"directory does not exist: {path.parent}")
        return path

    def file(self, table: Mapping[str, Any], where: str, key: str) -> Path:
        return self.path(self.need(table, where, key, str), f"{where}.{key}")

    def file_value(self, value: object, name: str) -> Path:
        if not isinstance(value, str):
            raise self.error(name, "must be a string (a file name)")
        return self.path(value, name)

    def optional_path(self, table: Mapping[str, Any], where: str, key: str) -> Path | None:
        value = self.get(table, where, key, str, "")
        return self.path(value, f"{where}.{key}", must_exist=False) if value else None

    def export_policy(self, table: Mapping[str, Any], where: str, domain: str
                      ) -> ExportPolicy:
        self.only(table, where, {"include_tags", "exclude_tags", "include_agents"})
        return ExportPolicy(peer_domains=(domain,),
                            include_tags=self.strings(table, where, "include_tags"),
                            exclude_tags=self.strings(table, where, "exclude_tags"),
                            include_agents=self.strings(table, where, "include_agents"))

    def transit(self, fed: Mapping[str, Any]) -> TransitConfig:
        """The ``[federation]`` table (transit trust)."""
        self.only(fed, "federation", {"trust_bundle", "via", "max_path", "export", "import"})
        bundle: list[Path] = []
        for i, item in enumerate(self.strings(fed, "federation", "trust_bundle")):
            name = f"federation.trust_bundle[{i}]"
            path = Path(item) if Path(item).is_absolute() else self.base / item
            if path.is_dir():
                pems = sorted(path.glob("*.pem"))
                if not pems:
                    raise self.error(name, f"directory holds no *.pem file: {path}")
                bundle += pems
            else:
                bundle.append(self.path(item, name))
        max_path = self.get(fed, "federation", "max_path", int, DEFAULT_MAX_PATH)
        if not 1 <= max_path <= MAX_PATH:
            raise self.error("federation.max_path", f"must be 1 to {MAX_PATH} gateways")
        imp = self.table(fed, "import")
        self.only(imp, "federation.import", {"capabilities", "callers"})
        return TransitConfig(
            trust_bundle=tuple(bundle),
            via=tuple(self.checked_domain(d, f"federation.via[{i}]")
                      for i, d in enumerate(self.strings(fed, "federation", "via"))),
            max_path=max_path,
            export=(self.export_policy(self.table(fed, "export"), "federation.export", "*")
                    if "export" in fed else None),
            capabilities=self.strings(imp, "federation.import", "capabilities"),
            callers=self.strings(imp, "federation.import", "callers"))

    def seconds(self, table: Mapping[str, Any], where: str, key: str) -> float | None:
        """An optional positive number of seconds (integer or not)."""
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise self.error(f"{where}.{key}", "must be a positive number of seconds")
        return float(value)

    def session_timers(self, table: Mapping[str, Any], where: str, hold_default: int,
                       keepalive_default: float | None) -> tuple[int, float | None]:
        """``hold_time`` and ``keepalive`` (Section 6.4): the hold time 0 or at least
        MIN_HOLD_TIME, the keepalive at most KEEPALIVE_FRACTION of it."""
        hold_time = self.get(table, where, "hold_time", int, hold_default)
        if not acceptable_hold_time(hold_time):
            raise self.error(f"{where}.hold_time", f"must be 0 or at least {MIN_HOLD_TIME} "
                             "seconds (Section 6.4)")
        keepalive = self.seconds(table, where, "keepalive")
        if keepalive is None:
            keepalive = keepalive_default
        if keepalive is not None and hold_time \
                and keepalive > hold_time * timer("KEEPALIVE_FRACTION") + 1e-9:
            raise self.error(f"{where}.keepalive", f"must be at most a third of hold_time "
                             f"({hold_time} s) (Section 6.4)")
        return hold_time, keepalive

    def peer(self, p: object, i: int, hold_default: int,
             keepalive_default: float | None) -> PeerConfig:
        where = f"peers[{i}]"
        if not isinstance(p, dict):
            raise self.error(where, "must be a table ([[peers]])")
        self.only(p, where, {"domain", "address", "anchor", "server_name", "transit",
                             "export", "import", "crl", "transport", "hold_time",
                             "keepalive", "replication"})
        hold_time, keepalive = self.session_timers(p, where, hold_default, keepalive_default)
        domain = self.domain(p, f"{where}.domain")
        anchor = p.get("anchor")
        exp = self.table(p, "export") if "export" in p else None
        imp = self.table(p, "import")
        self.only(imp, f"{where}.import", {"capabilities", "callers", "domains"})
        iw = f"{where}.import"
        return PeerConfig(
            domain=domain,
            address=self.address(p, f"{where}.address"),
            anchor=None if anchor is None else self.file_value(anchor, f"{where}.anchor"),
            server_name=self.get(p, where, "server_name", str, "") or None,
            transit=(self.get(p, where, "transit", bool, False)
                     if not isinstance(p.get("transit"), list)
                     else tuple(d if d == "*" else self.checked_domain(d, f"{where}.transit[{j}]")
                                for j, d in enumerate(self.strings(p, where, "transit")))),
            export=None if exp is None else self.export_policy(exp, f"{where}.export", domain),
            import_domains=self.strings(imp, iw, "domains", (domain,)),
            import_capabilities=self.strings(imp, iw, "capabilities", ("*",)),
            import_callers=self.strings(imp, iw, "callers"),
            crl=self.sources(p, where, "crl"),
            transport=self.transport(p, f"{where}.transport") if "transport" in p else None,
            hold_time=hold_time, keepalive=keepalive,
            replication=self.replication(p, where),
        )

    def replication(self, p: Mapping[str, Any], where: str) -> str:
        value = self.get(p, where, "replication", str, "full")
        if value not in REPLICATION_MODES:
            raise self.error(f"{where}.replication",
                             f"must be \"full\" or \"summary\", not {value!r}")
        return value
