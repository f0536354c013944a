"""Export and import: Hugging Face, GGUF, quantization."""
