"""The error every DMSC security check raises (draft-dmsc-protocol-00, Section 10).

Each refusal carries the registered error code (Section 11.5) a gateway puts in the
STATUS of its answer, and a reason for the DIAGNOSTIC TLV and the logs.
"""

from __future__ import annotations

from ..codec.registry import ErrorCode
from ..errors import DmscError
from ..protocol.machine import Refusal


class SecurityError(DmscError, ValueError):
    """A security check failed; ``code`` is the registered error code to answer with."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason, code)

    def refusal(self) -> Refusal:
        """The node-hook answer carrying this error's code and reason."""
        return Refusal(self.code, self.reason)
