"""Codec exceptions (draft-dmsc-protocol-00, Section 4.4)."""

from __future__ import annotations

from ..errors import DmscError
from .registry import ErrorCode


class DecodeError(DmscError, ValueError):
    """A PDU or value could not be decoded.

    ``code`` is the registered :class:`ErrorCode` a receiver reports (its ``.name`` is
    the draft's name) and ``offset`` the octet offset in the PDU where decoding failed.
    """

    def __init__(self, code: ErrorCode, offset: int, reason: str) -> None:
        self.offset = offset
        super().__init__(reason, code)

    def message(self) -> str:
        return f"{self.code.name} at offset {self.offset}: {self.reason}"

    def at(self, base: int) -> DecodeError:
        """Return this error with its offset moved by ``base`` (for nested values)."""
        return DecodeError(self.code, self.offset + base, self.reason)


class EncodeError(DmscError, ValueError):
    """A message cannot be encoded (a value out of range, a PDU over the size limit)."""

    named = False
