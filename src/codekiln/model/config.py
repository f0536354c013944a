"""The model's one config dataclass and its named presets (data, kept short)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from codekiln.errors import UserError


@dataclass(frozen=True)
class ModelConfig:
    """Shape and options of the decoder-only transformer; `kv_heads` covers MHA (= heads) to MQA (= 1)."""

    vocab_size: int = 32768
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    kv_heads: int | None = None  # None: multi-head attention
    context: int = 512
    positions: str = "alibi"  # "alibi" | "rope"
    rope_theta: float = 10000.0
    alibi_bias_max: float = 8.0
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # "gelu" | "swiglu"
    ffn_hidden: int | None = None  # None: 4 * d_model for GELU, the Llama rule for SwiGLU
    bias: bool = False
    tie_embeddings: bool = True
    clip_qkv: float | None = None  # clamp q, k, v to [-c, c] (MPT's QK clipping)
    attn_impl: str = "auto"  # "auto" | "sdpa" | "flex" | "flash" | "reference"
    init_std: float = 0.02
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        kv = self.n_heads if self.kv_heads is None else self.kv_heads
        object.__setattr__(self, "kv_heads", kv)
        checks = [
            (self.d_model % self.n_heads == 0, f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}"),
            (1 <= kv <= self.n_heads and self.n_heads % kv == 0,
             f"kv_heads {kv} must divide n_heads {self.n_heads}"),
            (self.positions in ("alibi", "rope"), f"positions must be alibi or rope, not {self.positions!r}"),
            (self.norm in ("layernorm", "rmsnorm"), f"norm must be layernorm or rmsnorm, not {self.norm!r}"),
            (self.mlp in ("gelu", "swiglu"), f"mlp must be gelu or swiglu, not {self.mlp!r}"),
            (self.attn_impl in ("auto", "sdpa", "flex", "flash", "reference"),
             f"attn_impl must be auto, sdpa, flex, flash or reference, not {self.attn_impl!r}"),
            (self.positions == "alibi" or self.head_dim % 2 == 0, "RoPE needs an even head dimension"),
            (self.vocab_size > 0 and self.n_layers > 0 and self.context > 0, "sizes must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"model: {message}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    @property
    def hidden(self) -> int:
        """Width of the MLP's hidden layer."""
        if self.ffn_hidden:
            return self.ffn_hidden
        if self.mlp == "gelu":
            return 4 * self.d_model
        h = int(2 * 4 * self.d_model / 3)  # SwiGLU keeps the parameter count of a 4x GELU MLP
        return 256 * ((h + 255) // 256)

    def to_dict(self) -> dict:
        """Plain dict for config.json."""
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """The inverse of to_dict; unknown keys are a user error."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"model: unknown option(s) {', '.join(unknown)}")
        return cls(**d)


# Presets. tiny trains usefully in minutes on a laptop CPU; the Replit shapes are the published ones
# (ARCHITECTURE/REFERENCE): v1 MHA 2048 context; v1.5 GQA with 8 kv heads and a 4096 context.
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=256, n_layers=4, n_heads=8, kv_heads=4, context=512),
    "125m": dict(d_model=768, n_layers=12, n_heads=12, context=2048),
    "350m": dict(d_model=1024, n_layers=24, n_heads=16, context=2048),
    "1b": dict(d_model=2048, n_layers=24, n_heads=16, context=2048),
    "replit-v1-3b": dict(d_model=2560, n_layers=32, n_heads=32, context=2048),
    "replit-v1.5-3b": dict(d_model=3072, n_layers=32, n_heads=24, kv_heads=8, context=4096),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset with field overrides (e.g. positions="rope")."""
    if name not in PRESETS:
        raise UserError(f"model: unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})


def param_count(cfg: ModelConfig, embeddings: bool = True) -> int:
    """Parameters of a model of this shape (without building it)."""
    d, kvd = cfg.d_model, cfg.kv_heads * cfg.head_dim
    attn = d * d + 2 * d * kvd + d * d
    mlp = (3 if cfg.mlp == "swiglu" else 2) * d * cfg.hidden
    norms = 2 * d * (2 if cfg.norm == "layernorm" and cfg.bias else 1)
    biases = (d + 2 * kvd + d + (2 if cfg.mlp == "swiglu" else 1) * cfg.hidden + d) if cfg.bias else 0
    per_layer = attn + mlp + norms + biases
    final_norm = d * (2 if cfg.norm == "layernorm" and cfg.bias else 1)
    total = cfg.n_layers * per_layer + final_norm
    if embeddings:
        total += cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return total


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token: 6 x (matmul weights, LM head included, input lookup excluded) + 12 L d T.

    The 6N term counts every weight a token's forward and backward multiply by (2 + 4 FLOPs each);
    with tied embeddings the LM head is that one matrix. The 12 L d T term is attention's scores and
    weighted sum over T keys (no causal halving, as in the nanoGPT/PaLM convention).
    """
    t = seq_len or cfg.context
    d, kvd = cfg.d_model, cfg.kv_heads * cfg.head_dim
    per_layer = 2 * d * d + 2 * d * kvd + (3 if cfg.mlp == "swiglu" else 2) * d * cfg.hidden
    n_matmul = cfg.n_layers * per_layer + cfg.vocab_size * d
    return 6.0 * n_matmul + 12.0 * cfg.n_layers * cfg.d_model * t
