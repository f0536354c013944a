"""LionW against hand-computed updates, parameter grouping, and the shared weight-decay convention."""

import copy

import pytest
import torch
from torch import nn

from codekiln.errors import UserError
from codekiln.train.optim import LionW, build_optimizer, param_groups


def _param(values):
    return nn.Parameter(torch.tensor(values, dtype=torch.float64))


def test_lionw_one_step_matches_hand_computation():
    p = _param([1.0, -2.0, 0.5])
    opt = LionW([p], lr=0.1, betas=(0.9, 0.99))
    p.grad = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    opt.step()
    # m = 0, so the update is sign(0.1 * g) = [1, -1, 0]; a zero gradient moves nothing.
    assert torch.allclose(p, torch.tensor([0.9, -1.9, 0.5], dtype=torch.float64))
    # m = 0.01 * g
    assert torch.allclose(opt.state[p]["exp_avg"], torch.tensor([0.005, -0.01, 0.0], dtype=torch.float64))


def test_lionw_weight_decay_follows_lr_over_initial_lr():
    p = _param([1.0, -2.0, 0.5])
    opt = LionW([p], lr=0.1, weight_decay=0.2)
    opt.param_groups[0]["lr"] = 0.05  # a scheduler halved the LR
    p.grad = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64)
    opt.step()
    # Decay 1 - (0.05 / 0.1) * 0.2 = 0.9 -> [0.9, -1.8, 0.45], then -0.05 * [1, -1, 0].
    assert torch.allclose(p, torch.tensor([0.85, -1.75, 0.45], dtype=torch.float64))
    assert opt.param_groups[0]["initial_lr"] == 0.1


def test_lionw_second_step_uses_beta1_for_update_and_beta2_for_momentum():
    p = _param([0.0, 0.0])
    opt = LionW([p], lr=0.1, betas=(0.9, 0.99))
    p.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    opt.step()  # p = [-0.1, -0.1], m = [0.01, 0.01]
    p.grad = torch.tensor([-0.05, -0.2], dtype=torch.float64)
    opt.step()
    # update = 0.9 * m + 0.1 * g = [0.004, -0.011] -> sign [1, -1]. Plain sign(g) would give [-1, -1],
    # and interpolating with beta2 would give [0.0094, 0.0079] -> [1, 1]; only the right rule gives this.
    assert torch.allclose(p, torch.tensor([-0.2, 0.0], dtype=torch.float64))
    # m = 0.99 * m + 0.01 * g = [0.0094, 0.0079]
    assert torch.allclose(opt.state[p]["exp_avg"], torch.tensor([0.0094, 0.0079], dtype=torch.float64))


def test_lionw_skips_params_without_grad_and_keeps_one_state_tensor_each():
    a = nn.Parameter(torch.ones(3, 2))
    b = nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    c = nn.Parameter(torch.ones(2))
    opt = LionW([a, b, c], lr=0.01, weight_decay=0.1)
    a.grad = torch.ones_like(a)
    b.grad = torch.ones_like(b)
    opt.step()
    assert torch.equal(c, torch.ones(2))  # no grad: neither updated nor decayed
    assert c not in opt.state
    assert set(opt.state) == {a, b}
    for p in (a, b):
        assert list(opt.state[p]) == ["exp_avg"]
        assert opt.state[p]["exp_avg"].dtype == p.dtype
        assert opt.state[p]["exp_avg"].shape == p.shape


def test_lionw_state_dict_round_trip_gives_identical_next_step():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = LionW(model.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    opt.param_groups[0]["lr"] = 0.05  # mid-schedule, so the decay scale depends on initial_lr
    saved = copy.deepcopy(opt.state_dict())

    twin = copy.deepcopy(model)
    twin_opt = LionW(twin.parameters(), lr=1.0)  # different LR: everything must come from the state dict
    twin_opt.load_state_dict(saved)
    assert twin_opt.param_groups[0]["initial_lr"] == 0.1
    assert twin_opt.param_groups[0]["lr"] == 0.05

    grads = [torch.randn_like(p) for p in model.parameters()]
    for m, o in ((model, opt), (twin, twin_opt)):
        for p, g in zip(m.parameters(), grads):
            p.grad = g.clone()
        o.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["exp_avg"], twin_opt.state[q]["exp_avg"])


def test_lionw_minimizes_a_quadratic():
    torch.manual_seed(0)
    target = torch.rand(10) * 2 - 1
    x = nn.Parameter(torch.zeros(10))
    opt = LionW([x], lr=0.01)

    def loss_fn():
        return ((x - target) ** 2).sum()

    first = loss_fn().item()
    for _ in range(200):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < 0.01 * first


class TinyLM(nn.Module):
    def __init__(self, vocab=11, dim=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.frozen = nn.Parameter(torch.ones(dim, dim), requires_grad=False)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied


def test_param_groups_decay_matrices_only_and_dedupe_tied_weights():
    model = TinyLM()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: [id(p) for p in ps]  # noqa: E731
    # Named-parameter order, the tied embedding once, the frozen matrix nowhere.
    assert ids(decay["params"]) == ids([model.embed.weight, model.proj.weight])
    assert ids(no_decay["params"]) == ids([model.norm.weight, model.norm.bias, model.proj.bias])


@pytest.mark.parametrize("name", ["lionw", "adamw"])
def test_build_optimizer_decays_a_fraction_per_step_scaled_by_lr(name):
    model = TinyLM()
    peak, wd = 1e-2, 0.1
    opt = build_optimizer(model, name, lr=peak, weight_decay=wd)
    assert all(g["initial_lr"] == peak for g in opt.param_groups)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    for g in opt.param_groups:
        g["lr"] = peak / 2
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)  # zero gradient: only weight decay can move a weight
    opt.step()
    # Half the peak LR removes half of wd: weights shrink by exactly 1 - 0.5 * 0.1 = 0.95.
    assert torch.allclose(model.proj.weight, 0.95 * before[id(model.proj.weight)])
    assert torch.allclose(model.embed.weight, 0.95 * before[id(model.embed.weight)])
    assert torch.equal(model.norm.weight, before[id(model.norm.weight)])
    assert torch.equal(model.proj.bias, before[id(model.proj.bias)])


def test_build_optimizer_kinds_and_default_betas():
    lion = build_optimizer(TinyLM(), "lionw", lr=1e-4, weight_decay=3e-5)
    adam = build_optimizer(TinyLM(), "adamw", lr=3e-4, weight_decay=3e-5)
    assert isinstance(lion, LionW) and lion.param_groups[0]["betas"] == (0.9, 0.99)
    assert isinstance(adam, torch.optim.AdamW) and adam.param_groups[0]["betas"] == (0.9, 0.95)
    assert adam.param_groups[0]["weight_decay"] == pytest.approx(3e-5 / 3e-4)
    custom = build_optimizer(TinyLM(), "lionw", lr=1e-4, weight_decay=0.0, betas=(0.95, 0.98))
    assert custom.param_groups[0]["betas"] == (0.95, 0.98)


def test_unknown_optimizer_name_raises_user_error():
    with pytest.raises(UserError, match="sgd"):
        build_optimizer(TinyLM(), "sgd", lr=1e-3, weight_decay=0.0)
