"""Random models of any shape saved as codekiln runs, for the export tests."""

import shutil

import torch

from codekiln.model import ModelConfig, Transformer
from codekiln.tokenizer import load as load_tokenizer
from codekiln.train.checkpoint import save as save_checkpoint


def make_run(root, tok_dir, seed=0, context=64, **options):
    """A run directory (tokenizer/, checkpoints/step-3, latest) holding a random model with these options."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**dict(vocab_size=load_tokenizer(tok_dir).vocab_size, d_model=32, n_layers=2, n_heads=4,
                                context=context, init_std=0.15), **options})
    model = Transformer(cfg)
    with torch.no_grad():  # our norms start at one and zero: make them matter, so a misplaced norm weight shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    run = root / "run"
    shutil.copytree(tok_dir, run / "tokenizer")
    save_checkpoint(run, 3, model.state_dict(), cfg, {}, {"tokens": 0}, keep=1)
    return run, model.eval()
