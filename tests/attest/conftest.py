"""The trained example project, shared with the gate, registry, attest and deploy tests."""

from tests.gate.trained import project, trained  # noqa: F401  (fixtures)
