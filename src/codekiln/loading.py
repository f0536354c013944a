"""`codekiln.load(path)`: a model and its tokenizer from a run directory or a checkpoint directory."""

from __future__ import annotations

from pathlib import Path

from codekiln.errors import UserError


QUANTIZE = ("none", "int8")


def load(path: str | Path, device: str = "cpu", quantize: str = "none"):
    """(model, tokenizer): the model in eval mode, `model(input_ids)` giving [batch, time, vocab] logits;
    quantize="int8" swaps its linear layers for int8 ones (codekiln.infer.quantize_int8, inference only)."""
    import torch

    from codekiln.checkpoint import model_config, read_model_tensors, resolve, tokenizer_dir
    from codekiln.model import Transformer
    from codekiln.tokenizer import load as load_tokenizer

    if quantize not in QUANTIZE:
        raise UserError(f"quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}")
    ckpt = resolve(path)
    cfg = model_config(ckpt)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(read_model_tensors(ckpt / "model.safetensors", cfg), assign=True, strict=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.init_buffers()
    model.to(device)
    tok_dir = tokenizer_dir(ckpt)
    if not (tok_dir / "tokenizer.json").is_file():
        raise UserError(f"no tokenizer/ in the run directory of {ckpt}")
    model.eval()
    if quantize == "int8":
        from codekiln.infer import quantize_int8

        quantize_int8(model)
    return model, load_tokenizer(tok_dir)
