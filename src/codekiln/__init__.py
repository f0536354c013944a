"""codekiln: train a code-completion model of your own, from raw source code to a served model."""

__version__ = "0.1.0"
