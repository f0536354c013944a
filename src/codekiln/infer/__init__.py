"""Generation: KV-cached batched decoding, sampling, stop sequences, FIM prompts, code post-processing.

    model, tok = codekiln.load(run_dir)
    [c] = generate(model, tok, ["def add(a, b):\n"], max_new_tokens=64, stop=HUMANEVAL_STOP)
    [c] = generate(model, tok, [fim_prompt(tok, prefix, suffix)], max_new_tokens=64)
    text = for_editor(c.text, prefix, suffix)
    fitted = fit_fim(tok, prefix, suffix, context=model.cfg.context, max_new_tokens=64)  # cut to fit the context

See docs/inference.md.
"""

from codekiln.infer.fim import fim_prompt
from codekiln.infer.generate import Completion, generate
from codekiln.infer.postprocess import (
    HUMANEVAL_STOP,
    STOP_WORDS,
    block_indent,
    cut_at_dedent,
    cut_at_end_token,
    cut_at_stop,
    cut_at_stop_words,
    cut_at_suffix,
    cut_to_complete,
    cut_unbalanced,
    editor_language,
    find_stop,
    for_editor,
    for_humaneval,
    single_line,
    stop_words,
    trim_trailing_whitespace,
)
from codekiln.infer.packed import pack_linear
from codekiln.infer.quant import Int8Linear, is_quantized, quantize_int8
from codekiln.infer.engine import Engine, Event, Handle, Overloaded, Request, Result, ShuttingDown, TokenInfo
from codekiln.infer.window import FittedPrompt, fit_fim, fit_prompt, fit_repo_fim, keep_end, prompt_room, split_room

__all__ = ["HUMANEVAL_STOP", "Completion", "Engine", "Event", "FittedPrompt", "Handle", "Int8Linear", "Overloaded",
           "Request", "Result", "ShuttingDown", "TokenInfo", "block_indent", "cut_at_dedent",
           "cut_at_end_token", "cut_at_stop", "cut_at_stop_words", "cut_at_suffix", "cut_to_complete",
           "cut_unbalanced", "editor_language", "fim_prompt", "find_stop", "fit_fim", "fit_prompt", "fit_repo_fim",
           "for_editor", "for_humaneval", "generate", "is_quantized", "keep_end", "pack_linear", "prompt_room", "quantize_int8",
           "single_line", "split_room", "STOP_WORDS", "stop_words", "trim_trailing_whitespace"]
