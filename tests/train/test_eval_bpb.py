"""`codekiln eval bpb`: the trainer's last validation figure, reproduced from the run directory alone."""

import json

import pytest
from micro_config import MICRO

import codekiln
from codekiln.cli import main
from codekiln.config import load_config
from codekiln.errors import UserError
from codekiln.eval.bpb import evaluate_bpb
from codekiln.train.loop import train


def test_eval_bpb_matches_training_validation(shards, tmp_path, capsys):
    tok_dir, data = shards
    run = tmp_path / "run"
    train(load_config(None, [*MICRO, f"train.data=[{data}]", f"train.tokenizer={tok_dir}", f"train.out={run}",
                             "train.max_steps=10", "train.eval_tokens=4096"]), quiet=True)
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if "val_bpb" in x][-1]
    model, tok = codekiln.load(run)
    got = evaluate_bpb(model, tok, [data], seq_len=64, max_tokens=4096, batch_size=4)
    # Two code paths: the trainer validates under its autocast (bf16 on a CPU with native bf16, as `auto`
    # picks) with the training model, eval bpb in fp32 with the loaded one. On such a CPU they were
    # measured 2e-5 bits/byte apart on this model; 1e-3 is far below any difference between two models.
    assert got["val_bpb"] == pytest.approx(last["val_bpb"], abs=1e-3)
    assert got["val_bpb_by_lang"] == pytest.approx(last["val_bpb_by_lang"], abs=1e-3)
    assert sum(got["bytes_by_lang"].values()) == got["bytes"] > 0

    out = tmp_path / "bpb.json"
    assert main(["eval", "bpb", "--model", str(run), "--shards", str(data), "--seq-len", "64", "--json", str(out)]) == 0
    full = json.loads(out.read_text())
    assert full["tokens"] == full["sequences"] * 64 and "Python" in capsys.readouterr().err

    with pytest.raises(UserError, match="exceeds the model's context"):
        evaluate_bpb(model, tok, [data], seq_len=10_000)
    assert main(["eval", "bpb", "--model", str(tmp_path / "nope"), "--shards", str(data)]) == 2
