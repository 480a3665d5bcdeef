"""The jinja2 environment for the CI templates (``templates/github``, ``templates/gitlab``).

GitHub's ``${{ }}`` and GitLab's ``$[[ ]]`` are both literal text in these
templates, so jinja's own markers are ``<< >>`` (values), ``<% %>`` (statements)
and ``<# #>`` (comments). Undefined names are errors, never empty strings.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

import ci_ml
from ci_ml.errors import ToolError


def templates_root() -> Path:
    """``templates/`` beside the package (a wheel) or at the repository root (a checkout)."""
    package_dir = Path(ci_ml.__file__).resolve().parent
    for candidate in (package_dir / "templates", package_dir.parent / "templates"):
        if (candidate / "github").is_dir() and (candidate / "gitlab").is_dir():
            return candidate
    raise ToolError(f"ci-ml's CI templates are missing (looked in {package_dir / 'templates'} "
                    f"and {package_dir.parent / 'templates'}); reinstall ci-ml")


def yaml_quote(value: Any) -> str:
    """A YAML scalar for ``value``: JSON's double-quoted strings are valid YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(  # noqa: S701 - YAML, not HTML: nothing to escape
        loader=jinja2.FileSystemLoader(str(templates_root())),
        variable_start_string="<<", variable_end_string=">>",
        block_start_string="<%", block_end_string="%>",
        comment_start_string="<#", comment_end_string="#>",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["q"] = yaml_quote
    return env


def render(template: str, **context: Any) -> str:
    try:
        text = environment().get_template(template).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise ToolError(f"CI template {exc.name} is missing from {templates_root()}") from exc
    # Templates may leave blank runs where optional blocks were skipped.
    lines = text.splitlines()
    cleaned: list[str] = []
    for line in lines:
        if not line.strip() and cleaned and not cleaned[-1].strip():
            continue
        cleaned.append(line.rstrip())
    return "\n".join(cleaned).strip("\n") + "\n"
