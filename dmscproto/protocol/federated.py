"""FEDERATED DISCOVER relayed to the domains whose summary matches (draft-dmsc-protocol-00,
Sections 5.2.1 and 6.9), one machine per transaction at a gateway.

A gateway that holds capability summaries answers a FEDERATED DISCOVER from its own
records and, in the same transaction, relays it to the next hop towards each origin
whose best summary may match the query (:meth:`SummaryTable.matching`) when

* no record of that origin's domain is among its own answers (a domain whose records
  it replicates is answered from them), the domain is not its own, and the transit
  rule lets that domain's records be shown to the requester (a gateway of another
  domain);
* the next hop is not on the request's PATH_VECTOR, and the request has no HOP_LIMIT
  or one above 0.

One DISCOVER goes to each such next hop (the next hop relays further itself), with a
new transaction id, the same QUERY, SCOPE and MAX_RESULTS, its own Gateway ID appended
to PATH_VECTOR, without SOURCE_AGENT and ACCESS_TOKEN, and a HOP_LIMIT (:func:`hop_limit`)
of the arriving one less one, or, where the DISCOVER arrived without one (this gateway
starts the relaying), the gateways that relay along the longest best summary path through
that next hop (its length less the origin) plus RELAY_HOP_SLACK; at most RELAY_MAX_HOPS
either way.  A summary's path counts gateways, and crossing a domain costs one or more,
so the limit follows the path; the path vector prevents loops.  It waits
for every answer or REQUEST_TIMEOUT times FORWARD_FRACTION to the power of (the path's
length + 1), whichever comes first; an ERROR, or no answer, counts as no result.  Each
relayed RESULT passes the record check towards the peer that sent it (signature, import
policy: Section 10.5) or is dropped.  The answer merges its own and the relayed
results: one per Agent ID (its own record first, else the highest score), ordered by
score then Agent ID, passed through the requester's policy, limited to MAX_RESULTS.
The relayed results are kept for DISCOVERY_CACHE_TTL (an :class:`~.ports.AnswerCache`),
with the next hops that answered and the HOP_LIMIT each was sent: the same query and
limit within it is answered without relaying when those reached every next hop it would
be relayed to, as far (a DISCOVER that arrived with a PATH_VECTOR or a small HOP_LIMIT
relays less far than one that starts here); a ROUTE_REQUEST naming one of those agents
is forwarded to the peer its record came from.

A ROUTE_REQUEST with a QUERY is resolved the same way first when no held record
matches it (the machine then has no requester and reports :class:`QueryResolved`).

The evaluation (match and rank of the held records, then the summaries checked) runs
under the gateway's DISCOVER_BUDGET (Section 10.7): over it, the DISCOVER is answered
QUERY_TOO_LARGE (a ROUTE_REQUEST being resolved gets ROUTE_REPLY QUERY_TOO_LARGE) and
nothing is relayed.  Checking the relayed RESULTs is not budgeted: each is the record
check of a learned record, at most MAX_RESULTS per answer (fewer when the PDU limit
cuts them), and refusing then would waste the answers the other gateways gave.

The machine is typed (:mod:`.typed`): what it reads of the gateway (its records, the
kept answers, the summaries, its peers) comes through ports, and each input carries
what its action needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from ..codec.messages import (
    Discover,
    DiscoverReply,
    Error,
    Message,
    RouteReply,
    RouteRequest,
)
from ..codec.pdu import encode
from ..codec.registry import (
    MAX_PDU_SIZE,
    RELAY_HOP_SLACK,
    ErrorCode,
    MessageType,
    Scope,
    limit,
    timer,
)
from ..codec.wire import Result
from .discovery import PduLimit, fit_results
from .events import RelayEvent
from .machine import Handle, Outbox, ProtocolError, TransactionIds
from .ports import AnswerCache, ExportFilter, RecordIndex, Relayed, query_key
from .registration import RecordVerifier
from .summary import SummaryRoute, SummaryTable
from .tracecontext import HopTracer, W3CHops
from .typed import StepInput, TypedMachine

#: What a requester (an association) may be shown (None: everything).
RecordFilter = ExportFilter


@dataclass(frozen=True, slots=True)
class QueryResolved(RelayEvent):
    """A ROUTE_REQUEST's QUERY was relayed and the answers are kept: route it now."""

    source: Handle
    request: RouteRequest


