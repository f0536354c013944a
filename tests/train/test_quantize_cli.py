"""--quantize int8 on the commands that load a model, and codekiln.load(path, quantize=...)."""

import json

import pytest
from micro_config import MICRO

import codekiln
from codekiln.cli import main
from codekiln.config import load_config
from codekiln.errors import UserError
from codekiln.infer import is_quantized
from codekiln.train.loop import train


def test_quantize_int8_from_load_and_the_command_line(shards, tmp_path, capsys):
    tok_dir, data = shards
    run = tmp_path / "run"
    train(load_config(None, [*MICRO, f"train.data=[{data}]", f"train.tokenizer={tok_dir}", f"train.out={run}",
                             "train.max_steps=10"]), quiet=True)
    model, _ = codekiln.load(run, quantize="int8")
    assert is_quantized(model) and not is_quantized(codekiln.load(run)[0])
    with pytest.raises(UserError, match="quantize must be one of none, int8"):
        codekiln.load(run, quantize="int4")

    figures = {}
    for q in ("none", "int8"):
        out = tmp_path / f"{q}.json"
        assert main(["eval", "bpb", "--model", str(run), "--shards", str(data), "--seq-len", "64",
                     "--quantize", q, "--json", str(out)]) == 0
        figures[q] = json.loads(out.read_text())["val_bpb"]
    # int8 left this micro model's 1.873 bits per byte unchanged to 5 decimals; 1% would be a real loss.
    assert figures["int8"] == pytest.approx(figures["none"], rel=1e-2)

    capsys.readouterr()
    assert main(["complete", "--model", str(run), "--quantize", "int8", "--max-new-tokens", "8", "def f("]) == 0
    assert capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses a value outside the choices
        main(["complete", "--model", str(run), "--quantize", "int4", "x"])
    assert exit_info.value.code == 2
