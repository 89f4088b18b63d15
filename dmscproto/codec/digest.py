"""The DIGEST summary rule (draft-dmsc-protocol-00, Section 6.6)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .wire import DigestSummary, VersionedId


def summarize(entries: Iterable[VersionedId]) -> DigestSummary:
    """Count and SHA-256 over the entries sorted by agent id, each contributing its
    16-octet agent id followed by its version as an unsigned 64-bit big-endian integer."""
    ordered = sorted(entries, key=lambda e: e.agent_id)
    h = hashlib.sha256()
    for e in ordered:
        h.update(e.agent_id + e.version.to_bytes(8, "big"))
    return DigestSummary(len(ordered), h.digest())
