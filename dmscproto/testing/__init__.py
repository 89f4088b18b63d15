"""Test support importable by tests and end-to-end checks (not used at run time)."""
