"""The Agent Gateway's core logic, sans-I/O (draft Sections 5 and 6).

:mod:`.store` is the durable registry (SQLite, WAL), :mod:`.index` the in-memory
capability index with IAIP matching and ranking, :mod:`.routing` the routing table and
forwarding decisions, :mod:`.policy` export policy; :mod:`.registry` ties them together
for registration and discovery, and :mod:`.core` adds what is learned from peers and
exported to them, behind one sans-I/O API.
"""

from ..codec.changes import TableChanges
from .core import GatewayCore
from .index import CapabilityIndex, IndexTerms, Match
from .policy import export_filter, exportable
from .registry import RegisterOutcome, Registry
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
