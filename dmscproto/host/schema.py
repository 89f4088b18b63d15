"""The keys of the configuration files, declared once (``dmsc gateway --config`` and
``dmsc agent --config``; :mod:`.config` reads them).

Each :class:`Table` lists its :class:`Field`\\ s: the key, its default, the example value
and the comment of the documented key list.  The same declaration drives the reader's
set of allowed keys and defaults, the key list in :mod:`.config`'s docstring
(:func:`document`) and the TOML written by :mod:`dmscproto.sandbox.domains`
(:func:`to_toml`), so none of the three can name a key the others do not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..codec.registry import LIMITS, timer
from ..security.federation import DEFAULT_MAX_PATH

#: The default of a key that must be given.
REQUIRED = object()
#: The column the comments of the documented key list start in.
_COMMENT_COLUMN = 34


@dataclass(frozen=True, slots=True)
class Field:
    """One key: ``example`` is its value in the documented key list (TOML), ``doc`` the
    comment there (``\\n`` starts another comment line), ``default`` what an absent key
    means (:data:`REQUIRED`: it may not be absent; None: nothing)."""

    key: str
    example: str
    doc: str = ""
    default: object = None


@dataclass(frozen=True, slots=True)
class Table:
    """A TOML table (``[name]``, or ``[[name]]`` with ``array``) and its keys; ``more``
    are further keys it accepts, documented by ``fields`` (``[limits]``' resource
    limits); ``doc`` comments the header line."""

    name: str
    fields: tuple[Field, ...]
    doc: str = ""
    array: bool = False
    more: frozenset[str] = frozenset()

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(f.key for f in self.fields) | self.more

    def default(self, key: str) -> object:
        for f in self.fields:
            if f.key == key:
                return f.default
        raise KeyError(key)

    @property
    def header(self) -> str:
        return f"[[{self.name}]]" if self.array else f"[{self.name}]"


GATEWAY = Table("gateway", (
    Field("domain", '"a.example"', "this gateway's domain (its certificate's)", REQUIRED),
    Field("listen", '"127.0.0.1:4433"',
          "host:port, port 0 for an ephemeral one; or one\nlistener per transport, the "
          "first one primary:\n{ quic = \"127.0.0.1:4433\", dtls = \"127.0.0.1:4434\" }",
          REQUIRED),
    Field("certificate", '"gw.pem"', "gateway certificate (PEM) ...", REQUIRED),
    Field("key", '"gw.key"', "... and its private key", REQUIRED),
    Field("trust_anchors", '["ca.pem"]', "own domain's authority; peer anchors are added",
          REQUIRED),
    Field("store", '"registry.sqlite"', "the registry (SQLite, WAL)", REQUIRED),
    Field("name", '"gw1"', "optional, for HOP records (default: the cert's)"),
    Field("transport", '"quic"',
          "or \"dtls\" (Section 9.2; needs a P-256 certificate):\nthe transport of a "
          "\"host:port\" listen (not allowed\nwith a listen table)", "quic"),
    Field("require_tokens", "false", "true: every agent request carries an access token\n"
          "from the domain authority (Section 10.3)", False),
    Field("lab", "false", "true, and only deliberately: LAB MODE, cleartext\nUDP (transport "
          "\"udp\", Section 9.4) on every\nlistener and peer; no confidentiality, no peer\n"
          "authentication (dmscproto.runtime.lab); tokens\nand origin assertions off.  "
          "\"udp\" anywhere\nwithout it is a configuration error", False),
))
LIMITS_TABLE = Table("limits", (
    Field("min_lease", "30", default=int(timer("MIN_LEASE"))),
    Field("max_lease", "86400", default=int(timer("MAX_LEASE"))),
    Field("hold_time", "90", f"proposed in OPEN: 0 (none) or at least "
          f"{int(timer('MIN_HOLD_TIME'))} s", int(timer("HOLD_TIME"))),
    Field("keepalive", "30", "optional: largest KEEPALIVE interval (default\nand cap: a "
          "third of the negotiated hold time)"),
    Field("restart_grace", "60", "after a restart, records of agents that have not\ncome "
          "back are not advertised for this long", timer("RESTART_GRACE")),
    Field("quic_max_pending", "256", "and any resource limit of Section 10.7 by its\nname "
          "in lower case (codec.registry.LIMITS)"),
), "optional (Section 8 defaults)", more=frozenset(lim.name.lower() for lim in LIMITS))
LOG = Table("log", (
    Field("format", '"text"', "or \"json\" (JSON lines)", "text"),
    Field("level", '"info"', default="info"),
), "optional")
CAPTURE = Table("capture", (
    Field("pcap", '"gw.pcap"'),
    Field("keylog", '"keys.log"'),
), "optional: every datagram, and the TLS secrets")
SECURITY = Table("security", (
    Field("crl", '["crl.pem"]', "our domain's CRL: files or the authority's\nhttps:// URL, "
          "refreshed before nextUpdate"),
    Field("require_origin", "true", "calls from other domains carry an origin\nassertion "
          "(default: true; false in lab mode)"),
), "optional (Section 10)")
MANAGEMENT = Table("management", (
    Field("listen", '"127.0.0.1:8830"', "RESTCONF and /metrics over HTTPS with mutual\nTLS, "
          "for operator certificates of our authority\n(dmscproto.management)", REQUIRED),
), "optional: the management listener (off without it)")
PEERS = Table("peers", (
    Field("domain", '"b.example"', default=REQUIRED),
    Field("address", '"127.0.0.1:4434"', "optional: dialled if given, else only accepted"),
    Field("anchor", '"b-ca.pem"', "the peer domain's authority (other domains)"),
    Field("crl", '"https://ca.b.example:8443/crl"', "optional: its CRL (file or URL)"),
    Field("server_name", '"localhost"', "optional TLS server name to check"),
    Field("transport", '"quic"', "optional: how it is dialled (default: the primary\n"
          "listener's transport)"),
    Field("transit", "false", "other domains' records re-advertised to it\n(Section 6.3): "
          "true (every domain but its own)\nor a list of domains (\"*\": true); its own "
          "domain\nonly when listed (its gateways reach each other\nonly through us)", False),
    Field("hold_time", "3", "optional: this peer's hold time and keepalive"),
    Field("keepalive", "1", "(default: [limits]); detection in about 3 s"),
    Field("replication", '"full"', "or \"summary\": its domain's gateways get only\n"
          "capability summaries, no records (Section 6.9;\none mode per domain, \"full\" for "
          "our own)", "full"),
    Field("export", "", "the [peers.export] table"),
    Field("import", "", "the [peers.import] table"),
), "a federated (or same-domain) gateway", array=True)
PEER_EXPORT = Table("peers.export", (
    Field("include_tags", "[]", "only records with one of these tags (empty: all)"),
    Field("exclude_tags", '["internal"]', "never records with one of these tags"),
    Field("include_agents", "[]", "only these agent URIs (empty: all)"),
), "which of our records it is shown (Section 7.4).\nABSENT TABLE: NOTHING (a warning says "
   "so); an\nempty table: every record")
PEER_IMPORT = Table("peers.import", (
    Field("capabilities", '["*"]', "skill ids of its agents ours may call, or \"*\"",
          ("*",)),
    Field("callers", "[]", "URIs of our agents that may call there (empty:\nevery one of "
          "our agents)", ()),
    Field("domains", '["b.example"]', "record domains it may advertise; our own only\nwhen "
          "listed (our gateways joined through it)"),
), "what we take from it (Section 10.5)")
FEDERATION = Table("federation", (
    Field("trust_bundle", '["remote/"]', "PEM files or directories of them (*.pem): the\n"
          "authorities of domains we call and are called by\nthrough transit domains, "
          "without peering", ()),
    Field("via", '["b.example"]', "peer domains they may be reached through\n(default: "
          "every peer domain)", ()),
    Field("max_path", "16", "most gateways on the path of their records/calls",
          DEFAULT_MAX_PATH),
    Field("export", "", "the [federation.export] table"),
    Field("import", "", "the [federation.import] table"),
), "optional: transit trust (Section 10.6)")
FEDERATION_EXPORT = Table("federation.export", (
    Field("include_tags", '["public"]'),
    Field("exclude_tags", "[]"),
    Field("include_agents", "[]"),
), "which of our records they may call (absent: none)")
FEDERATION_IMPORT = Table("federation.import", (
    Field("capabilities", '["*"]', default=()),
    Field("callers", "[]", default=()),
), "what our agents may call there (default: nothing)")
AGENT = Table("agent", (
    Field("certificate", '"hello.pem"', "the agent's certificate and key", REQUIRED),
    Field("key", '"hello.key"', default=REQUIRED),
    Field("trust_anchors", '["ca.pem"]', "its domain's authority", REQUIRED),
    Field("gateway", '"127.0.0.1:4433"', "the home gateway", REQUIRED),
    Field("server_name", '"localhost"', "optional: name the gateway certificate carries\n"
          "(default: the gateway's host name; none for an\nIP address: the domain is always "
          "checked)"),
    Field("transport", '"quic"', "optional: or \"dtls\"; \"udp\" (cleartext) only with",
          "quic"),
    Field("lab", "true", "(lab mode, Section 9.4; default false)", False),
    Field("token", '"hello.jwt"', "optional: file holding its access token"),
    Field("skills", '["greet"]', "what it registers (dmsc agent serves them)", ()),
    Field("lease", "300", "optional: seconds asked for", int(timer("DEFAULT_LEASE"))),
    Field("keepalive", "5", "optional: ECHO_REQUEST after that much silence,\ngateway lost "
          "after three times that (Section\n6.8.3); 0 turns the keepalive off",
          timer("AGENT_KEEPALIVE")),
))

#: A gateway's file, in the order of the documented key list.
GATEWAY_FILE: tuple[Table, ...] = (GATEWAY, LIMITS_TABLE, LOG, CAPTURE, SECURITY, MANAGEMENT,
                                   PEERS, PEER_EXPORT, PEER_IMPORT, FEDERATION,
                                   FEDERATION_EXPORT, FEDERATION_IMPORT)
#: The top-level tables of a gateway's file.
GATEWAY_TOP = frozenset(t.name for t in GATEWAY_FILE if "." not in t.name)


def _comment(doc: str, first: str) -> list[str]:
    """``first`` with ``doc`` as its comment, continued on further lines."""
    lines = doc.split("\n") if doc else []
    if not lines:
        return [first]
    out = [f"{first.ljust(_COMMENT_COLUMN - 1)} # {lines[0]}"]
    out += [f"{'':{_COMMENT_COLUMN}}# {line}" for line in lines[1:]]
    return out


def document(tables: Iterable[Table]) -> str:
    """The documented key list of a file: each table and its keys with example values
    and comments (subtables' own keys are not listed as keys of their parent)."""
    lines: list[str] = []
    for t in tables:
        if lines:
            lines.append("")
        lines += _comment(t.doc, t.header)
        lines += [line for f in t.fields if f.example
                  for line in _comment(f.doc, f"{f.key} = {f.example}")]
    return "\n".join(lines)


def to_toml(tables: Iterable[tuple[Table, Mapping[str, object]]]) -> str:
    """A configuration file from its tables' values (strings, numbers, booleans, lists of
    them, and inline tables of those), each table's keys in its declared order; a key
    the table does not declare is a ValueError."""
    lines: list[str] = []
    for table, values in tables:
        unknown = set(values) - table.keys
        if unknown:
            raise ValueError(f"[{table.name}] has no key {', '.join(sorted(unknown))}")
        if lines:
            lines.append("")
        lines.append(table.header)
        lines += [f"{f.key} = {_value(values[f.key])}" for f in table.fields
                  if f.key in values]
    return "\n".join(lines) + "\n"


def _value(value: object) -> str:
    """A TOML value: JSON's syntax for strings, numbers, booleans and lists of them is
    TOML's; a mapping is an inline table."""
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)
