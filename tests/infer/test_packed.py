"""pack_linear: the LM head on oneDNN's prepacked fp32 path gives the plain model's logits to rounding."""

import copy

import pytest
import torch

from codekiln.infer import Engine, Request, generate
from codekiln.infer.packed import PackedLinear, pack_linear, packing_works

pytestmark = pytest.mark.skipif(not packing_works(), reason="this PyTorch build has no working oneDNN prepacked linear")

TOL = 1e-4  # fp32 in both; only the order of the sums differs


def test_packs_the_large_layers_only_and_matches(infer_tok, trained_lm):
    model = trained_lm()
    packed = copy.deepcopy(model)
    assert pack_linear(packed, min_weight=1) == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert all(not isinstance(m, torch.nn.Linear) or isinstance(m, PackedLinear) for m in packed.modules())
    ids = torch.tensor([infer_tok.encode("def name_3(items, limit=4):\n    total = 0\n")])
    with torch.no_grad():
        assert torch.allclose(packed(ids), model(ids), rtol=TOL, atol=TOL)
    default = copy.deepcopy(model)
    assert pack_linear(default) == 0  # nothing in this small model reaches MIN_WEIGHT
    assert pack_linear(packed, min_weight=1) == 0  # a second call changes nothing


def test_packed_model_generates_like_the_plain_one(infer_tok, trained_lm):
    model = trained_lm()
    packed = copy.deepcopy(model)
    pack_linear(packed, min_weight=1)
    ids = infer_tok.encode("class name_7:\n    def")
    [want] = generate(model, infer_tok, [ids], max_new_tokens=24, eos=False)
    engine = Engine(packed, infer_tok, max_batch=2).start()
    try:
        got = engine.complete(Request(prompt=ids, max_tokens=24, end_ids=frozenset()))
    finally:
        engine.stop(timeout=0)
    assert got.token_ids == want.token_ids  # this trained model has no near tie on this prompt


def test_packed_model_refuses_training(trained_lm):
    packed = copy.deepcopy(trained_lm())
    pack_linear(packed, min_weight=1)
    with pytest.raises(RuntimeError, match="inference only"):
        packed.train()
