"""Throw-away domains and what runs in them, above both the gateway runtime and the agent
SDK: :mod:`.domains` (authorities, certificates and TOML files for the tests, the
benchmarks and the demo), :mod:`.demo` (``dmsc demo``) and :mod:`.relay`, the impairment
relay (``dmsc demo --loss``, the interop runner, the loss tests)."""
