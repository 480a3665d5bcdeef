"""The rule-based failure classifier: the table in ``rules.yaml``, evaluated in order."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from ci_ml.autofix.interface import (
    AutofixError,
    Classification,
    Classifier,
    Failure,
    FailureClass,
)

RULES_FILE = "rules.yaml"
_BOOLS = ("oom_killed", "timed_out", "memory_limited")
_REGEXES = ("exception", "message", "error", "log")
_KEYS = frozenset((*_BOOLS, *_REGEXES, "signal", "exit_code"))
_TRACEBACK = "Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
_TAIL_LINES = 3


@dataclass(frozen=True)
class Rule:
    id: str
    failure_class: FailureClass
    description: str
    flags: Mapping[str, bool]
    patterns: Mapping[str, re.Pattern[str]]
    signals: frozenset[str] | None = None
    exit_codes: frozenset[int] | None = None


@dataclass(frozen=True)
class LogView:
    """The parts of a log the rules look at."""

    exceptions: tuple[str, ...]        # "Type: message" of each traceback's exception
    error_text: tuple[str, ...]        # those, ci-ml's `error:` lines, the last lines
    log: str

    @classmethod
    def of(cls, log: str) -> LogView:
        lines = log.splitlines()
        exceptions: list[str] = []
        in_traceback = False
        for line in lines:
            if line.startswith(_TRACEBACK):
                in_traceback = True
                continue
            if in_traceback and line and not line[0].isspace():
                in_traceback = False
                if _EXCEPTION_LINE.match(line):
                    exceptions.append(line.strip())
        errors = [ln.strip() for ln in lines if ln.startswith("error:")]
        tail = [ln.strip() for ln in lines if ln.strip()][-_TAIL_LINES:]
        seen: dict[str, None] = dict.fromkeys([*exceptions, *errors, *tail])
        return cls(tuple(exceptions), tuple(seen), log)


def load_rules(text: str, source: str = RULES_FILE) -> tuple[Rule, ...]:
    """Parse and check a rules table; a bad table is ci-ml's bug, reported as such."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AutofixError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise AutofixError(f"{source}: expected a non-empty list of rules")
    rules, ids = [], set()
    for index, item in enumerate(raw):
        where = f"{source}: rule {index + 1}"
        if not isinstance(item, dict) or not isinstance(item.get("when"), dict) or not item["when"]:
            raise AutofixError(f"{where}: needs 'id', 'class' and a non-empty 'when'")
        rule_id = str(item.get("id") or "")
        if not rule_id or rule_id in ids:
            raise AutofixError(f"{where}: missing or duplicate id {rule_id!r}")
        ids.add(rule_id)
        try:
            failure_class = FailureClass(item.get("class"))
        except ValueError as exc:
            raise AutofixError(f"{where} ({rule_id}): unknown class {item.get('class')!r}") from exc
        rules.append(_rule(rule_id, failure_class, str(item.get("description", "")),
                           item["when"], f"{where} ({rule_id})"))
    return tuple(rules)


def _rule(rule_id: str, failure_class: FailureClass, description: str, when: Mapping[str, Any],
          where: str) -> Rule:
    unknown = set(when) - _KEYS
    if unknown:
        raise AutofixError(f"{where}: unknown condition {sorted(unknown)[0]!r}")
    flags = {k: bool(when[k]) for k in _BOOLS if k in when}
    patterns = {}
    for key in _REGEXES:
        if key in when:
            try:
                patterns[key] = re.compile(str(when[key]), re.MULTILINE)
            except re.error as exc:
                raise AutofixError(f"{where}: {key}: bad regex: {exc}") from exc
    signals = frozenset(str(s) for s in when["signal"]) if "signal" in when else None
    codes = frozenset(int(c) for c in when["exit_code"]) if "exit_code" in when else None
    return Rule(rule_id, failure_class, description, flags, patterns, signals, codes)


@cache
def default_rules() -> tuple[Rule, ...]:
    text = resources.files("ci_ml.autofix").joinpath(RULES_FILE).read_text("utf-8")
    return load_rules(text)


def _search(pattern: re.Pattern[str], lines: Sequence[str]) -> str | None:
    for line in lines:
        if pattern.search(line):
            return line
    return None


def _match(rule: Rule, failure: Failure, view: LogView) -> str | None:
    """The evidence (a line, or how the run ended) if every condition holds, else None."""
    evidence: list[str] = []
    for key, wanted in rule.flags.items():
        if bool(getattr(failure, key)) != wanted:
            return None
        if wanted:
            evidence.append(key.replace("_", " "))
    if rule.signals is not None:
        if failure.signal not in rule.signals:
            return None
        evidence.append(f"signal {failure.signal}")
    if rule.exit_codes is not None:
        if failure.exit_code not in rule.exit_codes:
            return None
        evidence.append(f"exit code {failure.exit_code}")
    for key, pattern in rule.patterns.items():
        if key == "exception":
            types = [_EXCEPTION_LINE.match(e) for e in view.exceptions]
            hit = next((e for e, m in zip(view.exceptions, types, strict=True)
                        if m and pattern.search(m.group(1))), None)
        elif key == "message":
            hit = _search(pattern, view.exceptions)
        elif key == "error":
            hit = _search(pattern, view.error_text)
        else:
            found = pattern.search(view.log)
            hit = view.log[found.start():].splitlines()[0] if found else None
            if hit is not None and hit.startswith(_TRACEBACK) and view.exceptions:
                hit = view.exceptions[-1]   # the exception says more than the header
        if hit is None:
            return None
        evidence.append(hit[:300])
    return "; ".join(evidence)


class RuleClassifier(Classifier):
    def __init__(self, rules: Sequence[Rule] | None = None) -> None:
        self.rules = tuple(rules) if rules is not None else default_rules()

    def classify(self, failure: Failure) -> Classification:
        view = LogView.of(failure.log)
        for rule in self.rules:
            evidence = _match(rule, failure, view)
            if evidence is not None:
                return Classification(rule.failure_class, rule.id, evidence)
        how = (f"signal {failure.signal}" if failure.signal else f"exit code {failure.exit_code}")
        return Classification(FailureClass.UNKNOWN, "fallback", f"{how}; no rule matched")

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)
