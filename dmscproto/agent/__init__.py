"""The DMSC agent SDK (DESIGN.md layer 5): see :mod:`.sdk`."""

from ..codec.values import DiscoveryQuery, Skill
from .sdk import Agent, AgentError, Found, Handler, Request

__all__ = ["Agent", "AgentError", "DiscoveryQuery", "Found", "Handler", "Request", "Skill"]
