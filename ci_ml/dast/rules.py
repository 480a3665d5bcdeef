"""ZAP's rules file (the baseline/full-scan ``-c`` config), honoured by both engines.

Each line is tab-separated: ``<plugin id>\\t<IGNORE|INFO|WARN|FAIL>\\t<optional note>``,
or ``<ids or *>\\tOUTOFSCOPE\\t<URL regex>``. ``#`` starts a comment. What the levels
do to a finding here:

- IGNORE: dropped;  OUTOFSCOPE: dropped where the URL matches the regex;
- INFO: kept as severity info;  WARN (and unlisted ids): ZAP's risk as the severity;
- FAIL: severity raised to at least high, so any gate that blocks high blocks on it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path

from ci_ml.dast.interface import Alert
from ci_ml.errors import InputError


class Action(enum.Enum):
    IGNORE = "IGNORE"
    INFO = "INFO"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Rules:
    levels: dict[str, Action] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    out_of_scope: dict[str, tuple[re.Pattern[str], ...]] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def parse(cls, text: str, source: str = "<rules>") -> Rules:
        levels: dict[str, Action] = {}
        notes: dict[str, str] = {}
        scope: dict[str, list[re.Pattern[str]]] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.rstrip("\r\n").split("\t", 2)
            where = f"{source}:{number}"
            if len(parts) < 2:
                raise InputError(f"{where}: expected '<plugin id><TAB><IGNORE|INFO|WARN|FAIL>"
                                 f"[<TAB>note]', got {line.strip()[:60]!r}")
            key, level = parts[0].strip(), parts[1].strip().upper()
            optional = parts[2] if len(parts) > 2 else ""
            if level == "OUTOFSCOPE":
                try:
                    pattern = re.compile(optional.strip())
                except re.error as exc:
                    raise InputError(
                        f"{where}: OUTOFSCOPE regex does not compile ({exc})") from None
                for plugin in key.split(","):
                    scope.setdefault(plugin.strip(), []).append(pattern)
                continue
            if not re.fullmatch(r"\d+(-\d+)?", key):
                raise InputError(f"{where}: plugin id must be a number, got {key!r}")
            try:
                levels[key] = Action(level)
            except ValueError:
                raise InputError(f"{where}: level {level!r} is not one of IGNORE, INFO, WARN, "
                                 "FAIL, OUTOFSCOPE") from None
            if "\t" in optional:
                notes[key] = optional.split("\t", 1)[1].strip()
            elif optional.strip():
                notes[key] = optional.strip()
        return cls(levels, notes, {k: tuple(v) for k, v in scope.items()}, source)

    @classmethod
    def load(cls, path: Path) -> Rules:
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            raise InputError(f"{path}: rules file not found") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory, expected a ZAP rules file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read rules file ({exc})") from exc
        return cls.parse(text, str(path))

    def action(self, alert: Alert) -> Action:
        """The level for an alert: its alertRef (e.g. 10020-1) first, then its plugin id."""
        for key in (alert.alert_ref, alert.plugin_id):
            if key and key in self.levels:
                return self.levels[key]
        return Action.WARN

    def in_scope(self, alert: Alert) -> bool:
        for key in ("*", alert.plugin_id, alert.alert_ref):
            for pattern in self.out_of_scope.get(key, ()):
                if pattern.search(alert.url):
                    return False
        return True

    def apply(self, alerts: tuple[Alert, ...]) -> list[tuple[Alert, Action]]:
        kept: list[tuple[Alert, Action]] = []
        for alert in alerts:
            act = self.action(alert)
            if act is Action.IGNORE or not self.in_scope(alert):
                continue
            kept.append((alert, act))
        return kept
