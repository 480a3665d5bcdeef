"""The scanners ci-ml knows, by the name used in the config and on the command line."""

from __future__ import annotations

from ci_ml.scan.bandit import BanditScanner
from ci_ml.scan.dast import DastScanner
from ci_ml.scan.iac import IacScanner
from ci_ml.scan.image import ImageScanner
from ci_ml.scan.interface import Scanner
from ci_ml.scan.model_files import ModelFileScanner
from ci_ml.scan.pip_audit import PipAuditScanner

SCANNERS: dict[str, type[Scanner]] = {
    "code": BanditScanner,
    "deps": PipAuditScanner,
    "iac": IacScanner,
    "image": ImageScanner,
    "model": ModelFileScanner,
    "dast": DastScanner,
}
