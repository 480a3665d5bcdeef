"""The one config loader: ``ci-ml.yaml`` or ``[tool.ci-ml]`` in ``pyproject.toml``.

The whole document is validated against ``schemas/config.schema.json`` before any
step runs; the first violation becomes a one-line ``ConfigError`` naming the file,
the key path and what was expected. Defaults declared in the schema are then
filled in, so the rest of the code reads one complete, typed-by-schema mapping.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ci_ml.errors import ConfigError
from ci_ml.yamlio import check_finite, key_path, parse_yaml, read_text_file

DEFAULT_CONFIG_NAMES = ("ci-ml.yaml", "ci-ml.yml")
PYPROJECT = "pyproject.toml"


@cache
def config_schema() -> dict[str, Any]:
    text = resources.files("ci_ml").joinpath("schemas/config.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True)
class Config:
    """A validated configuration with every default filled in."""

    path: Path
    data: Mapping[str, Any]

    @property
    def root(self) -> Path:
        """The project directory: relative paths in the config are relative to it."""
        return self.path.parent

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.data.get(name, {})
        assert isinstance(value, Mapping)
        return value

    def resolve(self, relpath: str) -> Path:
        return (self.root / relpath).resolve()

    @property
    def project_name(self) -> str:
        return str(self.section("project")["name"])

    def digest(self, *sections: str) -> str:
        """A stable hash of the whole config, or of some sections (for cache keys)."""
        chosen = {s: self.data.get(s) for s in sections} if sections else dict(self.data)
        blob = json.dumps(chosen, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def find_config(explicit: Path | None, cwd: Path | None = None) -> Path:
    """The config file to use: ``--config``, else ci-ml.yaml, else pyproject.toml."""
    if explicit is not None:
        return explicit
    here = cwd or Path.cwd()
    for name in DEFAULT_CONFIG_NAMES:
        if (here / name).exists():  # a directory here gets a clear error, not "no config"
            return here / name
    pyproject = here / PYPROJECT
    if pyproject.is_file() and _pyproject_has_section(pyproject):
        return pyproject
    raise ConfigError(
        f"no config: neither {DEFAULT_CONFIG_NAMES[0]} nor [tool.ci-ml] in {PYPROJECT} "
        f"found in {here} (create one with `ci-ml init`, or pass --config PATH)"
    )


def _pyproject_has_section(path: Path) -> bool:
    try:
        return "ci-ml" in tomllib.loads(path.read_text("utf-8")).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def load_config(explicit: Path | None = None, cwd: Path | None = None) -> Config:
    path = find_config(explicit, cwd)
    raw = _read_document(path)
    validate(raw, path)
    return Config(path=path.resolve(), data=apply_defaults(raw, config_schema()))


def _read_document(path: Path) -> dict[str, Any]:
    text = read_text_file(path, "config file")
    if path.name == PYPROJECT:
        try:
            doc: Any = tomllib.loads(text).get("tool", {}).get("ci-ml")
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: TOML syntax error: {exc}") from exc
        if doc is None:
            raise ConfigError(f"{path}: has no [tool.ci-ml] table")
    else:
        doc = parse_yaml(text, str(path))
    if doc is None:
        raise ConfigError(f"{path}: config is empty, expected a mapping with 'data' and 'model'")
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of keys, got {_type_name(doc)}"
        )
    check_finite(doc, str(path))
    return doc


def validate(doc: Mapping[str, Any], path: Path) -> None:
    validator = jsonschema.Draft202012Validator(config_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{path}: {_describe(error)}")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _describe(error: jsonschema.ValidationError) -> str:
    where = key_path(error.absolute_path)
    v, kind = error.validator_value, error.validator
    got = error.instance
    if kind == "additionalProperties" and isinstance(got, dict):
        known = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in got if k not in known)
        key = unknown[0] if unknown else "?"
        full = f"{where}.{key}" if error.absolute_path else key
        near = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (expected one of: {', '.join(sorted(known))})"
        return f"{full}: unknown key{hint}"
    if kind == "required":
        missing = [k for k in v if k not in got]
        return f"{where}: missing required key '{missing[0] if missing else v[0]}'"
    if kind == "type":
        wanted = " or ".join(v) if isinstance(v, list) else v
        return f"{where}: expected {wanted}, got {_type_name(got)} {json.dumps(got, default=str)[:60]}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return f"{where}: must be {op} {v}, got {got}"
    if kind == "enum":
        return f"{where}: expected one of {', '.join(map(str, v))}, got {got!r}"
    if kind == "const":
        return f"{where}: must be {v!r}, got {got!r}"
    if kind in ("minItems", "minLength", "minProperties"):
        return f"{where}: must not be empty"
    if kind == "pattern":
        return f"{where}: {got!r} does not match {v}"
    if kind == "uniqueItems":
        return f"{where}: items must be unique"
    return f"{where}: {error.message}"


def _resolve_ref(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    merged = dict(target)
    merged.update({k: val for k, val in node.items() if k != "$ref"})
    return merged


def apply_defaults(doc: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """Return a copy of ``doc`` with every schema ``default`` filled in, recursively."""
    root = root or schema
    schema = _resolve_ref(schema, root)
    if not isinstance(doc, dict):
        return copy.deepcopy(doc)
    out = {k: copy.deepcopy(val) for k, val in doc.items()}
    props: Mapping[str, Any] = schema.get("properties", {})
    for key, sub in props.items():
        sub = _resolve_ref(sub, root)
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out and isinstance(out[key], dict):
            out[key] = apply_defaults(out[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in out:
            if key not in props and isinstance(out[key], dict):
                out[key] = apply_defaults(out[key], extra, root)
    return out
