"""Third-party actions and images the generated pipelines use, pinned by digest.

Tags move; a full commit SHA (or an image digest) does not. The comment after
each pin is the release it corresponds to, for humans and for Dependabot.
Bump them here, then regenerate (`python -m ci_ml.ci.assets --write` and the
example's golden files): every generated file takes its pins from this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionPin:
    repository: str  # "owner/repo" or "owner/repo/path"
    sha: str
    version: str

    @property
    def uses(self) -> str:
        return f"{self.repository}@{self.sha} # {self.version}"


ACTIONS: dict[str, ActionPin] = {
    "checkout": ActionPin("actions/checkout", "11bd71901bbe5b1630ceea73d27597364c9af683", "v4.2.2"),
    "setup-python": ActionPin("actions/setup-python", "a26af69be951a213d495a4c3e4e4022e16d87065",
                              "v5.6.0"),
    "cache": ActionPin("actions/cache", "5a3ec84eff668545956fd18022155c47e93e2684", "v4.2.3"),
    "upload-artifact": ActionPin("actions/upload-artifact",
                                 "ea165f8d65b6e75b540449e92b4886f43607fa02", "v4.6.2"),
    "download-artifact": ActionPin("actions/download-artifact",
                                   "d3f86a106a0bac45b974a628896c90dbdf5c8093", "v4.3.0"),
    "upload-sarif": ActionPin("github/codeql-action/upload-sarif",
                              "ff0a06e83cb2de871e5a09832bc6a81e7276941f", "v3.28.18"),
}

# OWASP ZAP 2.17.0, the multi-arch index behind ghcr.io/zaproxy/zaproxy:stable.
ZAP_IMAGE = ("ghcr.io/zaproxy/zaproxy:stable@sha256:"
             "781a2bdaea47324e7bab583e2263f21d257b0aee61ed51521a5be45f5f5081ef")
ZAP_PORT = 8090
