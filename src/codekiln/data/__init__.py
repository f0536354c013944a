"""Stage 1: sources -> a clean, deduplicated, PII-redacted corpus (see ARCHITECTURE.md, corpus directory)."""
