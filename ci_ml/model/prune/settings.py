"""The ``prune`` section of the config as typed settings; torch-free, so preflight is cheap."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ci_ml.errors import ConfigError

#: below this many times faster, a "speedup" is within what noise and layout can explain.
REAL_SPEEDUP = 1.2
QUANT_MODES = ("auto", "off", "on")


@dataclass(frozen=True)
class PruneSettings:
    """What to prune for, from the ``prune`` section of the config.

    Give ``ratio`` (share of channels removed from each prunable layer) or
    ``target_speedup`` (times faster at batch ``speedup_batch`` in ONNX Runtime); with
    neither, ``ratio`` is 0.5. ``max_accuracy_drop`` is in percentage points.
    """

    ratio: float | None = None
    target_speedup: float | None = None
    max_accuracy_drop: float = 1.0
    steps: int = 4
    finetune_epochs: int = 3
    quantize: str = "auto"
    round_to: int = 16
    learning_rate: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    max_ratio: float = 0.9
    search_step: float = 0.125
    latency_batches: tuple[int, ...] = (1, 256)
    speedup_batch: int = 1
    latency_rounds: int = 15

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"prune.{key}: {why}")

        if self.ratio is not None and self.target_speedup is not None:
            raise ConfigError("prune: set either ratio or target_speedup, not both")
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise bad("ratio", f"must be between 0 and 1 (exclusive), got {self.ratio}")
        if self.target_speedup is not None and not self.target_speedup > 1.0:
            raise bad("target_speedup", f"must be greater than 1, got {self.target_speedup}")
        if not self.max_accuracy_drop >= 0.0:
            raise bad("max_accuracy_drop", f"must be >= 0 percentage points, got "
                      f"{self.max_accuracy_drop}")
        if self.steps < 1:
            raise bad("steps", f"must be >= 1, got {self.steps}")
        if self.finetune_epochs < 0:
            raise bad("finetune_epochs", f"must be >= 0, got {self.finetune_epochs}")
        if self.quantize not in QUANT_MODES:
            raise bad("quantize",
                      f"must be one of {', '.join(QUANT_MODES)}, got {self.quantize!r}")
        if self.round_to < 1:
            raise bad("round_to", f"must be >= 1, got {self.round_to}")
        if not self.learning_rate > 0:
            raise bad("learning_rate", f"must be > 0, got {self.learning_rate}")
        if self.batch_size < 1:
            raise bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if not 0.0 < self.max_ratio < 1.0:
            raise bad("max_ratio", f"must be between 0 and 1 (exclusive), got {self.max_ratio}")
        if not 0.0 < self.search_step < 1.0:
            raise bad("search_step", f"must be between 0 and 1 (exclusive), got {self.search_step}")
        if not self.latency_batches or any(b < 1 for b in self.latency_batches):
            raise bad("latency_batches",
                      f"must be positive batch sizes, got {self.latency_batches}")
        if self.speedup_batch not in self.latency_batches:
            raise bad("speedup_batch", f"{self.speedup_batch} is not among latency_batches "
                      f"{list(self.latency_batches)}")
        if self.latency_rounds < 1:
            raise bad("latency_rounds", f"must be >= 1, got {self.latency_rounds}")

    @property
    def effective_ratio(self) -> float | None:
        """The fixed ratio to prune to, or None when searching for ``target_speedup``."""
        if self.target_speedup is not None:
            return None
        return 0.5 if self.ratio is None else self.ratio

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> PruneSettings:
        """Build from the config's ``prune`` mapping; errors name the bad key."""
        section = dict(section or {})
        section.pop("enabled", None)  # the pipeline's switch, not a pruning setting
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(
                f"prune.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        for key, value in section.items():
            kwargs[key] = _coerce(key, value)
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["latency_batches"] = list(self.latency_batches)
        return out


_FLOAT_KEYS = {"max_accuracy_drop", "learning_rate", "max_ratio", "search_step"}
_OPT_FLOAT_KEYS = {"ratio", "target_speedup"}
_INT_KEYS = {"steps", "finetune_epochs", "round_to", "batch_size", "seed", "speedup_batch",
             "latency_rounds"}


def _coerce(key: str, value: Any) -> Any:
    def is_num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if key in _OPT_FLOAT_KEYS:
        if value is None:
            return None
        if not is_num(value):
            raise ConfigError(f"prune.{key}: expected a number or null, got {value!r}")
        return float(value)
    if key in _FLOAT_KEYS:
        if not is_num(value):
            raise ConfigError(f"prune.{key}: expected a number, got {value!r}")
        return float(value)
    if key in _INT_KEYS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"prune.{key}: expected an integer, got {value!r}")
        return value
    if key == "quantize":
        if value is False:  # YAML's bare `off`
            return "off"
        if value is True:
            return "on"
        if not isinstance(value, str):
            raise ConfigError(f"prune.quantize: expected auto, off or on, got {value!r}")
        return value
    if key == "latency_batches":
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"prune.latency_batches: expected a list of integers, got {value!r}")
        return tuple(value)
    return value
