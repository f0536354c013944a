"""Fill-in-the-middle prompts in the layout training used (codekiln.fim), so the two agree.

PSM: <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>
SPM: <|fim_prefix|><|fim_suffix|> suffix <|fim_middle|> prefix
The model then writes the middle and ends it with <|endoftext|>; `generate` ends a completion at any
special token (a <|file_sep|> or another <|fim_*|> marker also means the middle is over).
"""

from __future__ import annotations

from codekiln import fim


def fim_prompt(tok, prefix: str, suffix: str, spm: bool = False) -> list[int]:
    """Token ids of an infilling prompt; prefix and suffix are encoded apart, as in training."""
    prefix_ids, suffix_ids = tok.encode_batch([prefix, suffix])
    return fim.prompt(prefix_ids, suffix_ids, tok.special_ids, spm)
