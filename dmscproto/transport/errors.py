"""The transport failure every DMSC transport raises (draft-dmsc-protocol-00, Section 9)."""

from __future__ import annotations

from ..codec.registry import ErrorCode
from ..errors import DmscError


class TransportError(DmscError, ConnectionError):
    """A transaction or connection failed; ``code`` is the DMSC error code (Section 11.5)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason, code)
