"""The jinja2 environment for the CI templates (``ci_ml/templates/{github,gitlab}``).

GitHub's ``${{ }}`` and GitLab's ``$[[ ]]`` are both literal text in these
templates, so jinja's own markers are ``<< >>`` (values), ``<% %>`` (statements)
and ``<# #>`` (comments). Undefined names are errors, never empty strings.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2

from ci_ml.resources import render_template, template_environment


def yaml_quote(value: Any) -> str:
    """A YAML scalar for ``value``: JSON's double-quoted strings are valid YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


@cache
def environment() -> jinja2.Environment:
    env = template_environment(
        autoescape=False,  # YAML, not HTML: nothing to escape
        variable_start_string="<<", variable_end_string=">>",
        block_start_string="<%", block_end_string="%>",
        comment_start_string="<#", comment_end_string="#>",
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["q"] = yaml_quote
    return env


def render(template: str, **context: Any) -> str:
    text = render_template(environment(), template, **context)
    # Templates may leave blank runs where optional blocks were skipped.
    lines = text.splitlines()
    cleaned: list[str] = []
    for line in lines:
        if not line.strip() and cleaned and not cleaned[-1].strip():
            continue
        cleaned.append(line.rstrip())
    return "\n".join(cleaned).strip("\n") + "\n"
