"""report.html in a real browser: headless Chromium renders the report of a real run, and every
step's section is there with the numbers of the files under --out."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.gate.trained import trained  # noqa: F401  (fixture)

# The flags a root user needs for headless Chromium on a machine without a display or network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
SECTIONS = ("verdict", "data", "training", "pruning", "metrics", "findings", "rules")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (.ci/provision installs Debian's chromium)")
    with tempfile.TemporaryDirectory(prefix="ci-ml-chromium-") as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=180, check=False)


class Sections(HTMLParser):
    """Text, table rows and `title` attributes of each top-level section of the DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.text: dict[str, list[str]] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.titles: dict[str, list[str]] = {}
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("section", "header") and a.get("id"):
            self.current = a["id"]
            for d in (self.text, self.rows, self.titles):
                d.setdefault(self.current, [])
        elif self.current and tag == "tr":
            self._row = []
        elif self.current and tag in ("td", "th") and self._row is not None:
            self._cell = []
        if self.current and a.get("title"):
            self.titles[self.current].append(str(a["title"]))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self.current:
            self.rows[self.current].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self.current:
            self.text[self.current].append(data)
            if self._cell is not None:
                self._cell.append(data)

    def joined(self, section: str) -> str:
        return " ".join("".join(self.text[section]).split())


@pytest.mark.slow
def test_chromium_renders_every_step_with_its_numbers(trained: Path, tmp_path: Path) -> None:  # noqa: F811
    out = trained / "out"
    shot = tmp_path / "report.png"
    rendered = chromium("--window-size=1100,3000", f"--screenshot={shot}",
                        (out / "report.html").as_uri())
    assert rendered.returncode == 0 and shot.read_bytes().startswith(b"\x89PNG"), rendered.stderr
    dom = chromium("--dump-dom", (out / "report.html").as_uri())
    assert dom.returncode == 0, dom.stderr
    page = Sections()
    page.feed(dom.stdout)
    assert set(SECTIONS) <= set(page.text), sorted(page.text)

    decision = json.loads((out / "decision.json").read_text())
    digest = decision["model"]["digest"]
    assert digest in page.titles["verdict"]            # the full digest on hover
    assert digest.removeprefix("sha256:")[:12] in page.joined("verdict")

    data = json.loads((out / "data-report.json").read_text())
    checks = [r for r in page.rows["data"] if r and r[0] != "check"]
    assert [r[0] for r in checks] == [c["name"] for c in data["checks"]]
    assert f"{sum(c['passed'] for c in data['checks'])} of {len(data['checks'])} data checks" \
        in page.joined("data")

    history = json.loads((out / "train-history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = [r for r in page.rows["training"] if r and r[0].isdigit() and len(r) == 4]
    assert [int(r[0]) for r in epochs] == [e["epoch"] for e in history["epochs"]]
    assert f"test accuracy {metrics['accuracy']:.4f}" in page.joined("training")
    matrix = [r[1:] for r in page.rows["training"] if len(r) == len(metrics["confusion_matrix"]) + 1
              and r[0] in metrics["per_class"]]
    assert [[int(v) for v in r] for r in matrix] == metrics["confusion_matrix"]

    prune = json.loads((out / "prune-report.json").read_text())
    text = page.joined("pruning")
    assert f"Candidate: the {prune['candidate']['model']} model" in text
    for batch, wall in prune["comparison"]["ratios"]["speedup"].items():
        cpu = prune["comparison"]["ratios"]["cpu_speedup"][batch]
        assert [batch, f"{wall:.2f}x", f"{cpu:.2f}x"] in page.rows["pruning"]
    for name in prune["candidate"]["files"]:        # every file the report names is there
        assert (out / name).is_file() and name in text

    candidate = json.loads((out / "candidate" / "metrics.json").read_text())
    assert ["accuracy", f"{candidate['accuracy']:.4f}"] == page.rows["metrics"][1][:2]

    scanners = sorted(p.stem for p in (out / "scans").glob("*.json"))
    assert [r[0] for r in page.rows["findings"][1:len(scanners) + 1]] == scanners
    rules = [r for r in page.rows["rules"] if r and r[0] != "rule"]
    assert [r[0] for r in rules] == [r["rule"] for r in decision["rules"]]
