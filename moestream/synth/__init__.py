"""`moestream synth`: full-size GGUF files with real MoE shapes and random weights, for benchmarks and tests."""

from .plan import QTYPES, TensorSpec, qtype_of, tensor_plan
from .presets import PRESETS, Preset, get_preset
from .writer import write_synth

__all__ = ["PRESETS", "QTYPES", "Preset", "TensorSpec", "get_preset", "qtype_of", "tensor_plan", "write_synth"]
