"""The scanners ci-ml knows, by the name used in the config and on the command line."""

from __future__ import annotations

from ci_ml.scan.bandit import BanditScanner
from ci_ml.scan.dast import DastScanner
from ci_ml.scan.interface import Scanner

SCANNERS: dict[str, type[Scanner]] = {
    "code": BanditScanner,
    "dast": DastScanner,
}
