"""Keys, identities, record signatures (draft-dmsc-protocol-00, Section 10)."""
