"""The Agent Gateway's core logic, sans-I/O (draft Sections 5 and 6).

:mod:`.store` is the durable registry (SQLite, WAL), :mod:`.index` the in-memory
capability index with IAIP matching and ranking, :mod:`.routing` the routing table and
forwarding decisions; :mod:`.registry` ties them together for registration and
discovery, and :mod:`.core` adds what is learned from peers and exported to them, behind
one sans-I/O API.  Export policy is :mod:`dmscproto.protocol.policy` (the security layer
applies it too).
"""

from ..codec.changes import TableChanges
from ..protocol.policy import export_filter, exportable
from ..protocol.ports import RegisterOutcome
from .core import GatewayCore
from .index import CapabilityIndex, IndexTerms, Match
from .registry import Registry
from .routing import Decision, DeliverLocal, Forward, Reject, Route, RoutingTable
from .store import RegistryStore, StoredRecord, StoredRow, StoreError

__all__ = [
    "CapabilityIndex",
    "Decision",
    "DeliverLocal",
    "Forward",
    "GatewayCore",
    "IndexTerms",
    "Match",
    "RegisterOutcome",
    "Registry",
    "RegistryStore",
    "Reject",
    "Route",
    "RoutingTable",
    "StoreError",
    "StoredRecord",
    "StoredRow",
    "TableChanges",
    "export_filter",
    "exportable",
]
