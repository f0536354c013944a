"""codekiln: train a code-completion model of your own, from raw source code to a served model."""

__version__ = "0.1.0"


def load(path, device: str = "cpu", quantize: str = "none"):
    """(model, tokenizer) from a run directory or a checkpoints/step-N directory (see codekiln.loading)."""
    from codekiln.loading import load as _load

    return _load(path, device, quantize)
