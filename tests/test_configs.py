"""The ready configs in configs/: each loads and validates, its model resolves, and what its header comment
claims (parameters, time per billion tokens, token budget, the published recipe) is what the config computes."""

import re
from pathlib import Path

import pytest

from codekiln.config import load_config
from codekiln.data.languages import LANGUAGES
from codekiln.model import flops_per_token, param_count
from codekiln.train.loop import model_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
HARDWARE = ("gpu-125m", "gpu-1b", "replit-v1-3b", "replit-v1.5-3b")  # configs that must state their figures
SCALE = {"k": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
SECONDS = {"s": 1, "min": 60, "h": 3600}
PARAMS_TOL = 0.10  # the stated parameter count may be rounded (Replit's "2.7B" for 2.60B)
TIME_TOL = 0.15  # an estimated time per billion tokens against the FLOPs arithmetic
FLOPS_TOL = 0.02  # the stated FLOPs per token is the trainer's count, rounded to three figures


def header(path: Path) -> str:
    """The comment block at the top of a config, as one line (continuation lines joined)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def claim(text: str, pattern: str):
    found = re.search(pattern, text)
    return found.groups() if found else None


def test_there_are_configs_for_real_hardware():
    assert {p.stem for p in CONFIGS} >= {*HARDWARE, "demo", "the-stack-spark"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_validates_and_its_model_resolves(path):
    cfg = load_config(path)
    mcfg = model_config(cfg, cfg.tokenizer.vocab_size)
    seq_len = cfg.train.seq_len or mcfg.context
    assert seq_len <= mcfg.context
    unknown = set(cfg.data.language.allow or []) - set(LANGUAGES)
    assert not unknown, f"data.language.allow names languages codekiln does not know: {sorted(unknown)}"

    text = header(path)
    params = claim(text, r"params: (\d+(?:\.\d+)?)([kMBT])\b")
    if path.stem in HARDWARE:
        assert params, "a hardware config states its parameter count (`# params: 2.7B`)"
        assert claim(text, r"hardware: (\S.*?)(?: params:|$)"), "a hardware config names its hardware"
        assert cfg.train.precision == "bf16"
    if params:
        stated = float(params[0]) * SCALE[params[1]]
        assert abs(param_count(mcfg) - stated) <= PARAMS_TOL * stated, (param_count(mcfg), stated)


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem in HARDWARE], ids=lambda p: p.stem)
def test_time_per_billion_tokens_matches_the_flops_arithmetic(path):
    cfg = load_config(path)
    mcfg = model_config(cfg, cfg.tokenizer.vocab_size)
    seq_len = cfg.train.seq_len or mcfg.context
    text = header(path)
    time = claim(text, r"time per billion tokens: (\d+(?:\.\d+)?) (s|min|h) \((estimate|measured)")
    assert time, "a hardware config states its time per billion tokens, labelled estimate or measured"
    stated_s = float(time[0]) * SECONDS[time[1]]
    gpus = int(claim(text, r"on (\d+) x ")[0])
    if gpus > 1:
        assert cfg.train.parallel == "fsdp"  # many GPUs train under FSDP2
    if time[2] == "measured":
        assert "docs/benchmarks.md" in text  # a measured figure says where it is recorded
        return
    mfu, peak = claim(text, r"estimate: (\d+(?:\.\d+)?)% MFU on \d+ x \S+ at (\d+(?:\.\d+)?) TFLOP/s")
    fpt = flops_per_token(mcfg, seq_len)
    stated_fpt = float(claim(text, r"(\d+(?:\.\d+)?) GFLOP per token")[0]) * 1e9
    assert abs(stated_fpt - fpt) <= FLOPS_TOL * fpt, (stated_fpt, fpt)
    computed_s = 1e9 * fpt / (gpus * float(peak) * 1e12 * float(mfu) / 100)
    assert abs(stated_s - computed_s) <= TIME_TOL * computed_s, (stated_s, computed_s)
    budget = claim(text, r"budget: (\d+(?:\.\d+)?)([BT]) tokens")
    assert budget and cfg.train.max_tokens == float(budget[0]) * SCALE[budget[1]]


def test_the_replit_configs_are_the_published_recipes():
    """replit-code-v1-3b: MHA, ALiBi, context 2048, 32k vocabulary, LionW, 525B tokens; v1.5: GQA with 8 kv heads,
    context 4096, a linear cooldown, 1T tokens (REFERENCE.md)."""
    configs = {name: load_config(CONFIGS[0].parent / f"{name}.yaml") for name in ("replit-v1-3b", "replit-v1.5-3b")}
    for name, cfg in configs.items():
        m = model_config(cfg, cfg.tokenizer.vocab_size)
        assert (m.positions, m.vocab_size, m.bias, cfg.train.optimizer) == ("alibi", 32768, False, "lionw"), name
        assert (cfg.train.seq_len or m.context) == m.context
    v1, v15 = (model_config(c, c.tokenizer.vocab_size) for c in configs.values())
    assert (v1.kv_heads, v1.n_heads, v1.context, v1.d_model) == (32, 32, 2048, 2560)
    assert configs["replit-v1-3b"].train.max_tokens == 525e9
    assert (v15.kv_heads, v15.n_heads, v15.context, v15.d_model) == (8, 24, 4096, 3072)
    assert configs["replit-v1.5-3b"].train.schedule == "linear" and configs["replit-v1.5-3b"].train.max_tokens == 1e12


def test_the_spark_config_reads_the_stack_from_a_cluster_store():
    path = CONFIGS[0].parent / "the-stack-spark.yaml"
    cfg = load_config(path)
    assert cfg.data.sources and all(re.match(r"parquet:(s3a|hdfs)://", s) for s in cfg.data.sources)
    assert "--executor spark" in header(path)
