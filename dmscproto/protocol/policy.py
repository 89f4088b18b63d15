"""Export policy: which records a gateway shows a peer (draft-dmsc-protocol-00, 7.4).

An :class:`ExportPolicy` applies to the peers whose domain is in ``peer_domains``; a
peer of any other domain is shown nothing.  For a listed peer, a record is exported
when

* its agent URI is in ``include_agents``, or
* none of its skill tags is in ``exclude_tags``, and either both ``include_tags`` and
  ``include_agents`` are empty (export everything else) or one of its skill tags is in
  ``include_tags``.

Tags compare after Unicode case folding, as in discovery (so an excluded ``internal``
also excludes ``Internal``).  The same rule filters UPDATE advertisements
and, as the ``allow`` of :meth:`GatewayCore.discover`, discovery answers to that peer.
"""

from __future__ import annotations

from collections.abc import Callable

from ..codec.values import CapabilityRecord, ExportPolicy


def exportable(policy: ExportPolicy, peer_domain: str, record: CapabilityRecord) -> bool:
    """Whether ``policy`` lets ``record`` be shown to a peer of ``peer_domain``."""
    if peer_domain not in policy.peer_domains:
        return False
    if record.agent_uri in policy.include_agents:
        return True
    tags = {t.casefold() for s in record.skills for t in s.tags}
    if not tags.isdisjoint(t.casefold() for t in policy.exclude_tags):
        return False
    if not policy.include_tags and not policy.include_agents:
        return True
    return not tags.isdisjoint(t.casefold() for t in policy.include_tags)


def export_filter(policy: ExportPolicy, peer_domain: str) -> Callable[[CapabilityRecord], bool]:
    """:func:`exportable` bound to one peer, for ``GatewayCore.discover(allow=...)``."""
    return lambda record: exportable(policy, peer_domain, record)
