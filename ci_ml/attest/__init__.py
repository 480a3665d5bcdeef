"""Attestations: an in-toto Statement per promotion, in a DSSE envelope, signed with ed25519."""
