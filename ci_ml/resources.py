"""Files ci-ml reads at run time, shipped inside the package and found through importlib.

Templates (CI pipelines, Dockerfile, Kubernetes manifests, the HTML report) live in
``ci_ml/templates/<kind>/`` and schemas in ``ci_ml/schemas/``. They are package data,
so a wheel install has them as an editable one does: nothing is looked up beside the
package or in the current directory. The repository's ``actions/`` and ``gitlab/`` are
rendered from the same templates (``python -m ci_ml.ci.assets``).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import jinja2

from ci_ml.errors import ToolError

PACKAGE = "ci_ml"
TEMPLATES = "templates"


def package_file(*parts: str) -> Traversable:
    """A file or directory inside the installed package."""
    node = resources.files(PACKAGE)
    for part in parts:
        node = node.joinpath(part)
    return node


def template_dir(kind: str = "") -> Traversable:
    return package_file(TEMPLATES, *(p for p in kind.split("/") if p))


def _missing(what: str) -> ToolError:
    return ToolError(f"{what} is missing from the installed ci-ml package (a broken install: "
                     "reinstall ci-ml)")


def template_environment(kind: str = "", **options: Any) -> jinja2.Environment:
    """A jinja2 environment over ``ci_ml/templates/<kind>``; undefined names are errors."""
    if not template_dir(kind).is_dir():
        raise _missing(f"templates/{kind}".rstrip("/"))
    package_path = "/".join(p for p in (TEMPLATES, kind) if p)
    options.setdefault("undefined", jinja2.StrictUndefined)
    options.setdefault("keep_trailing_newline", True)
    return jinja2.Environment(  # noqa: S701 - each caller sets autoescape for what it renders
        loader=jinja2.PackageLoader(PACKAGE, package_path), **options)


def render_template(env: jinja2.Environment, name: str, /, **context: Any) -> str:
    """Render one template; a missing one is a broken install (exit 3), not a traceback."""
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise _missing(f"template {exc.name}") from exc
