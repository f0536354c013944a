"""Batched generation with a KV cache: prefill the prompts, then one token per row per step.

Prompts of different lengths are left-padded into one batch (KVCache masks the padding and counts each
row's positions from its first real token). A row ends at a special token ("eos"), when its text
contains a stop string ("stop"; the text stops before it), or after max_new_tokens ("length"); a
finished row leaves the batch, so the rows still running are all that is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from codekiln.errors import UserError
from codekiln.infer.postprocess import find_stop
from codekiln.infer.sampling import generators, sample
from codekiln.model import KVCache

PREFILL_CHUNK = 256  # prompt tokens per prefill forward: bounds the [B, H, T, S] mask and the activations


@dataclass
class Completion:
    """One generated continuation."""

    text: str  # decoded new tokens, without the end token or the stop string
    token_ids: list[int] = field(default_factory=list)  # new tokens (the end token excluded)
    finish_reason: str = "length"  # "stop" | "length" | "eos"
    prompt_tokens: int = 0


def _prompt_ids(tok, prompts) -> list[list[int]]:
    """Token ids of each prompt (strings are encoded literally); a UserError for an empty one."""
    if isinstance(prompts, (str, bytes)) or (prompts and isinstance(prompts[0], int)):
        raise UserError("prompts must be a list of prompts (strings or lists of token ids), not one prompt")
    texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
    ids = [None if isinstance(p, str) else [int(t) for t in p] for p in prompts]
    for i, encoded in zip(texts, tok.encode_batch([prompts[i] for i in texts]) if texts else []):
        ids[i] = encoded
    for i, p in enumerate(ids):
        if not p:
            raise UserError(f"prompt {i} is empty; give at least one token")
    return ids


def _end_ids(tok, eos) -> set[int]:
    """Token ids that end a row: every special token for eos=True, none for False, else the ids given."""
    if eos is True:
        return set(tok.special_ids.values())
    if eos is False or eos is None:
        return set()
    return {int(i) for i in eos}


def _check(model, ids, max_new_tokens, temperature, top_p, top_k) -> None:
    """UserErrors for sampling options out of range and prompts the model's context cannot hold."""
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be >= 0, not {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, not {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be in (0, 1], not {top_p}")
    if top_k < 0:
        raise UserError(f"top_k must be >= 0, not {top_k}")
    vocab, context = model.cfg.vocab_size, model.cfg.context
    for i, p in enumerate(ids):
        if len(p) + max_new_tokens > context:
            raise UserError(f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} that is "
                            f"{len(p) + max_new_tokens}, past the model's context of {context} tokens")
        if min(p) < 0 or max(p) >= vocab:
            raise UserError(f"prompt {i} holds a token id outside the model's vocabulary of {vocab}")


@torch.inference_mode()
def generate(model, tok, prompts, *, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
             top_k: int = 0, seed: int | list[int] | None = None, stop=(), eos=True) -> list[Completion]:
    """Complete every prompt (a string or token ids); one Completion per prompt, in order.

    temperature 0 is greedy. With sampling, `seed` (an int, mixed with the row index, or one seed per
    prompt) makes the result reproducible. `stop` strings are looked for in each row's decoded new text.
    `eos`: True ends a row at any special token (a completion never holds one), False never, or the
    ids to end at.
    """
    ids = _prompt_ids(tok, prompts)
    stop = [stop] if isinstance(stop, str) else [s for s in stop if s]
    _check(model, ids, max_new_tokens, temperature, top_p, top_k)
    results = [Completion("", [], "length", len(p)) for p in ids]
    if not ids or max_new_tokens == 0:
        return results
    end_ids = _end_ids(tok, eos)
    gens = generators(seed, len(ids)) if temperature > 0 else []
    device = model.embed.weight.device

    longest = max(len(p) for p in ids)
    pad = [longest - len(p) for p in ids]
    batch = torch.zeros(len(ids), longest, dtype=torch.long)
    for i, p in enumerate(ids):
        batch[i, pad[i]:] = torch.tensor(p)
    batch = batch.to(device)
    cache = KVCache.for_model(model, len(ids), longest + max_new_tokens, pad)
    for start in range(0, longest, PREFILL_CHUNK):
        logits = model(batch[:, start:start + PREFILL_CHUNK], cache=cache, last_only=True)[:, -1]

    rows = list(range(len(ids)))  # which prompt each row of the batch is
    while True:
        nxt = sample(logits, [gens[r] for r in rows] if gens else [], temperature, top_k, top_p)
        keep = []
        for j, (r, t) in enumerate(zip(rows, nxt.tolist())):
            done = results[r]
            if t in end_ids:
                done.finish_reason = "eos"
                continue
            done.token_ids.append(t)
            if stop:
                # Decode the whole row each step: a stop string may span tokens, and a character may too.
                text = tok.decode(done.token_ids)
                cut = find_stop(text, stop)
                if cut is not None:
                    done.text, done.finish_reason = text[:cut], "stop"
                    continue
            if len(done.token_ids) == max_new_tokens:
                continue  # finish_reason stays "length"
            keep.append(j)
        if not keep:
            break
        if len(keep) < len(rows):
            cache.select(keep)
            index = torch.tensor(keep, device=nxt.device)
            nxt = nxt.index_select(0, index)
            rows = [rows[j] for j in keep]
        logits = model(nxt[:, None], cache=cache, last_only=True)[:, -1]

    for done in results:
        if done.finish_reason != "stop":
            done.text = tok.decode(done.token_ids)
    return results
