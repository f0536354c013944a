"""Training metrics: metrics.jsonl (the contract), TensorBoard and Weights & Biases when installed, and MFU.

TensorBoard is an optional extra (`pip install 'codekiln[tensorboard]'`): on by default when installed,
skipped with a one-line note when not. W&B is asked for (train.wandb_project), so a missing wandb is an error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from codekiln.errors import UserError
from codekiln.progress import console

TENSORBOARD_MISSING = ("note: TensorBoard is not installed, so the curves go to metrics.jsonl and plots/ only "
                       "(pip install 'codekiln[tensorboard]' to get them in TensorBoard too)")

# Dense bf16 peak FLOP/s per device (vendor figures, without sparsity); matched against the device name.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
    "4090": 165e12,
    "3090": 71e12,
    "V100": 125e12,  # fp16 tensor cores; V100 has no bf16
}


def gpu_peak(name: str) -> float | None:
    """Table peak for a CUDA device name, or None when unknown (MFU is then not reported)."""
    for key, peak in GPU_PEAK_BF16.items():
        if key in name:
            return peak
    return None


def measure_cpu_peak(dtype: torch.dtype, seconds: float = 0.5, n: int = 1024) -> float:
    """FLOP/s of a square matmul on this CPU in this dtype, with the threads training will use.

    The fastest single matmul counts, not the average: a peak measured while other work shares the CPU
    would otherwise come out low, and every MFU figure divided by it high (over 100% when the load passes)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def device_peak(device: torch.device, dtype: torch.dtype, override_tflops: float | None) -> tuple[float | None, str]:
    """Peak FLOP/s per device for MFU and where it came from."""
    if override_tflops:
        return override_tflops * 1e12, "train.peak_tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak(name)
        return peak, f"table ({name})" if peak else f"unknown device {name}; set train.peak_tflops"
    return measure_cpu_peak(dtype), f"measured matmul peak ({str(dtype).removeprefix('torch.')})"


class MetricsLog:
    """Appends records to metrics.jsonl and mirrors scalars to TensorBoard and W&B (rank 0 only)."""

    def __init__(self, run: Path, enabled: bool, wandb_project: str | None, config: dict, quiet: bool = False):
        self.enabled = enabled
        self.path = run / "metrics.jsonl"
        self.tb = self.wandb = None
        if not enabled:
            return
        self.tb = tensorboard_writer(run / "tensorboard", quiet)
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise UserError("train.wandb_project is set but wandb is not installed (pip install wandb)") from None
            id_file = run / "wandb_id"  # one W&B run per run directory, a new one after --restart
            if not id_file.is_file():
                id_file.write_text(wandb.util.generate_id() + "\n")
            self.wandb = wandb.init(project=wandb_project, dir=str(run), config=config,
                                    id=id_file.read_text().strip(), resume="allow")

    def write(self, record: dict) -> None:
        """One record: a JSON line, and its numbers as scalars."""
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        step = record["step"]
        scalars = {}
        for k, v in record.items():
            if isinstance(v, (int, float)) and k != "step":
                scalars[k] = v
            elif isinstance(v, dict):
                scalars.update({f"{k}/{lang}": x for lang, x in v.items() if isinstance(x, (int, float))})
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        """Flush and close the writers."""
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def tensorboard_writer(directory: Path, quiet: bool = False):
    """A TensorBoard SummaryWriter, or None with a one-line note when the tensorboard extra is not installed."""
    try:
        # imported here: torch.utils.tensorboard needs the tensorboard package, an optional extra
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not quiet:
            console.print(TENSORBOARD_MISSING, markup=False, highlight=False, soft_wrap=True)
        return None
    return SummaryWriter(str(directory))


def read(run: Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run} has no metrics.jsonl")
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out



class Memory:
    """Resident memory of this process while training: the level when training starts (model, optimizer
    and data loaded) and the peak, in MB, sampled every 10 ms by a daemon thread (activations live only
    inside a step, so a reading between steps would miss them); on a GPU, torch's allocator peak instead.
    What training adds above the loaded model is `peak_mb - start_mb`: LoRA's saving shows there."""

    def __init__(self, interval_s: float = 0.01):
        import threading

        self.cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.start = self.peak = self._now()
        self._stop = threading.Event()
        self._thread = None
        if not self.cuda:
            self._thread = threading.Thread(target=self._watch, args=(interval_s,), daemon=True, name="memory")
            self._thread.start()

    @staticmethod
    def _rss() -> float:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return 0.0
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6

    def _now(self) -> float:
        return torch.cuda.max_memory_allocated() / 1e6 if self.cuda else self._rss()

    def _watch(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.peak = max(self.peak, self._rss())

    def sample(self) -> None:
        """Take a reading now (between steps)."""
        self.peak = max(self.peak, self._now())

    def record(self) -> dict:
        """Stop watching; {"start_mb", "peak_mb", "added_mb"}."""
        self.sample()
        self._stop.set()
        return {"start_mb": round(self.start, 1), "peak_mb": round(self.peak, 1),
                "added_mb": round(self.peak - self.start, 1)}
