"""The DMSC agent SDK (:mod:`.sdk`): an :class:`Agent` registers with its home gateway,
answers the requests routed to it, discovers other agents and calls them.

Everything an application needs is importable from here: the agent and its results,
the query and record types, and the errors (every one a :class:`DmscError`).
"""

from ..codec.errors import DecodeError
from ..codec.registry import ErrorCode, Scope
from ..codec.values import DiscoveryQuery, HopRecord, Provider, Skill
from ..errors import DeadlineExceeded, DmscError, MissingExtra, NotConnected
from ..host.config import ConfigError
from ..protocol.machine import ProtocolError
from ..security.errors import SecurityError
from ..transport.errors import TransportError
from .results import AgentError, Found, Handler, RateLimited, Request, Trace
from .sdk import Agent

__all__ = ["Agent", "AgentError", "ConfigError", "DeadlineExceeded", "DecodeError",
           "DiscoveryQuery", "DmscError", "ErrorCode", "Found", "Handler", "HopRecord",
           "MissingExtra", "NotConnected", "ProtocolError", "Provider", "RateLimited",
           "Request", "Scope", "SecurityError", "Skill", "Trace", "TransportError"]
