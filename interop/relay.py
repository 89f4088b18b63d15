"""``python -m interop.relay``: the impairment relay, which lives in the package
(:mod:`dmscproto.testing.relay`, so that ``dmsc demo --loss`` works from an install)."""

from dmscproto.testing.relay import Impairment, Relay, main

__all__ = ["Impairment", "Relay", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
