"""The root of every error dmscproto raises: :class:`DmscError` (draft-dmsc-protocol-00,
Section 11.5, the Error Code registry).

Each layer has its subclasses, each carrying the registered :class:`ErrorCode` that
describes it as ``code`` and a readable message as ``str(error)``:

* codec: :class:`~dmscproto.codec.errors.DecodeError`, :class:`~dmscproto.codec.errors.EncodeError`;
* protocol machines: :class:`~dmscproto.protocol.machine.ProtocolError`;
* transports: :class:`~dmscproto.transport.errors.TransportError` (and QUIC's
  :class:`~dmscproto.transport.quic.ConnectionClosed`);
* security: :class:`~dmscproto.security.errors.SecurityError`,
  :class:`~dmscproto.security.ca.CertificateError`,
  :class:`~dmscproto.security.signing.SignatureError`;
* configuration and storage: :class:`~dmscproto.runtime.config.ConfigError`,
  :class:`~dmscproto.gateway.store.StoreError`;
* the agent SDK: :class:`~dmscproto.agent.AgentError` (the gateway refused or failed a
  request), :class:`NotConnected`, :class:`DeadlineExceeded` (also a ``TimeoutError``)
  and :class:`MissingExtra` (an optional dependency is not installed).

``except DmscError`` catches all of them; the historical bases (``ValueError`` for the
codec, ``ConnectionError`` for transports) are kept as second bases.
"""

from __future__ import annotations

from typing import ClassVar

from .codec.registry import ErrorCode


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


class NotConnected(DmscError, ConnectionError):
    """An agent was asked to talk to its gateway before :meth:`connect` (or after
    :meth:`close`)."""

    code = ErrorCode.TARGET_UNREACHABLE


class DeadlineExceeded(DmscError, TimeoutError):
    """A local deadline passed before the answer came (``call(timeout=...)``,
    ``--timeout``); the request was abandoned at both ends."""

    code = ErrorCode.TRANSACTION_TIMEOUT


class MissingExtra(DmscError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names
    the ``pip install 'dmscproto[EXTRA]'`` that adds it."""

    named = False

    def __init__(self, feature: str, extra: str, module: str) -> None:
        self.extra = extra
        super().__init__(f"{feature} needs the {module} package: "
                         f"pip install 'dmscproto[{extra}]'")


def require_extra(module: str, extra: str, feature: str) -> None:
    """Import ``module`` or raise :class:`MissingExtra` naming the extra to install."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtra(feature, extra, module.split(".")[0]) from None
