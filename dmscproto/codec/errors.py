"""Codec exceptions (draft-dmsc-protocol-00, Section 4.4), and :class:`DmscError`, the root
of every dmscproto error (the codec is the lowest layer; see :mod:`dmscproto.errors`)."""

from __future__ import annotations

from typing import ClassVar

from .registry import ErrorCode


class DmscError(Exception):
    """A dmscproto error: ``code`` is the registered error code that describes it,
    ``reason`` the text after the code name in ``str(error)``."""

    #: The code of errors of this class when the raiser gives none.
    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    #: Whether ``str(error)`` starts with the code's name (classes whose reasons are
    #: complete sentences on their own leave it out).
    named: ClassVar[bool] = True

    def __init__(self, reason: str = "", code: ErrorCode | None = None) -> None:
        if code is not None:
            self.code = code
        self.reason = reason
        super().__init__(self.message())

    def message(self) -> str:
        """The readable message: the code's name (if :attr:`named`) and the reason."""
        if not self.named:
            return self.reason
        return f"{self.code.name}: {self.reason}" if self.reason else self.code.name


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