@dataclass
class DiscoveryContext:
    """What the relayed DISCOVER transactions of one gateway share: its ports."""

    records: RecordIndex
    #: The relayed answers kept for DISCOVERY_CACHE_TTL.
    kept: AnswerCache
    summaries: SummaryTable
    txids: TransactionIds
    #: The association of an ESTABLISHED peer session with a gateway id, if any.
    peer_handle: Callable[[bytes], Handle | None]
    #: The record check of a relayed RESULT, towards the peer that sent it.
    verifier: RecordVerifier
    #: The domain of the gateway behind an association (None: an agent).
    gateway_domain: Callable[[Handle], str | None]
    #: Whether records of a domain (second) may be shown to one (first): transit rule.
    transit: Callable[[str, str], bool]
    #: The largest PDU an association takes (the answer carries fewer RESULTs).
    pdu_limit: PduLimit = lambda _handle: MAX_PDU_SIZE
    request_timeout: float = timer("REQUEST_TIMEOUT")
    forward_fraction: float = timer("FORWARD_FRACTION")
    #: Each relayed DISCOVER is one hop of its trace (Section 7.5).
    tracer: HopTracer = field(default_factory=W3CHops)
    #: The largest HOP_LIMIT a relayed DISCOVER is sent with.
    max_hops: int = int(limit("RELAY_MAX_HOPS"))
    #: Starts the ``spend`` callback of one evaluation (Section 10.7; None: unbounded).
    budget: Callable[[], Callable[[], None]] | None = None


def hop_limit(arrived: int | None, path_length: int, max_hops: int) -> int:
    """The HOP_LIMIT of a relayed DISCOVER (module doc): ``arrived`` less one, or, where
    the DISCOVER had none, the relays along a best summary path of ``path_length``
    gateways plus RELAY_HOP_SLACK; at most ``max_hops``."""
    wanted = path_length - 1 + RELAY_HOP_SLACK if arrived is None else arrived - 1
    return min(wanted, max_hops)


class FedState(Enum):
    IDLE = "IDLE"
    RELAYED = "RELAYED"
    DONE = "DONE"


class FedInput(Enum):
    LOCAL = "DISCOVER [no summary matches, or kept answers]"
    RELAY = "DISCOVER [summaries match]"
    OVER_BUDGET = "DISCOVER [evaluation over DISCOVER_BUDGET]"
    REPLY = "DISCOVER_REPLY or ERROR [more pending]"
    LAST_REPLY = "DISCOVER_REPLY or ERROR [last pending]"
    TIMEOUT = "transaction timer"


class FedAction(Enum):
    ANSWER = "answer DISCOVER_REPLY from held records and kept answers (merged)"
    REFUSE = "answer QUERY_TOO_LARGE (ROUTE_REPLY when resolving a ROUTE_REQUEST)"
    RELAY = ("send DISCOVER to each next hop towards a matching summary (HOP_LIMIT from "
             "the summary's path or the arriving one, own id appended to PATH_VECTOR); "
             "start transaction timer")
    COLLECT = "keep the RESULTs that pass the record check"
    MERGE = ("keep the RESULTs that pass the record check; keep the relayed answers for "
             "DISCOVERY_CACHE_TTL; answer merged DISCOVER_REPLY; stop transaction timer")


_S, _I, _A = FedState, FedInput, FedAction


@dataclass(frozen=True, slots=True)
class AnswerHeld(StepInput):
    """The DISCOVER, answered from held records and the answers kept for it."""

    KIND = _I.LOCAL
    local: tuple[Result, ...]
    kept: tuple[Relayed, ...]


@dataclass(frozen=True, slots=True)
class RelayTo(StepInput):
    """The DISCOVER, with the next hops towards the summaries that may match and the
    HOP_LIMIT to send each."""

    KIND = _I.RELAY
    local: tuple[Result, ...]
    next_hops: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class OverBudget(StepInput):
    """The DISCOVER, whose evaluation used up DISCOVER_BUDGET."""

    KIND = _I.OVER_BUDGET
    diagnostic: str


@dataclass(frozen=True, slots=True)
class Answered(StepInput):
    """An answer to a relayed DISCOVER, more pending."""

    KIND = _I.REPLY
    source: Handle
    msg: DiscoverReply | Error


@dataclass(frozen=True, slots=True)
class LastAnswered(StepInput):
    """The answer to the last relayed DISCOVER pending."""

    KIND = _I.LAST_REPLY
    source: Handle
    msg: DiscoverReply | Error


@dataclass(frozen=True, slots=True)
class TimedOut(StepInput):
    KIND = _I.TIMEOUT


