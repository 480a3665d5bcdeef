"""The child process a step runs in when it has limits: ``python -m ci_ml.pipeline.worker SPEC``.

SPEC (written by ``ci_ml.pipeline.execute``) holds the validated config, the step's
name and its directories. The step runs exactly as it would in the ci-ml process,
writing into the same staging directory; its outcome, or its error, goes to the
result file named in SPEC. Exit codes: 0 done (the outcome says passed or blocked),
a ``CiMlError``'s own code (its message in the result file), 1 with a traceback
for anything else (a crash in user or ci-ml code), 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from ci_ml.errors import EXIT_INTERRUPTED, CiMlError


def _write(path: Path, payload: dict[str, Any]) -> None:
    from ci_ml.fsutil import atomic_write_json

    atomic_write_json(path, payload)


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text("utf-8"))
    result = Path(spec["result"])
    try:
        from ci_ml.config import Config
        from ci_ml.console import Reporter
        from ci_ml.pipeline.interface import StepContext
        from ci_ml.pipeline.registry import STEPS

        config = Config(path=Path(spec["config_path"]), data=spec["config_data"])
        ctx = StepContext(config=config, out_dir=Path(spec["out_dir"]),
                          staging=Path(spec["staging"]), stage=spec["stage"],
                          reporter=Reporter(quiet=bool(spec["quiet"])), force=bool(spec["force"]))
        outcome = STEPS[spec["step"]]().run(ctx)
    except CiMlError as exc:
        # No `error:` line here: ci-ml prints the one the user sees, the parent keeps it.
        _write(result, {"error": {"message": exc.message, "hint": exc.hint,
                                  "exit_code": exc.exit_code, "type": type(exc).__name__}})
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a crash: the traceback is the evidence
        traceback.print_exc()
        sys.stderr.flush()
        _write(result, {"crash": f"{type(exc).__name__}: {exc}"[:500]})
        return 1
    _write(result, {"outcome": outcome.to_json()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
