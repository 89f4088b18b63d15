"""The manifest (``interop/implementations.toml``): one entry per implementation, its
endpoint command, the roles it plays and the transports it speaks.  This project's
adapter is the first entry."""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .contract import Role

MANIFEST = Path(__file__).resolve().parent / "implementations.toml"
TRANSPORTS = ("quic", "dtls", "udp")


class ManifestError(ValueError):
    """An entry the runner cannot use."""


@dataclass(frozen=True)
class Implementation:
    name: str
    command: tuple[str, ...]
    cwd: Path
    roles: frozenset[Role]
    transports: tuple[str, ...]
    url: str = ""

    def argv(self) -> list[str]:
        return [sys.executable if a == "{python}" else a for a in self.command]

    def plays(self, role: Role) -> bool:
        return role in self.roles


def load(path: Path = MANIFEST) -> list[Implementation]:
    """Every implementation of the manifest at ``path``, in its order."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, entry in enumerate(data.get("implementation", [])):
        where = f"{path.name}: implementation[{i}]"
        try:
            name, command = str(entry["name"]), entry["command"]
            roles = frozenset(Role(r) for r in entry.get("roles", []))
            transports = tuple(entry.get("transports", TRANSPORTS))
        except (KeyError, ValueError) as exc:
            raise ManifestError(f"{where}: {exc}") from None
        if isinstance(command, str):
            command = command.split()
        if not command or not all(isinstance(a, str) for a in command):
            raise ManifestError(f"{where}.command: a non-empty list of strings")
        if unknown := set(transports) - set(TRANSPORTS):
            raise ManifestError(f"{where}.transports: unknown {sorted(unknown)}")
        out.append(Implementation(name, tuple(command),
                                  (path.parent / entry.get("cwd", ".")).resolve(), roles,
                                  transports, str(entry.get("url", ""))))
    if len({i.name for i in out}) != len(out):
        raise ManifestError(f"{path.name}: implementation names must be unique")
    return out
