"""`codekiln.load(path)`: a model and its tokenizer from a run directory or a checkpoint directory."""

from __future__ import annotations

import json
from pathlib import Path

from codekiln.errors import UserError


def load(path: str | Path, device: str = "cpu"):
    """(model, tokenizer): the model in eval mode, `model(input_ids)` giving [batch, time, vocab] logits."""
    import torch

    from codekiln.model import ModelConfig, Transformer
    from codekiln.tokenizer import load as load_tokenizer
    from codekiln.train.checkpoint import read_model_tensors, resolve

    ckpt = resolve(path)
    cfg = ModelConfig.from_dict(json.loads((ckpt / "config.json").read_text())["model"])
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(read_model_tensors(ckpt / "model.safetensors", cfg), assign=True, strict=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.init_buffers()
    model.to(device)
    tok_dir = ckpt.parent.parent / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        raise UserError(f"no tokenizer/ in the run directory of {ckpt}")
    return model.eval(), load_tokenizer(tok_dir)
