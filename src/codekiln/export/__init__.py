"""Export and import: Hugging Face, GGUF, quantization.

Out: `export_hf` (export/hf.py). In: `import_model` (export/importer.py) turns a Hugging Face
Llama/Mistral/Qwen2 directory (export/hf_llama.py) or a Llama-family GGUF file (export/gguf_import.py)
into a run-like directory, so no other stage reads a foreign format.
"""
