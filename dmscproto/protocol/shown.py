"""What our capability summaries cover, kept on write (draft-dmsc-protocol-00, Section 6.9).

A gateway's summary towards a target (a peer domain, or its own domain for its own
gateways) covers the records of its domain it holds that its export policy shows the
target, less those withheld after a restart (Section 6.1.2).  The
:class:`~.ports.SummarySource` keeps the terms of every record of the domain as records
are written; a target that is shown every record uses them as they are.  For a target
with an export filter, :class:`ShownTerms` keeps its own counts: each record written
since (the source's journal) is looked at again, O(changes) per summary.  Looking at
every record once, when such a target first appears, is done in slices of at most
``slice_s`` of ``slice_clock`` (none without a clock), so that no step of the gateway
walks the whole table; so is building a target's filter when a term came or went (a
batch of terms at a time, from a snapshot of them; a change meanwhile starts it again).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from ..codec.wire import CapabilitySummary
from .bloom import Bloom, filter_size, set_terms
from .machine import slice_of
from .peering import ExportFor
from .ports import ExportFilter, SummarySource
from .terms import RecordTerms, TermCounts


class _Filtered:
    """The terms of the records a filtered target is shown, and the records still to
    look at."""

    __slots__ = ("allow", "counts", "members", "pending", "todo")

    def __init__(self, allow: ExportFilter, every: list[bytes]) -> None:
        self.allow = allow
        self.counts = TermCounts()
        self.members: dict[bytes, RecordTerms] = {}
        #: Every record held when the target appeared, then those changed since.
        self.todo = every
        self.pending: dict[bytes, None] = {}

    @property
    def done(self) -> bool:
        return not (self.todo or self.pending)

    def work(self, source: SummarySource, withheld: Collection[bytes],
             more: Callable[[], bool]) -> bool:
        """Look at the records to look at while ``more()``; whether none is left."""
        todo, pending, members, counts = self.todo, self.pending, self.members, self.counts
        while (todo or pending) and more():
            if pending:
                aid = next(iter(pending))
                del pending[aid]
            else:
                aid = todo.pop()
            old = members.pop(aid, None)
            if old is not None:
                counts.remove(old)
            terms = source.summary_terms(aid)
            if terms is None or aid in withheld:
                continue
            if self.allow is not None:
                record = source.domain_record(aid)
                if record is None or not self.allow(record):
                    continue
            members[aid] = terms
            counts.add(terms)
        return self.done


class _Build:
    """A target's filter being built from a snapshot of its terms, a batch at a time (a
    filter of thousands of terms costs milliseconds: Section 10.7's WORK_SLICE)."""

    __slots__ = ("counts", "hashes", "out", "todo", "version")

    #: Terms set between two looks at the clock.
    BATCH = 64

    def __init__(self, counts: TermCounts) -> None:
        self.counts, self.version = counts, counts.version
        self.todo = counts.snapshot()
        bits, self.hashes = filter_size(len(counts))
        self.out = bytearray(bits // 8)

    def work(self, more: Callable[[], bool]) -> bool:
        """Set the bits of the terms left while ``more()``; whether the filter is done."""
        todo, n = self.todo, self.BATCH
        while todo:
            prefix, terms = todo[-1]
            while terms:
                set_terms(self.out, [prefix + t for t in terms[-n:]], self.hashes)
                del terms[-n:]
                if not more():
                    return not (terms or len(todo) > 1)
            todo.pop()
        return True


class ShownTerms:
    """The summary terms each target is shown (module doc)."""

    def __init__(self, source: SummarySource, export_for: ExportFor,
                 withheld: Callable[[], Collection[bytes]],
                 slice_clock: Callable[[], float] | None, slice_s: float) -> None:
        self.source = source
        self.export_for = export_for
        self.withheld = withheld
        self.slice_clock = slice_clock
        self.slice_s = slice_s
        self._filtered: dict[str, _Filtered] = {}
        #: The last filter built per target: from which counts, at which version; and
        #: the filters being built.
        self._built: dict[str, tuple[TermCounts, int, CapabilitySummary]] = {}
        self._builds: dict[str, _Build] = {}

    def _counts(self, target: str) -> TermCounts | None:
        """The counts of ``target`` (None: still being gathered)."""
        allow, withheld = self.export_for(target), self.withheld()
        if allow is None and not withheld:
            self._filtered.pop(target, None)
            return self.source.domain_terms
        f = self._filtered.get(target)
        if f is None:
            f = self._filtered[target] = _Filtered(allow, self.source.domain_ids())
        return f.counts if f.done else None

    def bloom(self, target: str) -> Bloom | None:
        """The filter of what ``target`` is shown, None while it is being gathered or
        built (:meth:`gather` goes on).  Built again, a slice at a time, only when a term
        came or went."""
        counts = self._counts(target)
        if counts is None:
            return None
        built = self._built.get(target)
        if built is None or built[0] is not counts or built[1] != counts.version:
            if not self._build(target, counts, slice_of(self.slice_clock, self.slice_s)):
                return None
            built = self._built[target]
        return Bloom(CapabilitySummary(built[2].hashes, counts.records, built[2].bits))

    def _build(self, target: str, counts: TermCounts, more: Callable[[], bool]) -> bool:
        """Build on the filter of ``target`` (from the start if its terms changed since
        it was begun); whether it is done."""
        b = self._builds.get(target)
        if b is None or b.counts is not counts or b.version != counts.version:
            b = self._builds[target] = _Build(counts)
        if not b.work(more):
            return False
        del self._builds[target]
        self._built[target] = (counts, b.version,
                               CapabilitySummary(b.hashes, counts.records, bytes(b.out)))
        return True

    def reconsider(self, agent_ids: Collection[bytes]) -> None:
        """Records whose export changed without a write (released after a restart)."""
        for f in self._filtered.values():
            f.pending.update(dict.fromkeys(agent_ids))

    def gather(self) -> bool:
        """Bring the filtered targets up to date, within one slice; whether they are."""
        changed = self.source.take_domain_changes()
        if changed:
            self.reconsider(changed)
        more = slice_of(self.slice_clock, self.slice_s)
        withheld = self.withheld()
        counted = all([f.work(self.source, withheld, more) for f in self._filtered.values()])
        return all([self._build(t, b.counts, more) for t, b in list(self._builds.items())]) \
            and counted

    def keep(self, targets: Collection[str]) -> None:
        """Forget the targets no peer needs any more."""
        for target in [t for t in self._filtered if t not in targets]:
            del self._filtered[target]
        for target in [t for t in self._built if t not in targets]:
            del self._built[target]
        for target in [t for t in self._builds if t not in targets]:
            del self._builds[target]
