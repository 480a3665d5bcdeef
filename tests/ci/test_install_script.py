"""The setup step's install script (``_install.j2``) with the project's requirement files.

The script is run by bash as a job runs it; only the interpreter is a fake (it records
the pip command lines it gets and makes a ``ci-ml`` that answers ``--version``), so
these tests see which environment a job gets and what goes into it without a pip
install. The real install runs in the CI client tests (tests/ci/test_byo_pipeline.py).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci_ml.ci.templates import environment

PACKAGE = "ci-ml[evaluate] @ git+file://localhost/src/ci-ml@" + "a" * 40

# `python3`: `-c ...` prints a version, `-m venv DIR` makes DIR/bin/python (itself, logging
# `-m pip install ...` into $PIP_LOG) and DIR/bin/ci-ml.
FAKE_PYTHON = r"""#!/bin/bash
if [ "$1" = "-c" ]; then echo "3.11.2 (fake)"; exit 0; fi
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  cp "$0" "$3/bin/python"
  printf '#!/bin/sh\necho "ci-ml 0.1.0"\n' > "$3/bin/ci-ml"
  chmod +x "$3/bin/ci-ml"
  exit 0
fi
if [ "$1 $2 $3" = "-m pip install" ]; then
  shift 3
  printf '%s|' "$(dirname "$(dirname "$0")")" "$@" >> "$PIP_LOG"
  echo >> "$PIP_LOG"
  exit 0
fi
echo "fake python: unexpected $*" >&2
exit 9
"""


@dataclass(frozen=True)
class Run:
    code: int
    output: str
    venv: str          # the environment the script chose ($venv)


@pytest.fixture()
def job(tmp_path: Path) -> Path:
    """A checkout with a requirements file, and a bin/ with the fake interpreter."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "requirements.txt").write_text("scikit-learn==1.9.1\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(FAKE_PYTHON)
    (fake / "python3").chmod(0o755)
    return checkout


def run_install(checkout: Path, requirements: str, *, cache: bool = True) -> Run:
    macro = environment().get_template("_install.j2").module.install_ci_ml  # type: ignore[attr-defined]
    script = str(macro("ERROR: ", str(checkout.parent / "job-venv"))) + '\necho "venv=$venv"\n'
    env = {"PATH": f"{checkout.parent / 'bin'}:/usr/bin:/bin", "CI_ML_INSTALL": "pip",
           "CI_ML_PACKAGE": PACKAGE, "CI_ML_REQUIREMENTS": requirements,
           "PIP_LOG": str(checkout.parent / "pip.log"), "HOME": str(checkout.parent)}
    if cache:
        env["CI_ML_VENV_CACHE"] = str(checkout.parent / "venvs")
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=checkout, env=env, text=True,
                          capture_output=True, timeout=60, check=False)
    venv = next((line[5:] for line in proc.stdout.splitlines() if line.startswith("venv=")), "")
    return Run(proc.returncode, proc.stdout + proc.stderr, venv)


def pip_calls(checkout: Path) -> list[list[str]]:
    log = checkout.parent / "pip.log"
    if not log.is_file():
        return []
    return [line.rstrip("|").split("|") for line in log.read_text().splitlines()]


def test_requirement_files_are_installed_with_ci_ml_in_one_pip_run(job: Path) -> None:
    run = run_install(job, "requirements.txt")
    assert run.code == 0, run.output
    (call,) = pip_calls(job)
    assert call[0] == run.venv
    assert call[-3:] == [PACKAGE, "-r", "requirements.txt"]
    assert f"ci-ml setup: pip install {PACKAGE} -r requirements.txt" in run.output


def test_the_environment_is_reused_until_a_requirements_file_changes(job: Path) -> None:
    first = run_install(job, "requirements.txt")
    again = run_install(job, "requirements.txt")
    assert again.code == 0 and again.venv == first.venv
    assert len(pip_calls(job)) == 1 and "is installed in" in again.output
    (job / "requirements.txt").write_text("scikit-learn==1.9.1\nxgboost==3.0.0\n")
    changed = run_install(job, "requirements.txt")
    assert changed.code == 0 and changed.venv != first.venv
    assert len(pip_calls(job)) == 2
    # Without requirement files the job gets ci-ml's environment, not the project's.
    plain = run_install(job, "")
    assert plain.venv not in (first.venv, changed.venv)
    assert f"ci-ml setup: pip install {PACKAGE}\n" in plain.output
    assert pip_calls(job)[-1][-1] == PACKAGE


def test_an_environment_whose_marker_lies_is_rebuilt(job: Path) -> None:
    """The marker records ci-ml's requirement and the files' hashes: an environment made
    for another content (a file edited in place under the same key) is not taken."""
    first = run_install(job, "requirements.txt")
    marker = Path(first.venv) / ".ci-ml-requirement"
    marker.write_text(PACKAGE)       # as an environment without the project's files
    again = run_install(job, "requirements.txt")
    assert again.code == 0 and len(pip_calls(job)) == 2, again.output


def test_a_missing_requirements_file_fails_the_job_before_installing(job: Path) -> None:
    run = run_install(job, "requirements.txt missing.txt")
    assert run.code == 2
    assert "ERROR: ci-ml setup: requirement file missing.txt (train.requirements) is not in " \
        "the checkout" in run.output
    assert pip_calls(job) == []


def test_names_are_not_globbed_by_the_shell(job: Path) -> None:
    """A hand-written input with a wildcard must not turn into other files of the checkout."""
    (job / "other.txt").write_text("evil==1\n")
    run = run_install(job, "*.txt")
    assert run.code == 2 and "requirement file *.txt" in run.output
    assert pip_calls(job) == []


def test_without_a_venv_cache_the_job_environment_gets_the_files_too(job: Path) -> None:
    run = run_install(job, "requirements.txt", cache=False)
    assert run.code == 0, run.output
    assert run.venv == str(job.parent / "job-venv")
    assert pip_calls(job)[0][-2:] == ["-r", "requirements.txt"]
    assert os.path.isfile(Path(run.venv) / ".ci-ml-requirement")
