"""Structured (channel) pruning with an accuracy budget, measured in ONNX Runtime.

Recipe (why each part is there, with measurements: ``docs/pruning.md``):

* torch-pruning's ``DependencyGraph`` finds the coupled layers (a conv's output channels,
  its BatchNorm, the next layer's input channels) so whole channels leave the model and
  its tensors really shrink. The output layer is never pruned.
* Channels are ranked by group L2 magnitude and removed iteratively, a slice at a time,
  with a few epochs of fine-tuning after each slice: accuracy collapses right after
  pruning a CNN and recovers with fine-tuning.
* Final widths are rounded to a multiple of ``round_to`` (16): ONNX Runtime's CPU
  convolutions work on channel blocks of 8 or 16 (NCHWc), and a width that is not a
  multiple of the block is measurably slower than the next larger multiple.
* Two ways to set the target: a fixed ``ratio``, or a ``target_speedup`` for which the
  ladder of ratios is walked (each rung pruned further from the last, then fine-tuned and
  measured) and the most aggressive rung still within ``max_accuracy_drop`` is kept.
* Every candidate is exported the same way as the base model (dynamo exporter, BatchNorm
  folded, dynamic batch axis) and timed against it, interleaved, in ONNX Runtime with one
  thread. Speedups are measured, never inferred from parameter or MAC counts.
* Optional int8 dynamic quantization is kept only when it is measurably faster.
* If the budget cannot be met, the unpruned model is the output and the result says why.

Persistence is pickle-free: torch-pruning's ``pruning_history()`` as JSON plus the weights
as safetensors; loading rebuilds the base model from its spec and replays the history.

Modules: ``settings`` (the config section, torch-free), ``channels`` (tracing and
removing channels), ``measure`` (exports timed side by side), ``quantize`` (int8
variants), ``search`` (the ratio or the ladder within the budget), ``result`` (what a
run found), ``persist`` (pickle-free save and load), ``report`` and ``plot``.
"""
