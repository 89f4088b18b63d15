"""Typed access to a parsed configuration file, every error naming its key
(:class:`ConfigError`), and the values of its nested tables (:mod:`.config` reads the
files, :mod:`.schema` declares their keys)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..codec.registry import LIMITS, MAX_PATH, timer
from ..codec.values import ExportPolicy
from ..errors import DmscError
from ..protocol.peering import MIN_HOLD_TIME, acceptable_hold_time
from ..security.ca import parse_identity_uri
from . import schema
from .schema import REQUIRED, Table

T = TypeVar("T")
D = TypeVar("D")


def _strings(default: object) -> tuple[str, ...]:
    """A schema default that is a tuple of strings."""
    if not isinstance(default, tuple) or not all(isinstance(x, str) for x in default):
        raise TypeError(f"schema: not a tuple of strings: {default!r}")
    return default


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
    address: tuple[str, int] | None
    anchor: Path | None
    server_name: str | None
    transit: bool | tuple[str, ...]
    export: ExportPolicy | None
    import_domains: tuple[str, ...]
    import_capabilities: tuple[str, ...]
    import_callers: tuple[str, ...]
    crl: tuple[str, ...]
    #: The transport it is dialled over (None: the gateway's primary transport).
    transport: str | None
    #: Hold time and keepalive towards it (None: the gateway's ``[limits]``).
    hold_time: int | None
    keepalive: float | None
    #: "full" (records) or "summary" (capability summaries only), Section 6.9.
    replication: str


@dataclass(frozen=True, slots=True)
class TransitConfig:
    """The ``[federation]`` table: transit trust (Section 10.6)."""

    #: The trust bundle's PEM files (directories expanded to their ``*.pem``).
    trust_bundle: tuple[Path, ...]
    via: tuple[str, ...]
    max_path: int
    export: ExportPolicy | None
    capabilities: tuple[str, ...]
    callers: tuple[str, ...]


def read_toml(path: Path) -> dict[str, Any]:
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




def lab_only(lab_key: str) -> str:
    """Why "udp" is refused without ``lab = true``."""
    return ("must be \"quic\" or \"dtls\": \"udp\" is cleartext lab mode (Section 9.4: "
            f"no confidentiality, no peer authentication) and needs {lab_key} = true, set "
            "deliberately")


_TRANSPORTS = ("quic", "dtls", "udp")
#: ``peers[].replication`` (Section 6.9).
REPLICATION_MODES = ("full", "summary")


_TYPE_NAMES: dict[type, str] = {str: "a string", int: "an integer", bool: "true or false",
                                list: "a list", dict: "a table"}


class Reader:
    """Typed access to the parsed TOML with errors naming the key."""

    def __init__(self, source: Path | None, base: Path) -> None:
        self.source = source
        self.base = base

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.source, key, reason)

    def only(self, table: Mapping[str, Any], where: str, allowed: Set[str]) -> None:
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

    def section(self, data: Mapping[str, Any], table: Table) -> Mapping[str, Any]:
        """An optional top-level ``table``, its keys checked against the schema."""
        value = self.table(data, table.name)
        self.only(value, table.name, table.keys)
        return value

    def value(self, data: Mapping[str, Any], table: Table, key: str, kind: type[T]) -> T:
        """``key`` of ``table`` (the schema's name and default), of type ``kind``."""
        default = table.default(key)
        if default is REQUIRED:
            return self.need(data, table.name, key, kind)
        if not isinstance(default, kind):
            raise TypeError(f"schema: {table.name}.{key} defaults to {default!r}")
        return self.get(data, table.name, key, kind, default)

    def seconds_value(self, data: Mapping[str, Any], table: Table, key: str) -> float:
        """A positive number of seconds, the schema's default when absent."""
        value = self.seconds(data, table.name, key)
        if value is not None:
            return value
        default = table.default(key)
        if not isinstance(default, int | float):
            raise TypeError(f"schema: {table.name}.{key} defaults to {default!r}")
        return float(default)

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
                raise self.error(key, lab_only("gateway.lab"))
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
        self.only(table, where, schema.PEER_EXPORT.keys)
        return ExportPolicy(peer_domains=(domain,),
                            include_tags=self.strings(table, where, "include_tags"),
                            exclude_tags=self.strings(table, where, "exclude_tags"),
                            include_agents=self.strings(table, where, "include_agents"))

    def transit(self, fed: Mapping[str, Any]) -> TransitConfig:
        """The ``[federation]`` table (transit trust)."""
        self.only(fed, "federation", schema.FEDERATION.keys)
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
        max_path = self.value(fed, schema.FEDERATION, "max_path", int)
        if not 1 <= max_path <= MAX_PATH:
            raise self.error("federation.max_path", f"must be 1 to {MAX_PATH} gateways")
        imp = self.table(fed, "import")
        self.only(imp, "federation.import", schema.FEDERATION_IMPORT.keys)
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
        self.only(p, where, schema.PEERS.keys)
        hold_time, keepalive = self.session_timers(p, where, hold_default, keepalive_default)
        domain = self.domain(p, f"{where}.domain")
        anchor = p.get("anchor")
        exp = self.table(p, "export") if "export" in p else None
        imp = self.table(p, "import")
        self.only(imp, f"{where}.import", schema.PEER_IMPORT.keys)
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
            import_capabilities=self.strings(imp, iw, "capabilities",
                                             _strings(schema.PEER_IMPORT.default("capabilities"))),
            import_callers=self.strings(imp, iw, "callers"),
            crl=self.sources(p, where, "crl"),
            transport=self.transport(p, f"{where}.transport") if "transport" in p else None,
            hold_time=hold_time, keepalive=keepalive,
            replication=self.replication(p, where),
        )

    def replication(self, p: Mapping[str, Any], where: str) -> str:
        value = self.get(p, where, "replication", str, str(schema.PEERS.default("replication")))
        if value not in REPLICATION_MODES:
            raise self.error(f"{where}.replication",
                             f"must be \"full\" or \"summary\", not {value!r}")
        return value
