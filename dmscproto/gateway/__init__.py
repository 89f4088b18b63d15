"""The Agent Gateway's core logic, sans-I/O (draft Sections 5 and 6).

:mod:`.store` is the durable registry (SQLite, WAL), :mod:`.index` the in-memory
capability index with IAIP matching and ranking, :mod:`.routing` the routing table and
forwarding decisions, :mod:`.policy` export policy, and :mod:`.core` ties them together
behind one sans-I/O API.
"""

from .core import GatewayCore, RegisterOutcome
from .index import CapabilityIndex, IndexTerms, Match
from .policy import export_filter, exportable
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
    "RegistryStore",
    "Reject",
    "Route",
    "RoutingTable",
    "StoreError",
    "StoredRecord",
    "StoredRow",
    "export_filter",
    "exportable",
]
