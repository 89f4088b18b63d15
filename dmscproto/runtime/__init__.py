"""Network runtime: asyncio glue that drives the sans-I/O gateway
node and agent client over real transports.

:mod:`.pump` moves a machine's messages and timers; :mod:`.transports` names QUIC and
DTLS behind one shape; :mod:`.gateway` is the gateway process and :mod:`.config` its
TOML file (and an agent's); :mod:`.logs` structured logs; :mod:`.loop` the event loop
choice; :mod:`.sandbox` throw-away domains for :mod:`.demo` (``dmsc demo``), the tests
and the benchmarks."""
