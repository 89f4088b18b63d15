"""The UDP sockets of DMSC over QUIC (draft-dmsc-protocol-00, Section 9.1): opened
non-blocking, and drained of the datagrams already waiting in one event-loop turn while
datagrams come faster than they are served."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import termios
from array import array
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable

from aioquic.quic.connection import NetworkAddress

from ..driver import turn_budget

#: Most datagrams read from a socket in one event-loop turn (asyncio reads one).
DRAIN = 64
#: Datagrams read before the loop's turn budget is asked whether more fit in this
#: turn (:class:`~..driver.TurnBudget`): a few are read at once.
_FREE = 3
#: Wake-ups in a row whose datagram came alone (no other waiting) after which the
#: next IDLE_SKIP wake-ups read only the datagram that woke them (:class:`Drain`).
ALONE = 2
IDLE_SKIP = 7
#: Largest UDP payload read.
_MAX_DATAGRAM = 65535
_FIONREAD = termios.FIONREAD


class Drain:
    """Reads, after the datagram that woke the event loop for ``sock`` (non-blocking),
    those already waiting behind it, up to DRAIN and while the loop's turn budget lasts,
    and hands each to ``received``: one event-loop turn serves them and their answers
    leave in one transmit pass (asyncio's datagram transport reads one datagram per
    turn); the rest wait for the next turn.

    Whether one waits is asked first (``FIONREAD``: the next datagram's size, 0 when
    none; an empty datagram is then left for the next turn, which reads it): a failing
    ``recvfrom`` (EAGAIN, an exception) cost 0.90 us where the question costs 0.31 us, and
    a drain that finds one pays 0.37 us more for it (timeit, loopback); a client's finds
    none twice a routed call.

    ``adaptive`` (a server's socket): after ALONE wake-ups in a row whose datagram
    came alone, the next IDLE_SKIP read only theirs, then one looks again.  Nothing is
    lost meanwhile: the loop polls the socket level-triggered, so a datagram left
    waiting wakes it again in the next turn.  (On uvloop, which reads up to 32 datagrams
    a poll itself, IDLE_SKIP counts datagrams rather than wake-ups.)  Measured at the gateway
    (tools/bench/route.py's calls): one call at a time, 88% of its wake-ups found their
    datagram alone (1.77 failing reads a call), and with this rule 23% look (0.32);
    with 32 calls in flight 1% found it alone (5.6 datagrams a wake-up), and none
    skipped (with ALONE = 1, 28% did, reading one datagram each).  Not for a client's
    socket: it carries one connection, whose gateway answers with one datagram a turn,
    so under load it often finds a datagram alone, and then spreads what comes next
    over many turns: adaptive there, 32 calls in flight made 6% more datagrams at the
    gateway (0.82-0.84 sent a call, 0.74-0.77 without).
    """

    __slots__ = ("_alone", "_budget", "_error", "_fd", "_idle", "_received", "_skip_after",
                 "_sock", "_waiting")

    def __init__(self, sock: socket.socket, received: Callable[[bytes, NetworkAddress], None],
                 error: Callable[[Exception], None], loop: asyncio.AbstractEventLoop, *,
                 adaptive: bool) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        #: FIONREAD's answer: the size of the next datagram waiting, 0 if none.
        self._waiting = array("i", [0])
        self._received = received
        self._error = error
        #: Looked up once: asyncio.get_running_loop() makes a getpid syscall.
        self._budget = turn_budget(loop)
        #: Lone wake-ups in a row that start IDLE_SKIP (0: never), how many there were,
        #: and wake-ups left that do not look for more.
        self._skip_after = ALONE if adaptive else 0
        self._alone = self._idle = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Become the event loop's reader of the socket, in place of that of the asyncio
        datagram transport made on it (which still sends, and stops the reading when
        closed): :meth:`read` is then called with ``woken``, one call instead of three a
        wake-up (the transport's ``_read_ready``, the protocol's ``datagram_received``,
        this drain's).  Only on asyncio's selector loops, through their ``_add_reader``
        (the public ``add_reader`` refuses a transport's socket); False on others, whose
        transport keeps reading.  Call it once the transport is made (its reader
        registered)."""
        if not isinstance(loop, BaseSelectorEventLoop):
            return False
        loop._add_reader(self._fd, self.read, True)  # type: ignore[attr-defined]
        return True

    def read(self, woken: bool = False) -> None:
        """Read the datagrams waiting (class docstring): ``woken``, as the loop's reader
        (:meth:`install`), the one that woke the loop first; else ``received`` has been
        handed that one."""
        if woken:
            try:
                data, addr = self._sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):  # read already: nothing waits
                return
            except OSError as exc:  # an ICMP error, or closed
                self._error(exc)
                return
            self._received(data, addr)
        if self._idle:
            self._idle -= 1
            return
        try:
            fcntl.ioctl(self._fd, _FIONREAD, self._waiting)
        except OSError as exc:  # closed
            self._error(exc)
            return
        if not self._waiting[0]:  # none (or an empty one, read in the next turn)
            if self._skip_after:
                self._alone += 1
                if self._alone >= self._skip_after:
                    self._idle = IDLE_SKIP
            return
        sock, received, budget = self._sock, self._received, self._budget
        for n in range(DRAIN - 1):
            if n >= _FREE and not budget.fits(0.0):
                break
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error on a connected socket, or closed
                self._error(exc)
                return
            received(data, addr)
        self._alone = 0


async def udp_socket(host: str, port: int, *, bind: bool) -> socket.socket:
    """A non-blocking UDP socket bound to (``bind``) or connected to ``host``:``port``,
    the first address of ``host`` that works (as ``create_datagram_endpoint`` does); the
    caller keeps it to drain it (:class:`Drain`)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE if bind else 0)
    error: OSError = OSError(f"no address for {host}:{port}")
    for family, kind, proto, _name, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if bind:
                sock.bind(addr)
            else:
                sock.connect(addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error
