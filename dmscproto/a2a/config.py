"""The bridge's TOML file (``dmsc a2a serve --config FILE``), draft-dmsc-a2a-00:

.. code-block:: toml

    [a2a]
    agent = "bridge.toml"        # the bridge's DMSC identity: an agent file (dmsc agent)
    listen = "https://127.0.0.1:8080"   # serve A2A (Section 6); http:// on loopback only
    certificate = "bridge-https.pem"    # https: the server certificate and key
    key = "bridge-https.key"
    token_authority = "ca.pem"   # require bearer tokens of this domain authority
    token_url = "https://127.0.0.1:8443/token"  # ... named in the served cards
    timeout = 10                 # seconds a bridged call may take
    refresh = 5                  # seconds between listings of the served agents

    [[a2a.import]]               # an A2A agent to import (Section 7), any number
    card = "https://agent.example/.well-known/agent-card.json"
    agent = "proxy.toml"         # the proxy's DMSC identity (issued by the authority)
    jwks = "keys.json"           # the card signers' JWK Set (file or URL); else jku
    require_signature = false    # refuse a card without a signature
    refresh = 30                 # seconds between fetches of the card
    token = "agent.token"        # a bearer token of the A2A agent's own authority

Relative paths are relative to the file.  With ``token_authority`` the listener must be
https (the token's ``cnf`` binds it to the client's TLS certificate, Section 6.3), and
client certificates are verified against that authority.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..host.config import ConfigError
from .http import Listen

#: Default seconds between fetches of an imported card (Section 7.4).
CARD_REFRESH = 30.0


@dataclass(frozen=True, slots=True)
class ImportSpec:
    """One ``[[a2a.import]]`` table."""

    card: str
    agent: Path
    jwks: str | None = None
    require_signature: bool = False
    refresh: float = CARD_REFRESH
    #: A file holding the bearer token the A2A agent wants (its card's securitySchemes).
    token: Path | None = None


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """A validated ``[a2a]`` table."""

    agent: Path | None
    listen: Listen | None
    token_authority: Path | None = None
    token_url: str | None = None
    timeout: float = 10.0
    refresh: float = 5.0
    imports: tuple[ImportSpec, ...] = ()

    @classmethod
    def load(cls, path: str | Path) -> BridgeConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(path, "", str(exc)) from None
        return cls.from_table(data, path)

    @classmethod
    def from_table(cls, data: dict[str, Any], path: Path) -> BridgeConfig:
        base = path.parent

        def fail(key: str, reason: str) -> ConfigError:
            return ConfigError(path, key, reason)

        def only(table: Any, where: str, keys: set[str]) -> dict[str, Any]:
            if not isinstance(table, dict):
                raise fail(where, "not a table")
            for k in table:
                if k not in keys:
                    raise fail(f"{where}.{k}" if where else k,
                               f"unknown key (expected one of {', '.join(sorted(keys))})")
            return table

        def get(table: dict[str, Any], where: str, key: str, kind: type | tuple[type, ...],
                default: Any = None) -> Any:
            v = table.get(key, default)
            if v is not None and (not isinstance(v, kind) or (isinstance(v, bool)
                                  and kind is not bool)):
                raise fail(f"{where}.{key}", "wrong type")
            return v

        def file(table: dict[str, Any], where: str, key: str) -> Path | None:
            v = get(table, where, key, str)
            if v is None:
                return None
            p: Path = base / v
            if not p.is_file():
                raise fail(f"{where}.{key}", f"{p} does not exist")
            return p

        only(data, "", {"a2a"})
        a2a = only(data.get("a2a"), "a2a", {"agent", "listen", "certificate", "key",
                                            "token_authority", "token_url", "timeout",
                                            "refresh", "import"})
        listen_url = get(a2a, "a2a", "listen", str)
        authority, token_url = file(a2a, "a2a", "token_authority"), \
            get(a2a, "a2a", "token_url", str)
        listen = None
        if listen_url is not None:
            try:
                listen = Listen.parse(listen_url, certificate=file(a2a, "a2a", "certificate"),
                                      key=file(a2a, "a2a", "key"), client_ca=authority)
            except ValueError as exc:
                raise fail("a2a.listen", str(exc)) from None
            if listen.scheme == "https" and (listen.certificate is None or listen.key is None):
                raise fail("a2a.certificate", "https needs certificate and key")
        if authority is not None and (listen is None or listen.scheme != "https"):
            raise fail("a2a.listen", "token_authority needs an https listener: tokens are "
                       "bound to the client's TLS certificate")
        if (authority is None) != (token_url is None):
            raise fail("a2a.token_url", "token_authority and token_url go together")
        imports = []
        raw = a2a.get("import", [])
        if not isinstance(raw, list):
            raise fail("a2a.import", "use [[a2a.import]] tables")
        for i, t in enumerate(raw):
            where = f"a2a.import[{i}]"
            only(t, where, {"card", "agent", "jwks", "require_signature", "refresh",
                            "token"})
            card = get(t, where, "card", str)
            agent = file(t, where, "agent")
            if card is None or agent is None:
                raise fail(where, "card and agent are required")
            jwks = get(t, where, "jwks", str)
            if jwks is not None and "://" not in jwks:
                jwks = str(base / jwks)
            imports.append(ImportSpec(card, agent, jwks,
                                      get(t, where, "require_signature", bool, False),
                                      float(get(t, where, "refresh", (int, float),
                                                CARD_REFRESH)), file(t, where, "token")))
        agent = file(a2a, "a2a", "agent")
        if listen is not None and agent is None:
            raise fail("a2a.agent", "serving needs the bridge's identity (an agent file)")
        if listen is None and not imports:
            raise fail("a2a", "nothing to do: give listen, [[a2a.import]] or both")
        return cls(agent, listen, authority, token_url,
                   float(get(a2a, "a2a", "timeout", (int, float), 10.0)),
                   float(get(a2a, "a2a", "refresh", (int, float), 5.0)), tuple(imports))
