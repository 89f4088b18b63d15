"""What a process hosting a DMSC node needs, shared by the gateway runtime
(:mod:`dmscproto.runtime`) and the agent SDK (:mod:`dmscproto.agent`), which never import
each other.

:mod:`.pump` moves a sans-I/O machine's messages and timers over its associations;
:mod:`.transports` names QUIC, DTLS and lab UDP behind one shape; :mod:`.config` reads
the gateway's and an agent's TOML file; :mod:`.logs` structured logs and
:mod:`.telemetry` OpenTelemetry spans."""
