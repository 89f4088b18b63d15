"""The transport failure every DMSC transport raises (draft-dmsc-protocol-00, Section 9)."""

from __future__ import annotations

from ..codec.registry import ErrorCode


class TransportError(ConnectionError):
    """A transaction or connection failed; ``code`` is the DMSC error code (Section 11.5)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason
