"""Stage 3, the network only: config presets, attention, blocks. No I/O and no training logic."""

from codekiln.model.config import PRESETS, ModelConfig, flops_per_token, param_count, preset
from codekiln.model.transformer import KVCache, Transformer

__all__ = ["PRESETS", "KVCache", "ModelConfig", "Transformer", "flops_per_token", "param_count", "preset"]
