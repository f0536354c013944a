"""Generation: KV-cached batched decoding, sampling, stop sequences, FIM prompts, code post-processing.

    model, tok = codekiln.load(run_dir)
    [c] = generate(model, tok, ["def add(a, b):\n"], max_new_tokens=64, stop=HUMANEVAL_STOP)
    [c] = generate(model, tok, [fim_prompt(tok, prefix, suffix)], max_new_tokens=64)
    text = for_editor(c.text, prefix, suffix)

See docs/inference.md.
"""

from codekiln.infer.fim import fim_prompt
from codekiln.infer.generate import Completion, generate
from codekiln.infer.postprocess import (
    HUMANEVAL_STOP,
    block_indent,
    cut_at_dedent,
    cut_at_end_token,
    cut_at_stop,
    cut_at_suffix,
    find_stop,
    for_editor,
    for_humaneval,
    single_line,
    trim_trailing_whitespace,
)

__all__ = ["HUMANEVAL_STOP", "Completion", "block_indent", "cut_at_dedent", "cut_at_end_token", "cut_at_stop",
           "cut_at_suffix", "fim_prompt", "find_stop", "for_editor", "for_humaneval", "generate", "single_line",
           "trim_trailing_whitespace"]
