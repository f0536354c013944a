"""`codekiln export hf --adapter-only`: a LoRA fine-tune's adapters alone, in the PEFT format.

The directory holds adapter_config.json and adapter_model.safetensors as `peft.PeftModel.from_pretrained`
reads them, on top of the base model exported by `codekiln export hf` (the Llama layout: q, k, v, o and
the MLP projections copy over one to one, with no permutation of q/k rows and no repeated key/value
heads, so A and B copy over unchanged too). Tensor names:

    blocks.{i}.attn.{q,k,v,o}_proj.lora_{A,B}    -> base_model.model.model.layers.{i}.self_attn.{...}.lora_{A,B}.weight
    blocks.{i}.mlp.{gate,up,down}_proj.lora_{A,B} -> base_model.model.model.layers.{i}.mlp.{...}.lora_{A,B}.weight

Refused, each in one line: a model that is not a LoRA fine-tune, one whose stock class fuses q/k/v (MPT,
GPT-NeoX), and one with new vocabulary rows (the base's embedding changed: export the merged model).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from safetensors.torch import save_file

from codekiln import __version__
from codekiln.adapters import LORA_A, LORA_B, adapter_tensors
from codekiln.errors import UserError
from codekiln.files import atomic_write_json, fsync_file, replace_dir
from codekiln.hf_layout import layout

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
_PARENTS = {"attn": "self_attn", "mlp": "mlp"}  # our block child -> Llama's (hf_layout's Llama names)


def peft_name(name: str) -> str:
    """Our adapter tensor name -> PEFT's name on LlamaForCausalLM (blocks.0.attn.q_proj.lora_A -> ...lora_A.weight)."""
    blocks, i, parent, proj, factor = name.split(".")
    if blocks != "blocks" or parent not in _PARENTS or factor not in (LORA_A, LORA_B):
        raise ValueError(f"{name} is not a LoRA factor of a block's linear")
    return f"base_model.model.model.layers.{i}.{_PARENTS[parent]}.{proj}.{factor}.weight"


def export_peft_adapter(model_path, out_dir) -> dict:
    """Write the adapters of the LoRA fine-tune at model_path (run or checkpoint directory) to out_dir; a summary."""
    from codekiln.checkpoint import is_export, lora_record, lora_spec, model_config, read_model_tensors, resolve

    ckpt = resolve(model_path)
    if is_export(ckpt):
        raise UserError(f"{model_path} is an exported model (merged weights, no adapters); "
                        "--adapter-only takes the fine-tune's run or checkpoint directory")
    spec = lora_spec(ckpt)
    if spec is None:
        raise UserError(f"{model_path} is not a LoRA fine-tune (its config.json has no lora record): "
                        "there are no adapters to export alone")
    cfg = model_config(ckpt)
    lay = layout(cfg)
    if lay.model_type != "llama":
        raise UserError(f"--adapter-only writes adapters for Llama-layout models; this model exports as "
                        f"{lay.architecture}, whose fused q/k/v projection has no per-projection adapter: "
                        "export the merged model instead")
    if spec.rows_from is not None:
        raise UserError(f"the fine-tune trained new vocabulary rows (from {spec.rows_from}), which change the base "
                        "model's embedding: a PEFT adapter cannot carry them; export the merged model instead")
    out = Path(out_dir)
    _check_target(out)
    state = read_model_tensors(ckpt / "model.safetensors", cfg, merge=False)
    tensors = {peft_name(name): value.detach().contiguous() for name, value in adapter_tensors(state, spec).items()}
    base = (lora_record(ckpt) or {}).get("base")
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": spec.rank,
              "lora_alpha": int(spec.alpha) if float(spec.alpha).is_integer() else spec.alpha,
              "target_modules": sorted({name.split(".")[-3] for name in tensors}), "lora_dropout": 0.0,
              "bias": "none", "fan_in_fan_out": False, "modules_to_save": None, "use_rslora": False,
              "use_dora": False, "init_lora_weights": True, "inference_mode": True,
              "base_model_name_or_path": None if base is None else str(base)}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "codekiln_version": __version__})
        fsync_file(tmp / WEIGHTS_FILE)
        atomic_write_json(tmp / CONFIG_FILE, config)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "rank": spec.rank, "alpha": spec.alpha, "target_modules": config["target_modules"],
            "tensors": len(tensors), "parameters": sum(t.numel() for t in tensors.values()),
            "bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
            "base": config["base_model_name_or_path"]}


def _check_target(out: Path) -> None:
    """--out may be new, empty, or an earlier adapter export (replaced whole); anything else is refused."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if any(out.iterdir()) and not (out / CONFIG_FILE).is_file():
        raise UserError(f"--out {out} is a non-empty directory that is not an adapter export; "
                        "refusing to overwrite it")


def summary_table(summary: dict):
    """The table `codekiln export hf --adapter-only` prints: rank, alpha, targets, size, directory."""
    from rich.table import Table

    table = Table(title="codekiln export hf --adapter-only", show_header=False, show_edge=False)
    table.add_row("format", "PEFT LoRA")
    table.add_row("rank / alpha", f"{summary['rank']} / {summary['alpha']:g}")
    table.add_row("target modules", ", ".join(summary["target_modules"]))
    table.add_row("parameters", f"{summary['parameters']:,} ({summary['bytes'] / 2**20:.2f} MiB)")
    table.add_row("base", summary["base"] or "(not recorded)")
    table.add_row("directory", summary["out"])
    return table
