"""generate(): batching equals one prompt at a time, the cache equals recomputing, sampling, stops, limits."""

import pytest
import torch

from codekiln.errors import UserError
from codekiln.infer import HUMANEVAL_STOP, generate
from codekiln.infer.sampling import filter_logits, generators, sample

PROMPTS = ["def name_3(items", "class name_7:\n    def", "x", "print(name_5(3))\nif __name__"]


def naive_greedy(model, ids, n):
    """Greedy decoding by recomputing the whole sequence every step (no cache, no padding)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            x = torch.cat([x, model(x)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return x[0, len(ids):].tolist()


# --- greedy: cache and batching change nothing ---

@pytest.mark.parametrize("positions", ["alibi", "rope"])
def test_cached_greedy_equals_recomputing(infer_tok, trained_lm, positions):
    model = trained_lm(positions)
    ids = infer_tok.encode(PROMPTS[1])
    [c] = generate(model, infer_tok, [ids], max_new_tokens=30, eos=False)
    assert c.token_ids == naive_greedy(model, ids, 30)
    assert c.finish_reason == "length" and c.prompt_tokens == len(ids)
    assert c.text == infer_tok.decode(c.token_ids) and "self.value" in c.text  # the model learned something


@pytest.mark.parametrize("positions", ["alibi", "rope"])
def test_batch_of_different_lengths_equals_each_prompt_alone(infer_tok, trained_lm, positions):
    model = trained_lm(positions)
    assert len({len(infer_tok.encode(p)) for p in PROMPTS}) == len(PROMPTS)
    alone = [generate(model, infer_tok, [p], max_new_tokens=40)[0] for p in PROMPTS]
    batched = generate(model, infer_tok, PROMPTS, max_new_tokens=40)
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    assert [c.text for c in batched] == [c.text for c in alone]
    assert len({c.text for c in batched}) == len(PROMPTS)


@pytest.mark.parametrize("positions", ["alibi", "rope"])
def test_rows_that_finish_early_leave_the_others_unchanged(infer_tok, trained_lm, positions):
    model = trained_lm(positions)
    stop = ["\ndef", "(4))"]  # rows end at different steps, so the batch shrinks while the rest go on
    alone = [generate(model, infer_tok, [p], max_new_tokens=40, stop=stop)[0] for p in PROMPTS]
    batched = generate(model, infer_tok, PROMPTS, max_new_tokens=40, stop=stop)
    assert {len(c.token_ids) for c in alone} != {40}
    assert len({len(c.token_ids) for c in alone}) > 1
    assert [(c.text, c.token_ids, c.finish_reason) for c in batched] == \
           [(c.text, c.token_ids, c.finish_reason) for c in alone]


def test_string_and_token_prompts_agree(infer_tok, trained_lm):
    model = trained_lm()
    by_text = generate(model, infer_tok, PROMPTS[:2], max_new_tokens=12)
    by_ids = generate(model, infer_tok, [infer_tok.encode(p) for p in PROMPTS[:2]], max_new_tokens=12)
    assert [c.token_ids for c in by_text] == [c.token_ids for c in by_ids]


# --- sampling ---

def test_sampling_is_reproducible_with_a_seed_and_varies_across_seeds(infer_tok, trained_lm):
    model = trained_lm()
    run = lambda seed: [c.token_ids for c in generate(model, infer_tok, PROMPTS, max_new_tokens=20,  # noqa: E731
                                                      temperature=1.0, seed=seed, eos=False)]
    assert run(7) == run(7)
    assert run(7) != run(8)
    same_prompt = generate(model, infer_tok, [PROMPTS[2]] * 4, max_new_tokens=20, temperature=1.0, seed=7)
    assert len({tuple(c.token_ids) for c in same_prompt}) > 1  # n samples of one prompt differ


def test_a_rows_seed_alone_decides_its_sample(infer_tok, trained_lm):
    model = trained_lm()
    kw = dict(max_new_tokens=20, temperature=0.8, top_p=0.95, eos=False)
    pair = generate(model, infer_tok, PROMPTS[:2], seed=[11, 12], **kw)
    alone = generate(model, infer_tok, PROMPTS[1:2], seed=[12], **kw)
    assert pair[1].token_ids == alone[0].token_ids


def test_top_k_1_and_tiny_top_p_are_greedy(infer_tok, trained_lm):
    model = trained_lm()
    greedy = generate(model, infer_tok, PROMPTS, max_new_tokens=20)
    for kw in (dict(top_k=1), dict(top_p=1e-6)):
        sampled = generate(model, infer_tok, PROMPTS, max_new_tokens=20, temperature=1.5, seed=3, **kw)
        assert [c.token_ids for c in sampled] == [c.token_ids for c in greedy]


def test_filter_logits_top_k_and_top_p():
    logits = torch.tensor([[0.55, 0.3, 0.1, 0.05]]).log()
    assert (filter_logits(logits, top_k=2) > 0).tolist() == [[True, True, False, False]]
    assert (filter_logits(logits, top_p=0.5) > 0).tolist() == [[True, False, False, False]]
    assert (filter_logits(logits, top_p=0.6) > 0).tolist() == [[True, True, False, False]]
    assert (filter_logits(logits, top_p=0.9) > 0).tolist() == [[True, True, True, False]]
    assert torch.allclose(filter_logits(logits), torch.tensor([[0.55, 0.3, 0.1, 0.05]]))


def test_sample_follows_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1, 0.0])
    logits = probs.log().expand(4000, 4)
    picked = sample(logits, generators(0, 4000), temperature=1.0)
    freq = torch.bincount(picked, minlength=4) / 4000
    assert torch.allclose(freq, probs, atol=0.03)
    assert freq[3] == 0
    hot = sample(logits, generators(0, 4000), temperature=0.25)  # sharper: p^4 renormalised, 0.93 for the first
    assert (hot == 0).float().mean() > 0.88


# --- how a completion ends ---

def test_stop_sequence_spanning_tokens_is_cut(infer_tok, trained_lm):
    model = trained_lm()
    [free] = generate(model, infer_tok, [PROMPTS[0]], max_new_tokens=40)
    assert "\ndef" in free.text
    tokens_text = [infer_tok.decode([t]) for t in free.token_ids]
    assert not any("\ndef" in t for t in tokens_text)  # "\n" and "def" are separate tokens here
    [c] = generate(model, infer_tok, [PROMPTS[0]], max_new_tokens=40, stop=HUMANEVAL_STOP)
    assert c.finish_reason == "stop"
    assert c.text == free.text[:free.text.index("\ndef")]
    assert c.text.endswith("return total")
    assert c.token_ids == free.token_ids[:len(c.token_ids)] and len(c.token_ids) < len(free.token_ids)


def test_stop_inside_one_token_and_a_single_string(infer_tok, trained_lm):
    model = trained_lm()
    [free] = generate(model, infer_tok, [PROMPTS[0]], max_new_tokens=40)
    [c] = generate(model, infer_tok, [PROMPTS[0]], max_new_tokens=40, stop="total")
    assert c.finish_reason == "stop" and c.text == free.text[:free.text.index("total")]


def test_max_new_tokens_ends_with_length(infer_tok, trained_lm):
    out = generate(trained_lm(), infer_tok, PROMPTS, max_new_tokens=7, eos=False)
    assert all(len(c.token_ids) == 7 and c.finish_reason == "length" for c in out)
    assert all(c.finish_reason == "length" and c.text == "" for c in generate(trained_lm(), infer_tok, PROMPTS,
                                                                              max_new_tokens=0))


def test_end_of_text_ends_with_eos(infer_tok, scripted_lm):
    body = infer_tok.encode("return a + b")
    model = scripted_lm(body + [infer_tok.eot_id] + infer_tok.encode(" junk"))
    [c] = generate(model, infer_tok, ["def add(a, b):\n    "], max_new_tokens=30)
    assert (c.text, c.token_ids, c.finish_reason) == ("return a + b", body, "eos")
    [through] = generate(model, infer_tok, ["def add(a, b):\n    "], max_new_tokens=len(body) + 3, eos=False)
    assert through.text.startswith("return a + b<|endoftext|>") and through.finish_reason == "length"


def test_eos_takes_a_list_of_ids(infer_tok, trained_lm):
    model = trained_lm()
    [free] = generate(model, infer_tok, [PROMPTS[0]], max_new_tokens=30)
    end = free.token_ids[10]
    [c] = generate(model, infer_tok, [PROMPTS[0]], max_new_tokens=30, eos=[end])
    assert c.finish_reason == "eos" and c.token_ids == free.token_ids[:free.token_ids.index(end)]


# --- limits and mistakes ---

@pytest.mark.parametrize("positions", ["alibi", "rope"])
def test_context_is_respected(infer_tok, small_lm, positions):
    model = small_lm(positions=positions)  # context 96
    ids = list(range(7, 7 + 60))
    [c] = generate(model, infer_tok, [ids], max_new_tokens=36, eos=False)  # exactly the context
    assert len(c.token_ids) == 36
    with pytest.raises(UserError, match="context of 96"):
        generate(model, infer_tok, [ids[:10], ids], max_new_tokens=37)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[""]), "empty"),
    (dict(prompts="def f():"), "list of prompts"),
    (dict(prompts=[[1, 2, 999]]), "vocabulary"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_k=-2), "top_k"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
])
def test_user_mistakes_are_user_errors(infer_tok, small_lm, kwargs, message):
    kwargs = {"prompts": ["x = 1"], "max_new_tokens": 8, **kwargs}
    with pytest.raises(UserError, match=message):
        generate(small_lm(), infer_tok, kwargs.pop("prompts"), **kwargs)


def test_no_prompts_no_completions(infer_tok, small_lm):
    assert generate(small_lm(), infer_tok, []) == []
