"""Bad inputs through the real CLI: one `error:` line, exit 2, nothing written."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.conftest import run_cli


def _edit(config: Path, old: str, new: str) -> None:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))


def _assert_clean_error(result, out: Path, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert result.code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_requirements_with_garbage_lines(planted: Path, tmp_path: Path) -> None:
    (planted / "requirements.txt").write_text("requests==2.19.0\nthis is ~~ garbage\n")
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out)
    _assert_clean_error(result, out, "requirements.txt:2", "not a valid requirement")


def test_editable_requirement(planted: Path, tmp_path: Path) -> None:
    # Unpinned requirements are resolved (tests/scan/test_bypasses.py); an editable one would
    # have to be built, which a scan never does.
    (planted / "requirements.txt").write_text("-e ./local\n")
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out)
    _assert_clean_error(result, out, "editable requirement")


def test_requirements_path_is_a_directory(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out,
                     "-r", planted / "src")
    _assert_clean_error(result, out, "is a directory")


def test_unreadable_code_path(planted: Path, tmp_path: Path) -> None:
    (planted / "gone").symlink_to(planted / "nowhere")
    _edit(planted / "ci-ml.yaml", "paths: [src]", "paths: [src, gone]")
    out = tmp_path / "out"
    result = run_cli("scan", "code", "--config", planted / "ci-ml.yaml", "--out", out)
    _assert_clean_error(result, out, "scan.code.paths", "dangling symlink")


@pytest.mark.parametrize(("scanner", "option"), [("iac", "--path"), ("model", "--path")])
def test_missing_path_on_the_command_line(planted: Path, tmp_path: Path, scanner: str,
                                          option: str) -> None:
    out = tmp_path / "out"
    result = run_cli("scan", scanner, "--config", planted / "ci-ml.yaml", "--out", out,
                     option, tmp_path / "missing")
    _assert_clean_error(result, out, f"scan.{scanner}.paths", "does not exist")


def test_advisories_not_a_directory(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--advisories", planted / "requirements.txt")
    _assert_clean_error(result, out, "scan.deps.advisories", "not a directory")


def test_advisories_env_without_records(planted: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = run_cli("scan", "deps", "--config", planted / "ci-ml.yaml", "--out", out,
                     env={"CI_ML_ADVISORIES": str(tmp_path / "empty")})
    _assert_clean_error(result, out, "CI_ML_ADVISORIES", "holds no OSV records")


def test_malformed_waivers_file(planted: Path, tmp_path: Path) -> None:
    (planted / "waivers.yaml").write_text("waivers:\n  - id: B602\n    path: [unclosed\n")
    out = tmp_path / "out"
    result = run_cli("scan", "code", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--waivers", planted / "waivers.yaml")
    _assert_clean_error(result, out, "waivers.yaml", "YAML syntax error")


def test_expired_waiver_without_owner(planted: Path, tmp_path: Path) -> None:
    expired = dt.date.today() - dt.timedelta(days=40)
    (planted / "waivers.yaml").write_text(
        f"waivers:\n  - id: B602\n    path: src/planted_app/handlers.py\n"
        f"    reason: legacy\n    expires: {expired}\n")
    _edit(planted / "ci-ml.yaml", "scan:\n", "scan:\n  waivers: waivers.yaml\n")
    out = tmp_path / "out"
    result = run_cli("scan", "code", "--config", planted / "ci-ml.yaml", "--out", out)
    _assert_clean_error(result, out, "waivers.yaml: waivers[0]: missing required key 'owner' "
                        "(waiver B602)")


def test_image_needs_exactly_one_source(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("scan", "image", "--config", planted / "ci-ml.yaml", "--out", out)
    _assert_clean_error(result, out, "scan.image", "exactly one of")
    result = run_cli("scan", "image", "--config", planted / "ci-ml.yaml", "--out", out,
                     "--input", tmp_path / "missing.tar")
    _assert_clean_error(result, out, "scan.image.input", "does not exist")


def test_unknown_scan_config_key(planted: Path, tmp_path: Path) -> None:
    _edit(planted / "ci-ml.yaml", "  iac:\n", "  iac:\n    secret: true\n")
    out = tmp_path / "out"
    result = run_cli("scan", "iac", "--config", planted / "ci-ml.yaml", "--out", out)
    _assert_clean_error(result, out, "scan.iac.secret: unknown key (did you mean 'secrets'?)")
