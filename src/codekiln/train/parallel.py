"""Parallelism, applied after the model is built (the model knows nothing of it): torchrun process
groups, activation checkpointing, torch.compile, and FSDP2 `fully_shard` or DDP."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """True on rank 0, which writes files and logs."""
        return self.rank == 0


def init() -> Dist:
    """Join the torchrun job when there is one (NCCL on GPUs, gloo on CPUs); otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank=rank, world=world, local_rank=local, device=device)


def shutdown() -> None:
    """Leave the process group."""
    if dist.is_initialized():
        dist.destroy_process_group()


def choose_parallel(mode: str, device: torch.device) -> str:
    """auto: FSDP2 on GPUs; DDP on CPUs (gloo lacks the reduce-scatter FSDP2 relies on in some builds)."""
    if mode != "auto":
        return mode
    return "fsdp" if device.type == "cuda" else "ddp"


def apply(model: nn.Module, d: Dist, parallel: str, compile: bool, activation_checkpointing: bool,
          param_dtype: torch.dtype) -> nn.Module:
    """Activation checkpointing, then compile, then FSDP2 or DDP: torchtitan's order."""
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for i, block in enumerate(model.blocks):
            model.blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    if compile:
        for block in model.blocks:
            block.compile()
    if d.world == 1:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for block in model.blocks:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The Transformer inside a DDP wrapper (FSDP2 shards in place and needs no unwrapping)."""
    return model.module if hasattr(model, "module") and not hasattr(model, "blocks") else model


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Sum floats over ranks (float64 on the CPU, or on the GPU for NCCL)."""
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, d: Dist) -> list:
    """Every rank's object, on every rank."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    """Wait for every rank."""
    if d.world > 1:
        dist.barrier()
