"""The model-file corpus (tests/scan/model_corpus.py): every malicious file is rated high or
critical, no benign file above medium, nothing is ever loaded, and each class of bypass is
caught for the reason it stands for."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_ml.scan.interface import Finding, ScanRequest, Severity
from ci_ml.scan.model_files import ModelFileScanner
from tests.conftest import run_cli
from tests.scan.model_corpus import Entry, build

BOMB_LIMIT_MB = 16   # the corpus's gzip bomb expands to 64 MiB


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[Entry]]:
    root = tmp_path_factory.mktemp("model-corpus")
    marker = root / "loaded-marker"
    entries = build(root / "files", marker)
    return root / "files", marker, entries


@pytest.fixture(scope="module")
def findings(corpus: tuple[Path, Path, list[Entry]]) -> dict[str, list[Finding]]:
    directory, _, _ = corpus
    result = ModelFileScanner().scan(ScanRequest(
        root=directory, targets=(directory,), options={"max_unpacked_mb": BOMB_LIMIT_MB}))
    out: dict[str, list[Finding]] = {}
    for f in result.findings:
        out.setdefault(str(f.location.path), []).append(f)
    return out


def _worst(found: list[Finding]) -> Severity | None:
    return max((f.severity for f in found), default=None)


def test_every_malicious_file_is_high_or_critical(
        corpus: tuple[Path, Path, list[Entry]], findings: dict[str, list[Finding]]) -> None:
    _, marker, entries = corpus
    missed = {e.name: _worst(findings.get(e.name, [])) for e in entries if e.malicious
              and (_worst(findings.get(e.name, [])) or Severity.UNKNOWN) < Severity.HIGH}
    assert missed == {}
    assert not marker.exists(), "a corpus file was loaded"


def test_no_benign_file_is_above_medium(
        corpus: tuple[Path, Path, list[Entry]], findings: dict[str, list[Finding]]) -> None:
    _, _, entries = corpus
    loud = {e.name: [(f.id, f.title) for f in findings.get(e.name, [])
                     if f.severity > Severity.MEDIUM]
            for e in entries if not e.malicious}
    assert {k: v for k, v in loud.items() if v} == {}


@pytest.mark.parametrize(("name", "rule", "fragment"), [
    ("p0-os-system.bin", "CIML-M002", "os.system"),
    ("p1-posix-system.dat", "CIML-M002", "posix.system"),
    ("legacy-second-pickle.pt", "CIML-M002", "os.system"),
    ("legacy-trailing-pickle.pt", "CIML-M002", "posix.system"),
    ("object-array.npy", "CIML-M002", "posix.system"),
    ("object-array.npz", "CIML-M002", "evil.npy"),
    ("model.pkl.gz", "CIML-M002", "posix.system"),
    ("model.z", "CIML-M002", "posix.system"),
    ("after-array.joblib", "CIML-M002", "posix.system"),
    ("dotted-linecache.pkl", "CIML-M002", "reaches os.system"),
    ("numpy-runstring.pkl", "CIML-M002", "runstring"),
    ("copyreg-extension.pkl", "CIML-M002", "os.system"),
    ("copyreg-extension.pkl", "CIML-M003", "copyreg.add_extension"),
    ("copyreg-reconstructor.pkl", "CIML-M008", "computed during the load"),
    ("reducer-of-reducer.pkl", "CIML-M008", "computed during the load"),
    ("alias-unknown-call.pkl", "CIML-M007", "called mypkg.helpers.run_cmd"),
    ("encrypted.zip", "CIML-M030", "encrypted"),
    ("model.pkl.zst", "CIML-M030", "zstd"),
    ("bad-crc.pth", "CIML-M030", "CRC"),
    ("declared-bomb.npz", "CIML-M030", "decompression bomb"),
    ("gzip-bomb.pkl.gz", "CIML-M030", "decompression bomb"),
    ("truncated.pkl.gz", "CIML-M030", "stream is truncated"),
    ("truncated.pkl.gz", "CIML-M002", "posix.system"),      # what it did produce is read
    ("deep.pkl.gz", "CIML-M030", "nested deeper"),
])
def test_each_bypass_is_caught_for_its_reason(findings: dict[str, list[Finding]], name: str,
                                              rule: str, fragment: str) -> None:
    titles = [f.title for f in findings.get(name, []) if f.id == rule]
    assert any(fragment in t for t in titles), (name, [(f.id, f.title) for f in
                                                       findings.get(name, [])])


def test_the_cli_blocks_on_the_corpus_and_never_fails_on_a_file(
        corpus: tuple[Path, Path, list[Entry]], planted: Path, tmp_path: Path) -> None:
    """Through the real CLI: hostile files are findings (exit 1 with --fail-on high), never
    a scanner crash (exit 3) or an internal error."""
    directory, marker, _ = corpus
    config = planted / "ci-ml.yaml"
    config.write_text(config.read_text().replace(
        "  model:\n    paths: [models]\n",
        f"  model:\n    paths: ['{directory}']\n    max_unpacked_mb: {BOMB_LIMIT_MB}\n"))
    out = tmp_path / "out"
    result = run_cli("scan", "model", "--config", config, "--out", out, "--fail-on", "high")
    assert result.code == 1, result.output
    assert "internal error" not in result.output
    summary = (out / "summary.md").read_text()
    assert "p0-os-system.bin" in summary and "critical" in summary
    assert not marker.exists()
