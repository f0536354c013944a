"""metrics.jsonl is the contract; TensorBoard is an optional extra, skipped with one line when missing."""

import json
import sys

import pytest

from codekiln.train import metrics


def test_missing_tensorboard_is_one_line_and_training_logs_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were not installed
    log = metrics.MetricsLog(tmp_path, True, None, {})
    log.write({"step": 1, "loss": 2.5, "val_bpb_by_lang": {"Python": 1.5}})
    log.close()
    err = capsys.readouterr().err
    assert "TensorBoard is not installed" in err and "codekiln[tensorboard]" in err and err.count("\n") == 1, err
    assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == \
        [{"step": 1, "loss": 2.5, "val_bpb_by_lang": {"Python": 1.5}}]
    assert not (tmp_path / "tensorboard").exists()

    metrics.MetricsLog(tmp_path, True, None, {}, quiet=True).close()
    assert capsys.readouterr().err == ""


def test_tensorboard_mirrors_the_scalars_when_installed(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    log = metrics.MetricsLog(tmp_path, True, None, {})
    log.write({"step": 3, "loss": 1.25})
    log.close()
    assert list((tmp_path / "tensorboard").iterdir()) and capsys.readouterr().err == ""


def test_the_cpu_peak_is_the_fastest_matmul_not_the_average(monkeypatch):
    import pytest
    import torch

    from codekiln.train import metrics

    clock = {"now": 0.0}
    durations = iter([1.0, 0.001, 1.0, 1.0] * 50)  # one quiet moment among matmuls slowed by other work
    real_matmul = torch.Tensor.__matmul__

    def matmul(a, b):
        clock["now"] += next(durations)
        return real_matmul(a, b)

    monkeypatch.setattr(metrics.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(torch.Tensor, "__matmul__", matmul)
    n = 64
    # The old measure, the average over the window, comes out hundreds of times lower here.
    assert metrics.measure_cpu_peak(torch.float32, seconds=5.0, n=n) == pytest.approx(2 * n**3 / 0.001, rel=1e-6)