class FederatedDiscovery(TypedMachine):
    """One FEDERATED DISCOVER relayed by a gateway (module doc)."""

    NAME = "federated-discovery"
    TITLE = "Discovery relayed to summarized domains, one transaction at a gateway"
    EVENTS = RelayEvent
    State, Input, Action = FedState, FedInput, FedAction
    INITIAL = FedState.IDLE
    TIMERS = ("REQUEST_TIMEOUT", "DISCOVERY_CACHE_TTL")
    MESSAGE_INPUTS = {
        MessageType.DISCOVER: (_I.LOCAL, _I.RELAY, _I.OVER_BUDGET),
        MessageType.DISCOVER_REPLY: (_I.REPLY, _I.LAST_REPLY),
        MessageType.ERROR: (_I.REPLY, _I.LAST_REPLY),
    }
    TABLE = {
        (_S.IDLE, _I.LOCAL): (_A.ANSWER, _S.DONE),
        (_S.IDLE, _I.RELAY): (_A.RELAY, _S.RELAYED),
        (_S.IDLE, _I.OVER_BUDGET): (_A.REFUSE, _S.DONE),
        (_S.RELAYED, _I.REPLY): (_A.COLLECT, _S.RELAYED),
        (_S.RELAYED, _I.LAST_REPLY): (_A.MERGE, _S.DONE),
        (_S.RELAYED, _I.TIMEOUT): (_A.MERGE, _S.DONE),
    }

    def __init__(self, outbox: Outbox, ctx: DiscoveryContext, upstream: Handle,
                 request: Discover, allow: RecordFilter, *,
                 resolving: RouteRequest | None = None) -> None:
        super().__init__(outbox)
        self.ctx = ctx
        self.upstream = upstream
        self.request = request
        self.allow = allow
        #: The ROUTE_REQUEST whose QUERY this resolves (no DISCOVER_REPLY then).
        self.resolving = resolving
        #: (association, transaction id) of each DISCOVER relayed, not yet answered.
        self.pending: dict[tuple[Handle, int], bytes] = {}
        #: The HOP_LIMIT of the DISCOVER relayed to each next hop, and those that answered.
        self._sent: dict[bytes, int] = {}
        self._reached: dict[bytes, int] = {}
        self.deadline: float | None = None
        self._local: tuple[Result, ...] = ()
        self._relayed: dict[bytes, Relayed] = {}
        #: This gateway's hop of the request's trace (Section 7.5).
        self.hop = ctx.tracer.begin(request.TYPE, request.trace)

    @property
    def done(self) -> bool:
        return self.state is FedState.DONE

    @property
    def key(self) -> bytes:
        return query_key(self.request.query, self.request.max_results)

    # --- inputs -------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """The DISCOVER: answered from what is held, or relayed (:meth:`classify`)."""
        self.run(self.classify(now), now)

    def classify(self, now: float) -> AnswerHeld | RelayTo | OverBudget:
        """Held answers (own records, kept answers), else the summaries' next hops; the
        evaluation under the discovery budget (module doc)."""
        req = self.request
        spend = (lambda: None) if self.ctx.budget is None else self.ctx.budget()
        try:
            local = tuple(self.ctx.records.discover(req.query, Scope.FEDERATED,
                                                    req.max_results, now, self.allow, spend))
            hops = () if self.resolving is not None and local \
                else self._candidates(local, spend)
        except ProtocolError as over:
            return OverBudget(over.diagnostic)
        kept = self.ctx.kept.answers(self.key, now, hops)
        return AnswerHeld(local, kept or ()) if kept is not None or not hops \
            else RelayTo(local, hops)

    def _candidates(self, local: tuple[Result, ...], spend: Callable[[], None]
                    ) -> tuple[tuple[bytes, int], ...]:
        """The next hops to relay to and their HOP_LIMITs (module doc)."""
        req = self.request
        if req.hop_limit is not None and req.hop_limit <= 0:
            return ()
        path = req.path or ()
        answered = {r.record.record.domain for r in local}
        asking = self.ctx.gateway_domain(self.upstream)
        own = self.ctx.records.domain

        def keep(r: SummaryRoute) -> bool:
            spend()
            return r.domain not in answered and r.domain != own \
                and r.next_hop not in path and self.ctx.peer_handle(r.next_hop) is not None \
                and (asking is None or self.ctx.transit(asking, r.domain))

        longest: dict[bytes, int] = {}
        for r in self.ctx.summaries.matching(req.query, keep):
            longest[r.next_hop] = max(longest.get(r.next_hop, 0), len(r.path))
        return tuple((gid, hop_limit(req.hop_limit, n, self.ctx.max_hops))
                     for gid, n in sorted(longest.items()))

    def receive(self, source: Handle, msg: Message, now: float) -> None:
        """An answer to one of the relayed DISCOVERs (matched by the caller)."""
        try:
            if not isinstance(msg, DiscoverReply | Error) \
                    or (source, msg.transaction_id) not in self.pending:
                raise self.unexpected(msg)
            inp = LastAnswered(source, msg) if len(self.pending) == 1 \
                else Answered(source, msg)
            if not self.rows_for(inp.KIND):
                raise self.unexpected(msg)
            self.run(inp, now)
        except ProtocolError as err:
            self.refuse(source, msg, err)
            raise

    def get_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.run(TimedOut(), now)

    # --- actions ------------------------------------------------------------------------
    def _answer(self, now: float, inp: AnswerHeld) -> None:
        self._local = inp.local
        self._finish(inp.kept)

    def _refuse(self, now: float, inp: OverBudget) -> None:
        self.hop.end(ErrorCode.QUERY_TOO_LARGE, inp.diagnostic,
                     source=self.request.source_agent)
        code, req = ErrorCode.QUERY_TOO_LARGE, self.resolving or self.request
        self.outbox.send(self.upstream, RouteReply(
            transaction_id=req.transaction_id, status=code, diagnostic=inp.diagnostic,
            trace=req.trace) if isinstance(req, RouteRequest) else DiscoverReply(
            transaction_id=req.transaction_id, status=code, diagnostic=inp.diagnostic,
            trace=req.trace))

    def _relay(self, now: float, inp: RelayTo) -> None:
        self._local = inp.local
        req = self.request
        path = (*(req.path or ()), self.ctx.records.gateway_id)
        for gid, hops in inp.next_hops:
            handle = self.ctx.peer_handle(gid)
            txid = self.ctx.txids()
            self.pending[(handle, txid)] = gid
            self._sent[gid] = hops
            self.outbox.send(handle, Discover(
                transaction_id=txid, query=req.query, scope=Scope.FEDERATED,
                max_results=req.max_results, hop_limit=hops, path=path,
                trace=self.hop.context))
        self.deadline = now + self.ctx.request_timeout * self.ctx.forward_fraction ** len(path)

    def _collect(self, now: float, inp: Answered | LastAnswered) -> None:
        gid = self.pending.pop((inp.source, inp.msg.transaction_id))
        if not isinstance(inp.msg, DiscoverReply) or inp.msg.status is not ErrorCode.SUCCESS:
            return
        self._reached[gid] = self._sent[gid]
        for r in inp.msg.results:
            aid = r.record.record.agent_id
            if self.ctx.verifier(inp.source, r.record, now) is not None \
                    or aid in self.ctx.records:
                continue
            held = self._relayed.get(aid)
            if held is None or r.score > held.score:
                self._relayed[aid] = Relayed(r.score, r.record, gid)

    def _merge(self, now: float, inp: LastAnswered | TimedOut) -> None:
        if isinstance(inp, LastAnswered):
            self._collect(now, inp)
        self.deadline = None
        self.pending.clear()
        kept = tuple(sorted(self._relayed.values(),
                            key=lambda a: (-a.score, a.record.record.agent_id)))
        self.ctx.kept.expire(now)
        self.ctx.kept.put(self.key, kept, now, self._reached)
        self._finish(kept)

    def _finish(self, kept: tuple[Relayed, ...]) -> None:
        """Answer the requester with the merged results (or report the resolved query)."""
        self.hop.end(ErrorCode.SUCCESS, source=self.request.source_agent)
        if self.resolving is not None:
            self.outbox.emit(QueryResolved(self.upstream, self.resolving))
            return
        req = self.request
        seen = {r.record.record.agent_id for r in self._local}
        merged = list(self._local)
        for a in kept:
            if a.record.record.agent_id not in seen and (
                    self.allow is None or self.allow(a.record.record)):
                merged.append(Result(a.score, a.record))
        merged.sort(key=lambda r: (-r.score, r.record.record.agent_id))
        empty = DiscoverReply(transaction_id=req.transaction_id, status=ErrorCode.SUCCESS,
                              trace=req.trace)
        room = self.ctx.pdu_limit(self.upstream) - len(encode(empty))
        self.outbox.send(self.upstream, replace(
            empty, results=fit_results(merged[:req.max_results], room)))
