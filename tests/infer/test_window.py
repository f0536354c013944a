"""Fitting prompts into the context: far ends cut, the text nearest the cursor kept, max_new_tokens still fitting."""

import pytest

from codekiln import fim
from codekiln.errors import UserError
from codekiln.infer import fim_prompt, fit_fim, fit_prompt, generate, keep_end, prompt_room, split_room


def test_keep_end_and_room():
    assert keep_end([1, 2, 3, 4, 5], 3) == [3, 4, 5]
    assert keep_end([1, 2], 3) == [1, 2]
    assert prompt_room(512, 128) == 384 and prompt_room(512, 128, reserved=3) == 381
    assert prompt_room(16, 13, reserved=3) == 0  # markers only: an empty prefix and suffix still make a prompt
    with pytest.raises(UserError, match="max_new_tokens=512 leaves no room for a prompt in the model's context of "
                                        "512 tokens; lower --max-new-tokens"):
        prompt_room(512, 512)


@pytest.mark.parametrize(("prefix", "suffix", "room", "kept"), [
    (10, 10, 30, (10, 10)),  # fits: nothing cut
    (100, 100, 30, (15, 15)),  # both long: half each
    (100, 100, 31, (16, 15)),  # an odd token goes to the prefix
    (100, 4, 30, (26, 4)),  # a short suffix leaves its room to the prefix
    (4, 100, 30, (4, 26)),  # and a short prefix to the suffix
    (0, 0, 0, (0, 0)),
])
def test_split_room_balances_around_the_cursor(prefix, suffix, room, kept):
    assert split_room(prefix, suffix, room) == kept
    assert sum(kept) == min(room, prefix + suffix)


def test_fit_prompt_keeps_the_end(infer_tok):
    text = "".join(f"value_{i} = {i}\n" for i in range(200))
    ids = infer_tok.encode(text)
    fitted = fit_prompt(infer_tok, text, context=96, max_new_tokens=16)
    assert fitted.ids == ids[-80:] and fitted.cut_tokens == len(ids) - 80 and fitted.cut
    short = fit_prompt(infer_tok, "x = 1\n", context=96, max_new_tokens=16)
    assert short.ids == infer_tok.encode("x = 1\n") and not short.cut


@pytest.mark.parametrize("spm", [False, True])
def test_fit_fim_cuts_the_far_ends_of_prefix_and_suffix(infer_tok, spm):
    prefix = "".join(f"before_{i} = {i}\n" for i in range(100))
    suffix = "".join(f"after_{i} = {i}\n" for i in range(100))
    p, s = infer_tok.encode_batch([prefix, suffix])
    fitted = fit_fim(infer_tok, prefix, suffix, context=96, max_new_tokens=16, spm=spm)
    room = 96 - 16 - 3
    assert len(fitted.ids) == 96 - 16  # exactly full: max_new_tokens still fit
    assert fitted.ids == fim.prompt(p[-(room - room // 2):], s[:room // 2], infer_tok.special_ids, spm)
    assert fitted.cut_tokens == len(p) + len(s) - room
    small = fit_fim(infer_tok, "def f(x):\n    ", "\n    return y\n", context=96, max_new_tokens=16, spm=spm)
    assert small.ids == fim_prompt(infer_tok, "def f(x):\n    ", "\n    return y\n", spm=spm) and not small.cut


def test_a_fitted_prompt_generates_where_the_whole_one_is_refused(infer_tok, small_lm):
    model = small_lm()
    prefix, suffix = "x = 1\n" * 100, "y = 2\n" * 100
    with pytest.raises(UserError, match="past the model's context of 96 tokens"):
        generate(model, infer_tok, [fim_prompt(infer_tok, prefix, suffix)], max_new_tokens=8)
    fitted = fit_fim(infer_tok, prefix, suffix, context=model.cfg.context, max_new_tokens=8)
    [c] = generate(model, infer_tok, [fitted.ids], max_new_tokens=8, eos=False)
    assert len(c.token_ids) == 8
