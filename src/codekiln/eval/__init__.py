"""Stage 4, judging models: sandboxed execution, HumanEval pass@k, infilling, bits per byte."""
