"""The DMSC protocol state machines, sans-I/O (draft-dmsc-state-machines-00).

Each machine is fed decoded messages and ``now`` and produces messages to send, timers and
events; none touches a socket, a clock or asyncio.  :data:`.catalog.MACHINES` lists them
in the order of the draft; each one's transitions are its ``TABLE``.  Importing the
package imports none of them, so a lower module may import :mod:`.ports` alone.
"""
