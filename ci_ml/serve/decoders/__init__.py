"""Request decoders, one per input format, chosen from the model card.

``DECODERS`` maps the model card's ``input_format`` (default ``"tensor"``) to the decoder
class; a decoder class is built by its ``from_model`` factory from the card (a plain dict,
as read from model.json) and the graph's inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ci_ml.serve.decoders.interface import InputDecoder, TensorSpec
from ci_ml.serve.decoders.tensor import Preprocessing, TensorDecoder

DecoderFactory = Callable[[Mapping[str, Any], Sequence[TensorSpec], "DecoderLimits"],
                          InputDecoder]


@dataclass(frozen=True)
class DecoderLimits:
    """What every decoder must bound (from the server's settings)."""

    max_abs_input: float = 1e12
    max_string: int = 4096


def _tensor(card: Mapping[str, Any], inputs: Sequence[TensorSpec],
            limits: DecoderLimits) -> InputDecoder:
    mean, std = card.get("mean"), card.get("std")
    pre = Preprocessing(scale=float(card.get("scale", 1.0)),
                        mean=tuple(float(v) for v in mean) if mean else None,
                        std=tuple(float(v) for v in std) if std else None,
                        features=tuple(str(f) for f in card.get("features") or ()))
    return TensorDecoder(inputs, pre, max_abs=limits.max_abs_input, max_string=limits.max_string)


def _rows(card: Mapping[str, Any], inputs: Sequence[TensorSpec],
          limits: DecoderLimits) -> InputDecoder:
    # A tabular model's raw rows: the one raw-row path of ci_ml.model.inference.
    from ci_ml.serve.decoders.rows import rows_decoder

    return rows_decoder(card, inputs, limits.max_string)


DECODERS: dict[str, DecoderFactory] = {"tensor": _tensor, "rows": _rows}


def decoder_for(card: Mapping[str, Any], inputs: Sequence[TensorSpec],
                limits: DecoderLimits) -> InputDecoder:
    """The decoder the card asks for; ValueError names an unknown format."""
    fmt = str(card.get("input_format") or "tensor")
    factory = DECODERS.get(fmt)
    if factory is None:
        raise ValueError(f"input_format {fmt!r} is not one of {', '.join(sorted(DECODERS))}")
    return factory(card, inputs, limits)


__all__ = ["DECODERS", "DecoderLimits", "InputDecoder", "TensorSpec", "decoder_for"]
