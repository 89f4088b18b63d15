"""Per-association rate and cost limits of a gateway (draft-dmsc-protocol-00, Section
10.7), sans-I/O like the node that applies them.

Each association has a token bucket: agents' buckets refill at RATE_AGENT tokens a
second up to RATE_AGENT_BURST, peer gateways' at RATE_PEER up to RATE_PEER_BURST.  A
request takes one token, a DISCOVER DISCOVER_COST (it is the request that costs a
gateway most); one that finds too few tokens is refused with RATE_LIMITED and, in
RETRY_AFTER, the milliseconds until enough will have been refilled.  So that no
association takes more than its share of the gateway, however many it opens, buckets
are kept per association and at most ``max_tracked`` of them (least recently used
forgotten: a forgotten one starts full).  A peer's CERTIFICATEs (Section 6.10) draw on a
bucket of their own, CERTIFICATE_RATE up to CERTIFICATE_BURST, and one longer than
CERTIFICATE_MAX_SIZE is refused with INVALID_TLV_LENGTH, before the certificate chain
check each would cost.  A query (of a DISCOVER, or of a ROUTE_REQUEST
that names no target) longer than QUERY_MAX_INTENT octets of intent or with more than
QUERY_MAX_TERMS skills, tags, modes and constraints is refused with QUERY_TOO_LARGE
before it costs anything.  A DISCOVER whose evaluation (match and rank) takes more than
DISCOVER_BUDGET of CPU time is stopped there and refused with QUERY_TOO_LARGE
(:class:`Budget`), so that no query, whatever the limits and the table size, holds the
event loop longer than that.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..codec.messages import Certificate, Discover, Message, RouteRequest
from ..codec.registry import ErrorCode, MessageType, limit
from ..codec.values import DiscoveryQuery
from ..protocol.machine import ProtocolError

#: Read for every request checked, made once: not a union made per request, nor an
#: Enum member read (~60 ns on 3.11, timeit).
_QUERIED = (Discover, RouteRequest)
_DISCOVER = MessageType.DISCOVER


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst``; full when made."""

    rate: float
    burst: float
    tokens: float
    at: float

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens and return 0, or return the seconds until there will be
        enough (nothing taken)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a request is refused before it is processed; ``retry_after`` in ms."""

    code: ErrorCode
    diagnostic: str
    retry_after: int | None = None


class Budget:
    """A CPU-time budget per evaluation (Section 10.7): :meth:`start` gives the ``spend``
    callback the index calls as it works, which raises :class:`ProtocolError`
    QUERY_TOO_LARGE once ``seconds`` of the thread's CPU time (``clock``) are used.  CPU
    time, not wall time, so a loaded machine does not refuse cheap queries."""

    def __init__(self, seconds: float = limit("DISCOVER_BUDGET") / 1000,
                 clock: Callable[[], float] = time.thread_time) -> None:
        self.seconds = seconds
        self.clock = clock

    def start(self) -> Callable[[], None]:
        deadline = self.clock() + self.seconds

        def spend() -> None:
            if self.clock() > deadline:
                raise ProtocolError(ErrorCode.QUERY_TOO_LARGE,
                                    f"evaluating the query took more than "
                                    f"{self.seconds * 1000:g} ms", MessageType.DISCOVER)
        return spend


class RequestLimits:
    """Rate, cost and query-size limits of one gateway (module docstring).  ``value(name)``
    gives each limit (default: the registry's)."""

    def __init__(self, value: Callable[[str], float] = limit, *,
                 max_tracked: int = 65536) -> None:
        self.agent = (value("RATE_AGENT"), value("RATE_AGENT_BURST"))
        self.peer = (value("RATE_PEER"), value("RATE_PEER_BURST"))
        self.certificate = (value("CERTIFICATE_RATE"), value("CERTIFICATE_BURST"))
        self.max_certificate = int(value("CERTIFICATE_MAX_SIZE"))
        self.discover_cost = value("DISCOVER_COST")
        self.max_intent = int(value("QUERY_MAX_INTENT"))
        self.max_terms = int(value("QUERY_MAX_TERMS"))
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._certificates: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def check(self, source: Hashable, msg: Message, peer: bool, now: float) -> Refused | None:
        """The refusal of request ``msg`` from ``source`` (a peer gateway's association
        if ``peer``), or None to process it (its tokens taken)."""
        if isinstance(msg, Certificate):
            return self.check_certificate(source, msg, now)
        query = msg.query if isinstance(msg, _QUERIED) else None
        if query is not None:
            refused = self.check_query(query)
            if refused is not None:
                return refused
        cost = self.discover_cost if msg.TYPE is _DISCOVER else 1.0
        rate, burst = self.peer if peer else self.agent
        wait = self._bucket(self._buckets, source, rate, burst, now).take(cost, now)
        if wait == 0.0:
            return None
        return Refused(ErrorCode.RATE_LIMITED,
                       f"over {rate:g} tokens a second ({cost:g} for {msg.TYPE.name})",
                       max(1, math.ceil(wait * 1000)))

    def check_query(self, query: DiscoveryQuery) -> Refused | None:
        """QUERY_TOO_LARGE for a query beyond QUERY_MAX_INTENT or QUERY_MAX_TERMS."""
        intent = len(query.intent.encode()) if query.intent else 0
        if intent > self.max_intent:
            return Refused(ErrorCode.QUERY_TOO_LARGE,
                           f"intent of {intent} octets exceeds {self.max_intent}")
        terms = (len(query.skills) + len(query.tags) + len(query.input_modes)
                 + len(query.output_modes) + len(query.constraints))
        if terms > self.max_terms:
            return Refused(ErrorCode.QUERY_TOO_LARGE,
                           f"{terms} query terms exceed {self.max_terms}")
        return None

    def check_certificate(self, source: Hashable, msg: Certificate,
                          now: float) -> Refused | None:
        """A peer's CERTIFICATE (Section 6.10), before the chain check it costs:
        INVALID_TLV_LENGTH beyond CERTIFICATE_MAX_SIZE octets, RATE_LIMITED (with
        RETRY_AFTER) beyond the association's CERTIFICATE_RATE and CERTIFICATE_BURST."""
        if len(msg.certificate) > self.max_certificate:
            return Refused(ErrorCode.INVALID_TLV_LENGTH,
                           f"a certificate of {len(msg.certificate)} octets exceeds "
                           f"{self.max_certificate}")
        rate, burst = self.certificate
        wait = self._bucket(self._certificates, source, rate, burst, now).take(1.0, now)
        if wait == 0.0:
            return None
        return Refused(ErrorCode.RATE_LIMITED, f"over {rate:g} CERTIFICATEs a second",
                       max(1, math.ceil(wait * 1000)))

    def forget(self, source: Hashable) -> None:
        """An association is gone."""
        self._buckets.pop(source, None)
        self._certificates.pop(source, None)

    def _bucket(self, table: OrderedDict[Hashable, TokenBucket], source: Hashable,
                rate: float, burst: float, now: float) -> TokenBucket:
        bucket = table.get(source)
        if bucket is None:
            bucket = table[source] = TokenBucket(rate, burst, burst, now)
            if len(table) > self.max_tracked:
                table.popitem(last=False)
        else:
            table.move_to_end(source)
        return bucket
