"""Run a command under enforced resource limits and measure what its process tree used.

Torch-free and independent of the pipeline: the step runner uses it for steps with
limits, and anything else that starts a child process (a team's own training
command, a tool) can use it the same way::

    from ci_ml.limits import Limits, run_limited

    result = run_limited(["python", "train.py"], Limits(memory_bytes=2 << 30, timeout_s=600),
                         echo=sys.stderr.buffer)
    result.ok, result.exit_code, result.signal, result.timed_out, result.oom_killed
    result.usage.peak_rss_bytes, result.usage.cpu_s, result.usage.wall_s
    result.log_tail        # the end of the merged stdout/stderr, for error messages

See docs/autofix.md ("Limits") for how each limit is enforced.
"""

from ci_ml.limits.interface import MIB, Enforcement, LimitError, Limits, ProcessResult, Usage
from ci_ml.limits.process import run_limited

__all__ = ["MIB", "Enforcement", "LimitError", "Limits", "ProcessResult", "Usage", "run_limited"]
