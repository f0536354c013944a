"""LoRA fine-tuning: adapters that start as the identity, train alone, merge into the same function and resume
exactly."""

import json

import pytest
import torch
from safetensors.torch import save_file

from codekiln.adapters import TARGETS, LoraSpec, adapter_bytes, adapter_tensors, merged_state
from codekiln.checkpoint import lora_spec, read_model_tensors
from codekiln.errors import UserError
from codekiln.model import ModelConfig, Transformer
from codekiln.train.checkpoint import model_tensors
from codekiln.train.lora import LoRALinear, apply_lora, trainable_parameters
from codekiln.train.optim import build_optimizer

MERGE_TOL = 1e-5  # fp32 logits: W x + s B (A x) against (W + s B A) x differ by rounding only
VOCAB = 96

FAMILIES = {
    "llama-tied": dict(positions="rope", norm="rmsnorm", mlp="swiglu", kv_heads=2),
    "llama-untied-bias": dict(positions="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False, bias=True,
                              ffn_hidden=48),
    "mpt-tied": dict(positions="alibi", norm="layernorm", mlp="gelu"),
    "mpt-untied": dict(positions="alibi", norm="layernorm", mlp="gelu", kv_heads=2, tie_embeddings=False),
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """torch on one thread (tests/conftest.py, one_thread)."""


def tiny(seed=0, **options) -> Transformer:
    """A random model small enough for exact comparisons in milliseconds; norms perturbed so they matter."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, context=32, init_std=0.15),
                         **options})
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def perturb(model, seed=1):
    """Give every adapter tensor random values, as training would (B leaves zero, the new rows move)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def ids(seed=2, batch=2, t=12):
    return torch.randint(0, VOCAB, (batch, t), generator=torch.Generator().manual_seed(seed))


def plain_from(state, cfg):
    """A plain Transformer loaded strictly from a plain state dict."""
    model = Transformer(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_start_as_the_identity(family):
    model = tiny(**FAMILIES[family])
    x = ids()
    with torch.no_grad():
        before = model(x)
        apply_lora(model, LoraSpec(rank=4, alpha=8, rows_from=VOCAB - 5), seed=0)
        after = model(x)
    assert torch.equal(before, after)  # B = 0 and the new rows start as copies: bitwise the same model
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 2 * (7 if family.startswith("llama") else 6)


@pytest.mark.parametrize("rows", [False, True], ids=["lora", "lora+rows"])
@pytest.mark.parametrize("family", FAMILIES)
def test_merged_weights_compute_the_adapted_model(family, rows):
    model = tiny(**FAMILIES[family])
    x = ids()
    with torch.no_grad():
        base = model(x)
    spec = LoraSpec(rank=4, alpha=6, targets=("q_proj", "v_proj", "o_proj", "up_proj", "down_proj"),
                    rows_from=VOCAB - 7 if rows else None)
    apply_lora(model, spec, seed=0)
    perturb(model)
    merged = plain_from(merged_state(model.state_dict(), spec), model.cfg)
    with torch.no_grad():
        ours, plain = model(x), merged(x)
    assert torch.allclose(ours, plain, atol=MERGE_TOL, rtol=0), float((ours - plain).abs().max())
    assert (ours - base).abs().max() > 0.5  # the adapters changed the function: the merge is not vacuous
    if rows:  # the new tokens' rows moved and the merged model uses them, in the embedding and the head
        assert not torch.equal(merged.embed.weight[VOCAB - 7:], tiny(**FAMILIES[family]).embed.weight[VOCAB - 7:])


@pytest.mark.parametrize("family", ["llama-tied", "mpt-untied"])
def test_only_adapters_learn(family):
    model = tiny(**FAMILIES[family]).train()
    spec = LoraSpec(rank=2, alpha=4, rows_from=VOCAB - 4)
    apply_lora(model, spec, seed=0)
    perturb(model)  # B != 0, so A gets gradients too
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B", "new_rows")) for n in trainable)
    assert {n.rsplit(".", 1)[0] for n in frozen} >= {"embed", "norm"}
    assert trainable_parameters(model) == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert trainable_parameters(model) < 0.3 * sum(p.numel() for p in model.parameters())

    optimizer = build_optimizer(model, "lionw", lr=1e-2, weight_decay=0.1)
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert stepped == {id(p) for n, p in model.named_parameters() if n in trainable}
    x = ids(t=10)
    x[0, :3] = torch.tensor([VOCAB - 1, VOCAB - 2, VOCAB - 3])  # new tokens in the input and the targets
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}
    logits = model(x[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in trainable)
    optimizer.step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), f"{name} changed although frozen"
        else:
            assert not torch.equal(p, before[name]), f"{name} did not learn"


def test_bf16_autocast_trains_the_adapters():
    model = tiny(**FAMILIES["llama-tied"]).train()
    apply_lora(model, LoraSpec(rank=4, alpha=8, rows_from=VOCAB - 4), seed=0)
    x = ids()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).float().flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_init_is_deterministic_per_seed():
    a, b, c = (tiny(**FAMILIES["llama-tied"]) for _ in range(3))
    spec = LoraSpec(rank=4, alpha=8)
    apply_lora(a, spec, seed=5), apply_lora(b, spec, seed=5), apply_lora(c, spec, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.attn.q_proj.lora_A"], sc["blocks.0.attn.q_proj.lora_A"])
    bound = 1 / 32 ** 0.5  # kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))
    assert 0.5 * bound < sa["blocks.0.attn.q_proj.lora_A"].abs().max() <= bound


def write_checkpoint(directory, model, spec):
    """checkpoints/step-N as the trainer writes it: the raw state (tied head once) and config.json with "lora"."""
    directory.mkdir(parents=True)
    save_file(model_tensors(model.state_dict(), model.cfg), str(directory / "model.safetensors"))
    record = {"codekiln_version": "test", "model": model.cfg.to_dict(), "step": 3, "tokens": 0,
              "lora": {**spec.to_dict(), "base": "runs/base"}}
    (directory / "config.json").write_text(json.dumps(record))
    return directory


@pytest.mark.parametrize("family", ["llama-tied", "mpt-untied"])
def test_checkpoint_resumes_raw_and_reads_merged(tmp_path, family):
    model = tiny(**FAMILIES[family])
    spec = LoraSpec(rank=3, alpha=3, rows_from=VOCAB - 6)
    apply_lora(model, spec, seed=0)
    perturb(model)
    ckpt = write_checkpoint(tmp_path / "step-3", model, spec)
    assert lora_spec(ckpt) == spec
    x = ids()
    with torch.no_grad():
        ours = model(x)

    resumed = tiny(seed=9, **FAMILIES[family])  # other base weights, other adapters: all replaced by the load
    apply_lora(resumed, spec, seed=1)
    resumed.load_state_dict(read_model_tensors(ckpt / "model.safetensors", model.cfg, merge=False), strict=True)
    assert resumed.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(resumed(x), ours)

    merged = plain_from(read_model_tensors(ckpt / "model.safetensors", model.cfg), model.cfg)
    with torch.no_grad():
        plain = merged(x)
    assert torch.allclose(plain, ours, atol=MERGE_TOL, rtol=0), float((plain - ours).abs().max())


def test_adapter_tensors_are_the_trained_ones():
    model = tiny(**FAMILIES["llama-untied-bias"])
    spec = LoraSpec(rank=4, alpha=8, targets=("q_proj", "v_proj"), rows_from=VOCAB - 2)
    apply_lora(model, spec, seed=0)
    tensors = adapter_tensors(model.state_dict(), spec)
    assert set(tensors) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(tensors) == 2 * 2 * 2 + 2
    assert adapter_bytes(model.state_dict(), spec) == 4 * trainable_parameters(model)  # fp32


def test_spec_records_round_trip_and_bad_ones_are_refused():
    spec = LoraSpec(rank=8, alpha=16.0, targets=("q_proj", "v_proj"), rows_from=100)
    assert spec.scale == 2.0
    assert LoraSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert LoraSpec.from_dict({"rank": 2, "alpha": 2, "base": "x"}).targets == TARGETS
    for bad in ({"rank": 0, "alpha": 1}, {"rank": 2.5, "alpha": 1}, {"rank": 2, "alpha": -1}, {"alpha": 1},
                {"rank": 2, "alpha": 1, "targets": ["lm_head"]}, {"rank": 2, "alpha": 1, "targets": "q_proj"},
                {"rank": 2, "alpha": 1, "rows_from": -1}, {"rank": 2, "alpha": 1, "dropout": 0.1}, [2, 1]):
        with pytest.raises(UserError, match="^lora: "):
            LoraSpec.from_dict(bad)


def test_mismatched_checkpoints_and_models_are_refused():
    model = tiny(**FAMILIES["mpt-tied"])
    with pytest.raises(UserError, match="rows_from 96 must be below"):
        apply_lora(model, LoraSpec(rank=2, alpha=2, rows_from=VOCAB), seed=0)
    with pytest.raises(UserError, match="none of the target layers gate_proj"):
        apply_lora(tiny(**FAMILIES["mpt-tied"]), LoraSpec(rank=2, alpha=2, targets=("gate_proj",)), seed=0)
    apply_lora(model, LoraSpec(rank=2, alpha=2), seed=0)
    state = model.state_dict()
    with pytest.raises(UserError, match=r"lora_A has shape \(2, 32\), not \(4, 32\)"):
        merged_state(state, LoraSpec(rank=4, alpha=2))
    with pytest.raises(UserError, match="outside the recorded targets"):
        merged_state(state, LoraSpec(rank=2, alpha=2, targets=("q_proj",)))
    with pytest.raises(UserError, match="holds no embed.new_rows"):
        merged_state(state, LoraSpec(rank=2, alpha=2, rows_from=90))
    with pytest.raises(UserError, match="holds no lora_A/lora_B"):
        merged_state(tiny(**FAMILIES["mpt-tied"]).state_dict(), LoraSpec(rank=2, alpha=2))
