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
  :class:`~dmscproto.codec.signing.SignatureError`, and the token endpoint's refusal
  :class:`~dmscproto.security.token_server.TokenRequestError`;
* configuration and storage: :class:`~dmscproto.host.config.ConfigError`,
  :class:`~dmscproto.gateway.store.StoreError`;
* the agent SDK: :class:`~dmscproto.agent.AgentError` (the gateway refused or failed a
  request), :class:`NotConnected`, :class:`DeadlineExceeded` (also a ``TimeoutError``)
  and :class:`MissingExtra` (an optional dependency is not installed).

:class:`DmscError` itself is defined with the codec, the lowest layer, and exported
here.  ``except DmscError`` catches all of them; the historical bases (``ValueError`` for the
codec, ``ConnectionError`` for transports) are kept as second bases.
"""

from __future__ import annotations

from .codec.errors import DmscError
from .codec.registry import ErrorCode

__all__ = ["DeadlineExceeded", "DmscError", "MissingExtra", "NotConnected", "require_extra"]


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


def require_extra(module: str, extra: str, feature: str, package: str) -> None:
    """Import ``module`` (of the PyPI ``package``) or raise :class:`MissingExtra` naming
    the extra that installs it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtra(feature, extra, package) from None
