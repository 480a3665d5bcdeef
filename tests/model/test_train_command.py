"""train.command: a team's own training script, through the real CLI.

The bundled fixtures/sklearn-example runs once per session with `ci-ml run`; the other
tests copy it and swap its train.py for a script that lies about its accuracy, fails,
leaves no model, leaves a model with the wrong inputs, or hangs past train.timeout_s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, CliResult, run_cli
from tests.datasets.projects import copy_example, example_run  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("train-command")]
def test_sklearn_example_runs_through_the_whole_pipeline(
        example_run: tuple[Path, CliResult]) -> None:  # noqa: F811 - the fixture
    root, result = example_run
    assert result.code == 0, result.output
    assert "decision: PASS for staging" in result.stdout
    out = root / "ci-ml-out"
    metrics = json.loads((out / "candidate" / "metrics.json").read_text())
    assert metrics["measured_by"] == "ci-ml" and metrics["accuracy"] >= 0.95
    card = json.loads((out / "candidate" / "model.json").read_text())
    assert card["trainer"] == "command" and card["preprocessing"] is None
    by_name = {b["name"]: b for b in card["inputs"]}
    assert by_name["island"]["dtype"] == "string" and by_name["year"]["dtype"] == "float32"
    assert card["outputs"] == {"scores": "probabilities", "kind": "probabilities",
                               "label": "label"}
    manifest = json.loads((out / "train-run.json").read_text())
    assert manifest["command"] == ["python", "train.py"] and manifest["returncode"] == 0
    assert set(manifest["code"]["inputs"]) == {"train.py"}
    assert manifest["environment"]["packages"]["skl2onnx"]
    assert manifest["seed"] == 0 and manifest["claimed_metrics"] == {"accuracy": 1.0}
    prune = json.loads((out / "prune-report.json").read_text())
    assert prune["skipped"] and "exists only as ONNX" in prune["reason"]
    assert "prune: skipped" in result.stderr
    scans = json.loads((out / "findings.json").read_text())["scans"]
    assert all(scans[s]["status"] == "ok" for s in ("code", "deps", "model"))
    assert scans["model"]["targets"] == ["model", "candidate"]   # the team's ONNX model, scanned


def test_cached_on_the_declared_code(example_run: tuple[Path, CliResult],  # noqa: F811
                                     tmp_path: Path) -> None:
    root = tmp_path / "project"
    shutil.copytree(example_run[0], root, symlinks=True)
    again = run_cli("train", cwd=root)
    assert again.code == 0 and "steps: 0 ran, 2 from cache" in again.stdout, again.output
    script = root / "train.py"
    script.write_text(script.read_text() + "\n# a comment changes the code's hash\n")
    changed = run_cli("train", cwd=root)
    assert changed.code == 0 and "steps: 1 ran, 1 from cache" in changed.stdout, changed.output


LIAR = '''
import json, os
from pathlib import Path
import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

train = pd.read_csv(os.environ["CI_ML_TRAIN_DATA"])
numbers = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
# Trained on blanked-out features: it can only ever answer the most frequent species.
blank = np.zeros((len(train), len(numbers)), dtype=np.float32)
model = LogisticRegression().fit(blank, train["species"])
onnx = to_onnx(model, initial_types=[("matrix", FloatTensorType([None, len(numbers)]))],
               options={id(model): {"zipmap": False}})
out = Path(os.environ["CI_ML_OUTPUT_DIR"])
(out / "model.onnx").write_bytes(onnx.SerializeToString())
(out / "metrics.json").write_text(json.dumps({"accuracy": 1.0, "macro_f1": 1.0}))
'''


def test_the_gate_uses_the_measured_accuracy_not_the_claimed_one(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "liar")
    (root / "train.py").write_text(LIAR)
    result = run_cli("run", cwd=root)
    assert result.code == 1, result.output               # blocked
    out = root / "ci-ml-out"
    metrics = json.loads((out / "candidate" / "metrics.json").read_text())
    assert metrics["claimed"] == {"accuracy": 1.0, "macro_f1": 1.0}
    assert metrics["accuracy"] == pytest.approx(30 / 69, abs=1e-6)   # always "Adelie"
    decision = json.loads((out / "decision.json").read_text())
    rule = next(r for r in decision["rules"] if r["rule"] == "metric.accuracy")
    assert rule["outcome"] == "block" and rule["observed"] == pytest.approx(30 / 69, abs=1e-4)
    assert "the script claims accuracy 1.0000; ci-ml measured 0.4348" in result.stderr
    # The one numeric input was fed the numeric columns in data order.
    card = json.loads((out / "candidate" / "model.json").read_text())
    assert card["inputs"] == [{"name": "matrix", "dtype": "float32", "fields": [
        "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"],
        "encoded": False, "shape": [5]}]


def _bad(tmp_path: Path, script: str, timeout_s: float | None = None,
         env: dict[str, str] | None = None) -> tuple[Path, CliResult]:
    root = copy_example(tmp_path / "bad")
    (root / "train.py").write_text(script)
    if timeout_s is not None:
        cfg = root / "ci-ml.yaml"
        doc = yaml.safe_load(cfg.read_text())
        doc["train"]["timeout_s"] = timeout_s
        cfg.write_text(yaml.safe_dump(doc))
    return root, run_cli("train", "--out", "out", cwd=root, timeout=300, env=env)


def _one_error(result: CliResult) -> str:
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    return errors[0]


def _nothing_of_train(root: Path) -> None:
    out = root / "out"
    for rel in ("model", "metrics.json", "train-run.json", "candidate", "decision.json"):
        assert not (out / rel).exists(), rel
    assert not list(out.glob(".ci-ml-staging*"))
    assert not (root / ".ci-ml-cache" / "train").exists()


@pytest.mark.parametrize(("script", "code", "expected"), [
    ("import sys\nprint('loading data')\nsys.exit('cannot find column foo')\n", 2,
     "train.command exited with code 1: "),
    ("print('trained, but forgot to save')\n", 2, "left no model.onnx in $CI_ML_OUTPUT_DIR"),
    ("import os, pathlib\n(pathlib.Path(os.environ['CI_ML_OUTPUT_DIR']) / 'model.onnx')"
     ".write_bytes(b'not a model')\n", 2, "not a "),
], ids=["exits-non-zero", "writes-no-model", "writes-garbage"])
def test_bad_train_command(tmp_path: Path, script: str, code: int, expected: str) -> None:
    root, result = _bad(tmp_path, script)
    assert result.code == code, result.output
    line = _one_error(result)
    assert expected in line
    if "exited with code" in expected:
        assert "cannot find column foo" in line        # the script's last words
    _nothing_of_train(root)


WRONG_INPUTS = '''
import os
from pathlib import Path
import onnx
from onnx import TensorProto, helper

# A graph that takes 'pixels' [batch, 3]: no column of the penguins is called that.
graph = helper.make_graph(
    [helper.make_node("ReduceSum", ["pixels"], ["score"], keepdims=1)], "wrong",
    [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 3])],
    [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
(Path(os.environ["CI_ML_OUTPUT_DIR"]) / "model.onnx").write_bytes(model.SerializeToString())
'''


def test_a_model_with_the_wrong_inputs(tmp_path: Path) -> None:
    root, result = _bad(tmp_path, WRONG_INPUTS)
    assert result.code == 2, result.output
    line = _one_error(result)
    assert "the model's inputs do not fit the data: 'pixels'" in line
    assert "one numeric input of width 5" in line
    _nothing_of_train(root)


HANGS = '''
import subprocess, sys, time, os
from pathlib import Path
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
Path(os.environ["TEST_PID_FILE"]).write_text(str(child.pid))
print("training forever", flush=True)
time.sleep(600)
'''


def test_a_hang_past_the_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    started = time.monotonic()
    pid_file = tmp_path / "child.pid"
    root, result = _bad(tmp_path, HANGS, timeout_s=3, env={"TEST_PID_FILE": str(pid_file)})
    assert time.monotonic() - started < 120
    assert result.code == 3, result.output
    line = _one_error(result)
    assert "train.command timed out after 3 s (train.timeout_s)" in line
    assert "training forever" in line
    pid = int(pid_file.read_text())
    # The grandchild (the script's own subprocess) is gone too, not orphaned.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and \
            Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    for rel in ("model", "metrics.json", "train-run.json", "decision.json"):
        assert not (root / "out" / rel).exists(), rel


def test_the_script_gets_no_ci_ml_secrets(tmp_path: Path) -> None:
    script = ('import json, os, pathlib\n'
              'seen = {k: v for k, v in os.environ.items() if k.startswith("CI_ML_") '
              'or k == "ZAP_API_KEY"}\n'
              'pathlib.Path(os.environ["TEST_SEEN_FILE"]).write_text(json.dumps(seen))\n')
    root = copy_example(tmp_path / "env")
    (root / "train.py").write_text(script)
    seen_file = tmp_path / "env.json"
    run_cli("train", "--out", "out", cwd=root, env={
        "CI_ML_SIGNING_KEY": "/keys/ed25519.pem", "ZAP_API_KEY": "zap-secret",
        "TEST_SEEN_FILE": str(seen_file)})
    seen = json.loads(seen_file.read_text())
    assert "CI_ML_SIGNING_KEY" not in seen and "ZAP_API_KEY" not in seen
    assert seen["CI_ML_TARGET"] == "species" and seen["CI_ML_SEED"] == "0"
    assert json.loads(seen["CI_ML_FEATURES"])[0] == "island"
    assert Path(seen["CI_ML_TRAIN_DATA"]).is_absolute()


ESCAPES = '''
import os
from pathlib import Path
import onnx
from onnx import TensorProto, helper

# A weight whose bytes live "outside": a loader would read any file of the machine.
weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
weight.ClearField("float_data")
weight.data_location = TensorProto.EXTERNAL
for key, value in (("location", "../../../../../../etc/hostname"), ("offset", "0"),
                   ("length", "4")):
    entry = weight.external_data.add()
    entry.key, entry.value = key, value
graph = helper.make_graph(
    [helper.make_node("Mul", ["year", "w"], ["score"])], "escape",
    [helper.make_tensor_value_info("year", TensorProto.FLOAT, [None, 1])],
    [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])], [weight])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
(Path(os.environ["CI_ML_OUTPUT_DIR"]) / "model.onnx").write_bytes(model.SerializeToString())
'''


def test_external_data_outside_the_output_dir_is_refused(tmp_path: Path) -> None:
    root, result = _bad(tmp_path, ESCAPES)
    assert result.code == 2, result.output
    assert "external data '../../../../../../etc/hostname' is not a file beside the model" \
        in _one_error(result)
    _nothing_of_train(root)


# A CI job with another install than the train job's: modules named in argv[1] are "not
# installed", and the installed packages differ from those the script trained with.
LEAN_JOB = """
import sys
import ci_ml.extras, ci_ml.model.byo
absent = set(sys.argv[1].split(","))
installed = ci_ml.extras.module_available
ci_ml.extras.module_available = lambda name: name not in absent and installed(name)
ci_ml.model.byo.environment_digest = lambda: "0" * 64
from ci_ml.cli import main
sys.argv = ["ci-ml", *sys.argv[2:]]
main()
"""


def run_job(root: Path, absent: str, *args: str) -> CliResult:
    proc = subprocess.run([sys.executable, "-c", LEAN_JOB, absent, *args], cwd=root,
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def test_a_job_without_the_evaluate_extra_takes_train_from_the_cache(
        example_run: tuple[Path, CliResult], tmp_path: Path) -> None:  # noqa: F811
    """The prune, scan and gate jobs of a generated pipeline: train.command's packages are
    not installed there, so they cannot compute its key; they take the entry the train
    job made, and never run the script."""
    root = tmp_path / "project"
    shutil.copytree(example_run[0], root, symlinks=True)
    lean = run_job(root, "onnxruntime", "prune")
    assert lean.code == 0, lean.output
    assert "steps: 0 ran, 3 from cache" in lean.stdout and "train cached" in lean.stderr
    assert "train.command: " not in lean.output
    # Where the step can run, other packages are another environment: the script runs.
    full = run_job(root, "", "prune")
    assert full.code == 0, full.output
    assert "train.command: " in full.output and "steps: 2 ran, 1 from cache" in full.stdout


def test_without_a_cache_entry_the_missing_extra_is_named(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "project")
    result = run_job(root, "onnxruntime", "train")
    assert result.code == 2
    assert result.stderr.strip() == ("error: step train needs the [evaluate] extra "
                                     "(onnxruntime is not installed): pip install "
                                     "'ci-ml[evaluate]'"), result.stderr
    assert not (root / "ci-ml-out").exists()
