"""Requirements files as pip-audit --no-deps --disable-pip needs them: pinned, parseable."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_ml.errors import InputError
from ci_ml.scan.requirements import parse_requirements


def _write(tmp_path: Path, text: str, name: str = "requirements.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_pins_with_comments_options_markers_and_includes(tmp_path: Path) -> None:
    _write(tmp_path, "Jinja2==2.10  # old\n", "base.txt")
    path = _write(tmp_path, (
        "--index-url https://pypi.org/simple\n"
        "# a comment\n"
        "-r base.txt\n"
        "requests==2.19.0 ; python_version >= '3'\n"
        "ancient==1.0 ; python_version < '3'\n"
        "pkg @ https://example.com/pkg-1.0.whl\n"))
    pins = parse_requirements(path)
    assert [(p.name, p.version, p.url) for p in pins] == [
        ("jinja2", "2.10", False), ("requests", "2.19.0", False), ("pkg", "", True)]
    assert pins[0].file.name == "base.txt" and pins[1].line == 4


def test_hashes_and_line_continuations(tmp_path: Path) -> None:
    path = _write(tmp_path, "click==8.1.7 \\\n    --hash=sha256:" + "a" * 64 + "\n")
    (pin,) = parse_requirements(path)
    assert pin.hashed and pin.line == 1


@pytest.mark.parametrize(("text", "message"), [
    ("requests==2.19.0\n%%% garbage !!\n", ":2: not a valid requirement '%%% garbage !!'"),
    ("-e ./local\n", "editable requirement"),
    ("-c constraints.txt\n", "constraints files are not supported"),
    ("--frobnicate\n", "unknown option '--frobnicate'"),
    ("-r other.txt\n", "-r other.txt: no such file"),
    ("a==1 --hash=sha256:" + "b" * 64 + "\nc==2\n", ":2: c has no --hash"),
    ("a==1 --install-option=x\n", "unsupported option '--install-option'"),
])
def test_bad_lines_are_input_errors_naming_file_and_line(tmp_path: Path, text: str,
                                                         message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as info:
        parse_requirements(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        parse_requirements(tmp_path)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not a text file"):
        parse_requirements(tmp_path / "bin.txt")


@pytest.mark.parametrize(("text", "version", "spec"), [
    ("requests>=2.0\n", "", "requests>=2.0"),
    ("requests==2.*\n", "", "requests==2.*"),
    ("requests\n", "", "requests"),
    ("requests==2.19.1\n", "2.19.1", "requests==2.19.1"),
])
def test_unpinned_requirements_are_kept_for_resolution(tmp_path: Path, text: str, version: str,
                                                       spec: str) -> None:
    (pin,) = parse_requirements(_write(tmp_path, text))
    assert (pin.version, pin.spec, pin.pinned) == (version, spec, bool(version))
