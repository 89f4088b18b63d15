"""Interoperability tooling outside the package: the impairment relay (relay.py) and
the interop runner."""
