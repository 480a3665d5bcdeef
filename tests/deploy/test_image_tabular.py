"""The server's image context carries what a tabular model needs, and nothing of torch.

No docker here: the context's app tree is imported by a Python started without site
processing (so the editable install's path hooks cannot lend it modules), with only the
interpreter's site-packages for numpy, onnxruntime and pyarrow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ci_ml.deploy.image import image_spec, render_context
from ci_ml.serve.settings import ServeSettings
from tests.datasets.projects import Built, penguins  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow]

PROBE = """
import json, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1]]
sys.path.append(sys.argv[2])
from ci_ml.serve.model import ServedModel
model = ServedModel(Path(sys.argv[3]))
pred = model.predict(model.decoder.decode_rows(json.loads(sys.argv[4])))
print(json.dumps({"labels": list(pred.labels), "heavy": sorted(m for m in ("torch", "pyarrow")
                                                               if m in sys.modules),
                  "ci_ml": sys.modules["ci_ml"].__file__}))
"""


def test_the_image_context_serves_a_tabular_model(penguins: Built, tmp_path: Path  # noqa: F811
                                                  ) -> None:
    model = penguins.out / "candidate" / "model.onnx"
    spec = image_spec({}, "penguins", model, "0" * 64)
    context = render_context(spec, ServeSettings(), "0" * 64, "penguins", tmp_path / "ctx")
    app = context / "rootfs" / "opt" / "ci-ml" / "app"
    served = context / "rootfs" / "srv" / "model" / "model.onnx"
    rows = [{"island": "Biscoe", "bill_length_mm": None, "bill_depth_mm": "14.1",
             "flipper_length_mm": 210, "body_mass_g": 4400, "sex": "NA", "year": 2008}]
    proc = subprocess.run([sys.executable, "-S", "-c", PROBE, str(app),
                           sysconfig.get_paths()["purelib"], str(served), json.dumps(rows)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    # The image pins only onnxruntime and numpy: nothing else may be imported.
    assert out["labels"] == ["Gentoo"] and out["heavy"] == []
    assert out["ci_ml"].startswith(str(app))
