"""The gateway process: asyncio glue that drives the sans-I/O gateway node over real
transports.

:mod:`.gateway` is the gateway process, :mod:`.lab` its lab-mode guard, :mod:`.loop`
the event loop choice.  What it shares with the agent SDK (associations, transports,
configuration files, logs, telemetry) is :mod:`dmscproto.host`; it never
imports the SDK (:mod:`dmscproto.agent`), nor the test support."""
