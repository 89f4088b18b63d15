"""``python -m interop.relay``: the impairment relay, which lives in the package
(:mod:`dmscproto.sandbox.relay`, so that ``dmsc demo --loss`` works from an install)."""

from dmscproto.sandbox.relay import Impairment, Relay, main

__all__ = ["Impairment", "Relay", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
