"""FIM prompts are laid out as training laid out FIM documents, and infilling ends at special tokens."""

import numpy as np
import pytest

from codekiln.infer import fim_prompt, generate
from codekiln import fim

PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"


def test_psm_layout(infer_tok):
    sp = infer_tok.special_ids
    ids = fim_prompt(infer_tok, PREFIX, SUFFIX)
    assert ids == ([sp["<|fim_prefix|>"]] + infer_tok.encode(PREFIX) + [sp["<|fim_suffix|>"]]
                   + infer_tok.encode(SUFFIX) + [sp["<|fim_middle|>"]])
    assert infer_tok.decode(ids) == f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"


def test_spm_layout(infer_tok):
    ids = fim_prompt(infer_tok, PREFIX, SUFFIX, spm=True)
    assert infer_tok.decode(ids) == f"<|fim_prefix|><|fim_suffix|>{SUFFIX}<|fim_middle|>{PREFIX}"


@pytest.mark.parametrize("spm", [False, True])
def test_a_training_document_starts_with_the_inference_prompt(infer_tok, spm):
    middle = "return a + b"
    document = fim.arrange(*infer_tok.encode_batch([PREFIX, middle, SUFFIX]), infer_tok.special_ids, spm)
    prompt = fim_prompt(infer_tok, PREFIX, SUFFIX, spm=spm)
    assert document[:len(prompt)] == prompt
    assert infer_tok.decode(document[len(prompt):]) == middle


def test_training_transform_agrees_with_the_prompt(infer_tok):
    text = PREFIX + "return a + b" + SUFFIX
    ids = np.asarray(infer_tok.encode(text), dtype=np.uint16)
    checked = 0
    for seed in range(20):  # the transform cuts at random places; each FIM document must invert to a prompt
        out = fim.transform(ids, infer_tok, np.random.default_rng(seed), rate=1.0, spm_rate=0.5).tolist()
        pre, mid, suf = fim.invert(out, infer_tok.special_ids)
        if out[1] == infer_tok.special_ids["<|fim_suffix|>"]:  # SPM: prefix and middle are one run
            continue
        p, m, s = infer_tok.decode(pre), infer_tok.decode(mid), infer_tok.decode(suf)
        assert out[:len(out) - len(mid)] == fim_prompt(infer_tok, p, s)
        assert p + m + s == text
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("end", ["<|endoftext|>", "<|file_sep|>", "<|fim_prefix|>", "<|fim_pad|>"])
def test_infilling_ends_at_any_special_token(infer_tok, scripted_lm, end):
    middle = infer_tok.encode("return a + b")
    model = scripted_lm(middle + [infer_tok.special_ids[end]] + infer_tok.encode("\nmore"))
    [c] = generate(model, infer_tok, [fim_prompt(infer_tok, PREFIX, SUFFIX)], max_new_tokens=20)
    assert (c.text, c.finish_reason) == ("return a + b", "eos")
