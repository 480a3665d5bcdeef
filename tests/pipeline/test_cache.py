"""The step cache as an attacker who can edit it sees it: every edit is a miss, never a result.

Unit tests on real files, then the CLI: an emptied scan result in the cache is not
restored (the scan runs again and the gate blocks on its finding), and the wrong-exit
cases (a cache dir that is a file, a full disk during a restore).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_ml.errors import UsageError
from ci_ml.fsutil import sha256_file
from ci_ml.pipeline.cache import StepCache, cache_key_from_env
from ci_ml.pipeline.interface import StepOutcome, StepStatus
from tests.conftest import run_cli

KEY = b"k" * 32
OUTPUTS = ("scans/code.json", "candidate")
OUTCOME = StepOutcome(StepStatus.PASSED, "2 findings", {"findings": 2})


def produce(root: Path) -> Path:
    (root / "scans").mkdir(parents=True, exist_ok=True)
    (root / "scans" / "code.json").write_text(json.dumps({"findings": [{"id": "B602"}]}))
    (root / "candidate").mkdir(exist_ok=True)
    (root / "candidate" / "model.onnx").write_bytes(b"onnx")
    return root


class Log(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


def stored(tmp_path: Path, key: bytes | None = None) -> tuple[StepCache, Path, Log]:
    log = Log()
    cache = StepCache(tmp_path / "cache", key=key, warn=log)
    cache.store("scan-code", "k1", OUTCOME, OUTPUTS, produce(tmp_path / "src"))
    return StepCache(tmp_path / "cache", key=key, warn=log), tmp_path / "cache" / "scan-code" / \
        "k1", log


def restore(cache: StepCache, dest: Path) -> bool:
    dest.mkdir(parents=True, exist_ok=True)
    return cache.lookup("scan-code", "k1") is not None and \
        cache.restore("scan-code", "k1", OUTPUTS, dest)


def rehash(entry: Path) -> None:
    """What a forger without the key does: recompute the hashes in entry.json."""
    doc = json.loads((entry / "entry.json").read_text())
    doc["files"] = {p.relative_to(entry / "out").as_posix(): sha256_file(p)
                    for p in (entry / "out").rglob("*") if p.is_file()}
    (entry / "entry.json").write_text(json.dumps(doc))


def test_a_stored_entry_is_restored_as_written(tmp_path: Path) -> None:
    cache, entry, log = stored(tmp_path, KEY)
    assert restore(cache, tmp_path / "dest")
    assert json.loads((tmp_path / "dest" / "scans" / "code.json").read_text())["findings"]
    assert (tmp_path / "dest" / "candidate" / "model.onnx").read_bytes() == b"onnx"
    doc = json.loads((entry / "entry.json").read_text())
    assert doc["mac"].startswith("hmac-sha256:") and log == []


def test_an_emptied_scan_result_is_a_logged_miss_and_the_entry_goes(tmp_path: Path) -> None:
    cache, entry, log = stored(tmp_path)
    (entry / "out" / "scans" / "code.json").write_text(json.dumps({"findings": []}))
    assert not restore(cache, tmp_path / "dest")
    assert len(log) == 1 and "not using the cached result of scan-code" in log[0]
    assert "out/scans/code.json hashes to" in log[0]
    assert not entry.exists()
    # The step runs again and its fresh result is stored under the same key.
    cache.store("scan-code", "k1", OUTCOME, OUTPUTS, tmp_path / "src")
    assert restore(StepCache(tmp_path / "cache"), tmp_path / "dest2")


def test_with_a_key_a_forger_who_rewrites_the_hashes_is_refused(tmp_path: Path) -> None:
    cache, entry, log = stored(tmp_path, KEY)
    (entry / "out" / "scans" / "code.json").write_text(json.dumps({"findings": []}))
    rehash(entry)
    assert not restore(cache, tmp_path / "dest")
    assert "HMAC does not verify" in log[0]


def test_without_a_key_only_the_hashes_protect(tmp_path: Path) -> None:
    # Documented limit: without CI_ML_CACHE_KEY, rewriting entry.json too goes unnoticed.
    cache, entry, log = stored(tmp_path)
    (entry / "out" / "scans" / "code.json").write_text(json.dumps({"findings": []}))
    rehash(entry)
    assert restore(cache, tmp_path / "dest") and log == []


def test_entries_without_a_mac_are_refused_when_a_key_is_set(tmp_path: Path) -> None:
    _, entry, _ = stored(tmp_path)                       # written without a key
    log = Log()
    assert not restore(StepCache(tmp_path / "cache", key=KEY, warn=log), tmp_path / "dest")
    assert "(the entry has none)" in log[0]
    _, entry, _ = stored(tmp_path, b"another key, 32 bytes long......")
    log.clear()
    assert not restore(StepCache(tmp_path / "cache", key=KEY, warn=log), tmp_path / "dest2")
    assert "HMAC does not verify" in log[0]


def test_an_entry_moved_under_another_key_is_refused(tmp_path: Path) -> None:
    cache, entry, log = stored(tmp_path)
    shutil.move(entry, entry.with_name("k2"))
    assert cache.lookup("scan-code", "k2") is None
    assert "was written for scan-code/k1" in log[0]


@pytest.mark.parametrize("edit", ["extra file", "symlink", "missing file", "garbage entry"])
def test_other_edits_are_refused(tmp_path: Path, edit: str) -> None:
    cache, entry, log = stored(tmp_path)
    target = entry / "out" / "candidate" / "model.onnx"
    if edit == "extra file":
        (entry / "out" / "candidate" / "evil.py").write_text("import os")
    elif edit == "symlink":
        target.unlink()
        target.symlink_to("/etc/hostname")
    elif edit == "missing file":
        target.unlink()
    else:
        (entry / "entry.json").write_text("{not json")
    assert not restore(cache, tmp_path / "dest")
    assert len(log) == 1
    assert not entry.exists()


def test_a_change_between_lookup_and_restore_is_caught_on_the_copies(tmp_path: Path) -> None:
    cache, entry, log = stored(tmp_path)
    assert cache.lookup("scan-code", "k1") == OUTCOME
    (entry / "out" / "scans" / "code.json").write_text("{}")   # after the check, before the copy
    dest = tmp_path / "dest"
    dest.mkdir()
    assert not cache.restore("scan-code", "k1", OUTPUTS, dest)
    assert list(dest.iterdir()) == [] and "hashes to" in log[0]


def test_a_short_key_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_ML_CACHE_KEY", "short")
    with pytest.raises(UsageError, match="CI_ML_CACHE_KEY: too short"):
        cache_key_from_env()


# ---------------------------------------------------------------- through the CLI

UNSAFE = "import subprocess\n\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n"


@pytest.fixture
def scanned(example_project: Path) -> Path:
    """The example with a file bandit rates high (B602), scanned once: scan-code is cached."""
    (example_project / "src" / "digits_app" / "unsafe.py").write_text(UNSAFE)
    result = run_cli("scan", "code", "--out", "out", cwd=example_project)
    assert result.code == 0 and "(1 high, 1 low)" in result.stderr, result.output
    return example_project


def scan_entry(project: Path) -> Path:
    (entry,) = [p for p in (project / ".ci-ml-cache" / "scan-code").iterdir()
                if not p.name.startswith(".")]
    return entry


def findings(project: Path) -> list[dict[str, object]]:
    data: list[dict[str, object]] = json.loads(
        (project / "out" / "scans" / "code.json").read_text())["findings"]
    return data


def manifest_step(project: Path, name: str) -> dict[str, object]:
    steps = json.loads((project / "out" / "manifest.json").read_text())["steps"]
    found: dict[str, object] = next(s for s in steps if s["name"] == name)
    return found


def test_an_emptied_cached_scan_result_is_not_restored(scanned: Path) -> None:
    assert any(f["id"] == "B602" for f in findings(scanned))
    entry = scan_entry(scanned)
    cached = entry / "out" / "scans" / "code.json"
    doc = json.loads(cached.read_text())
    doc["findings"] = []
    cached.write_text(json.dumps(doc))
    result = run_cli("scan", "code", "--out", "out", cwd=scanned)
    assert "warning: cache: not using the cached result of scan-code" in result.stderr
    assert manifest_step(scanned, "scan-code")["cached"] is False
    assert any(f["id"] == "B602" for f in findings(scanned))


def test_with_the_ci_key_a_rewritten_entry_is_not_restored(scanned: Path) -> None:
    env = {"CI_ML_CACHE_KEY": "0123456789abcdef0123456789abcdef"}
    shutil.rmtree(scanned / ".ci-ml-cache")
    run_cli("scan", "code", "--out", "out", cwd=scanned, env=env)
    entry = scan_entry(scanned)
    cached = entry / "out" / "scans" / "code.json"
    doc = json.loads(cached.read_text())
    doc["findings"] = []
    cached.write_text(json.dumps(doc))
    rehash(entry)
    result = run_cli("scan", "code", "--out", "out", cwd=scanned, env=env)
    assert "HMAC does not verify with CI_ML_CACHE_KEY" in result.stderr
    assert manifest_step(scanned, "scan-code")["cached"] is False
    assert any(f["id"] == "B602" for f in findings(scanned))
    again = run_cli("scan", "code", "--out", "out", cwd=scanned, env=env)
    assert "warning" not in again.stderr and manifest_step(scanned, "scan-code")["cached"]


def one_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    return errors[0]


@pytest.mark.parametrize("how", ["config", "env", "parent"])
def test_a_cache_dir_that_is_a_file_is_bad_input(example_project: Path, how: str) -> None:
    blocker = example_project / "not-a-dir"
    blocker.write_text("a file")
    cfg = example_project / "ci-ml.yaml"
    env = None
    if how == "config":
        cfg.write_text(cfg.read_text() + "cache:\n  dir: not-a-dir\n")
        expected = f"error: cache.dir {blocker}: exists and is not a directory"
    elif how == "env":
        env = {"CI_ML_CACHE": str(blocker)}
        expected = f"error: CI_ML_CACHE {blocker}: exists and is not a directory"
    else:
        cfg.write_text(cfg.read_text() + "cache:\n  dir: not-a-dir/cache\n")
        expected = (f"error: cache.dir {blocker / 'cache'}: cannot be created ({blocker} is a "
                    "file, not a directory)")
    result = run_cli("scan", "code", "--out", "out", cwd=example_project, env=env)
    assert result.code == 2, result.output
    assert one_error(result.stderr) == expected
    assert not (example_project / "out").exists()
    assert blocker.read_text() == "a file"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB filesystem (tmpfs), filled up: every new file's first write fails."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
            capture_output=True, check=False).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (the RLIMIT_FSIZE case still runs)")
    try:
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def assert_nothing_half_written(out: Path) -> None:
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert leftovers == [], leftovers


def test_a_full_disk_during_restore_is_bad_input(scanned: Path, small_disk: Path) -> None:
    out = small_disk / "out"
    result = run_cli("scan", "code", "--out", out, cwd=scanned)
    assert result.code == 2, result.output
    line = one_error(result.stderr)
    assert line.startswith(f"error: {out}/.ci-ml-staging/scan-code/scans/code.json: cannot "
                           "restore scan-code from the cache: No space left on device")
    assert_nothing_half_written(out)
    assert scan_entry(scanned).is_dir()              # the cache entry itself is intact


def test_a_file_size_limit_during_restore_is_bad_input(scanned: Path, tmp_path: Path) -> None:
    size = (scan_entry(scanned) / "out" / "scans" / "code.json").stat().st_size
    out = tmp_path / "limited"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size - 1, size - 1))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "CI": "true",
           "PYTHONDONTWRITEBYTECODE": "1"}
    import sys

    proc = subprocess.run([sys.executable, "-m", "ci_ml", "scan", "code", "--out", str(out)],
                          cwd=scanned, env=env, capture_output=True, text=True,
                          preexec_fn=limit, check=False, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error(proc.stderr)
    assert line.startswith(f"error: {out}/.ci-ml-staging/scan-code/scans/code.json: cannot "
                           "restore scan-code from the cache: File too large")
    assert_nothing_half_written(out)
