"""Where a step's resource settings live in the config, and how a retry changes them.

Limits (memory, timeout, descriptors, file size) apply to every step and live in
``limits`` (defaults) and ``limits.steps.<step>``; the training knobs live in
``train``. A retry's settings become a new ``Config`` (validated by the schema,
like the file), never an edit of the user's file: ``snippet`` prints what to put
there to keep the change.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from ci_ml.autofix.interface import Settings
from ci_ml.config import Config, apply_defaults, config_schema, validate
from ci_ml.errors import ConfigError
from ci_ml.limits.interface import MIB, Limits

LIMIT_KEYS = ("memory_mb", "timeout_s", "open_files", "file_size_mb")
# Step -> {setting: (config section, key)}: the settings besides the limits that a step reads.
STEP_KNOBS: dict[str, dict[str, tuple[str, str]]] = {
    "train": {
        "batch_size": ("train", "batch_size"),
        "accumulation_steps": ("train", "accumulation_steps"),
        "threads": ("train", "threads"),
        "nproc": ("train", "nproc"),
    },
}
# A retry may change these; batch_size never (it is what the model learns with).
TUNABLE = frozenset({*LIMIT_KEYS, "accumulation_steps", "threads", "nproc"})


def step_limit_values(config: Config, step: str) -> dict[str, Any]:
    """The effective limits of a step: ``limits.steps.<step>`` over ``limits``."""
    section = config.section("limits")
    own = section.get("steps", {}).get(step) or {}
    return {k: own.get(k) if own.get(k) is not None else section.get(k) for k in LIMIT_KEYS}


def settings_of(config: Config, step: str) -> Settings:
    values: dict[str, Any] = dict(step_limit_values(config, step))
    for name, (section, key) in STEP_KNOBS.get(step, {}).items():
        value = config.section(section).get(key)
        values[name] = int(value) if value is not None else None
    if values.get("timeout_s") is not None:
        values["timeout_s"] = float(values["timeout_s"])
    return Settings(**values)


def limits_of(settings: Settings) -> Limits:
    return Limits(
        memory_bytes=settings.memory_mb * MIB if settings.memory_mb else None,
        timeout_s=settings.timeout_s,
        open_files=settings.open_files,
        file_size_bytes=settings.file_size_mb * MIB if settings.file_size_mb else None,
    )


def apply(config: Config, step: str, settings: Settings) -> Config:
    """The config with the step's settings replaced (validated again, defaults filled)."""
    data = copy.deepcopy(dict(config.data))
    current = settings_of(config, step)
    for name, (_, new) in settings.changes_from(current).items():
        if name in LIMIT_KEYS:
            limits = data.setdefault("limits", {})
            limits.setdefault("steps", {}).setdefault(step, {})[name] = new
        elif name in STEP_KNOBS.get(step, {}):
            section, key = STEP_KNOBS[step][name]
            data.setdefault(section, {})[key] = new
        else:
            raise ConfigError(f"autofix: step {step!r} has no setting {name!r}")
    try:
        validate(data, config.path)
    except ConfigError as exc:
        raise ConfigError(f"autofix: the retry's settings do not fit the config schema: "
                          f"{exc.message}") from exc
    return replace(config, data=apply_defaults(data, config_schema()))


def snippet(step: str, changes: Mapping[str, tuple[Any, Any]]) -> list[str]:
    """YAML lines that make a retry's changes permanent in ci-ml.yaml."""
    limits = {k: new for k, (_, new) in changes.items() if k in LIMIT_KEYS}
    knobs = {k: new for k, (_, new) in changes.items() if k in STEP_KNOBS.get(step, {})}
    lines: list[str] = []
    by_section: dict[str, dict[str, Any]] = {}
    for name, value in knobs.items():
        section, key = STEP_KNOBS[step][name]
        by_section.setdefault(section, {})[key] = value
    for section, values in by_section.items():
        lines.append(f"{section}:")
        lines += [f"  {key}: {value_text(value)}" for key, value in values.items()]
    if limits:
        lines += ["limits:", "  steps:", f"    {step}:"]
        lines += [f"      {key}: {value_text(value)}" for key, value in limits.items()]
    return lines


def value_text(value: Any, none: str = "null") -> str:
    """A setting as YAML writes it (and as messages show it): 600, not 600.0."""
    if value is None:
        return none
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe(settings: Settings) -> str:
    """``memory 1024 MiB, batch 512 as 4 x 128, threads 1, timeout 600 s``."""
    parts = []
    if settings.memory_mb is not None:
        parts.append(f"memory {settings.memory_mb} MiB")
    if settings.batch_size is not None:
        acc = settings.accumulation_steps or 1
        parts.append(f"batch {settings.batch_size}" +
                     (f" as {acc} x {settings.micro_batch}" if acc > 1 else ""))
    for name, label in (("threads", "threads"), ("nproc", "processes")):
        value = getattr(settings, name)
        if value is not None:
            parts.append(f"{label} {value}")
    if settings.timeout_s is not None:
        parts.append(f"timeout {settings.timeout_s:g} s")
    if settings.open_files is not None:
        parts.append(f"open files {settings.open_files}")
    if settings.file_size_mb is not None:
        parts.append(f"file size {settings.file_size_mb} MiB")
    return ", ".join(parts) or "no limits"


def setting_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(Settings))
