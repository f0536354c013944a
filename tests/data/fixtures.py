"""Small on-disk corpora for the reader and build tests, generated deterministically."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MIT = """MIT License

Copyright (c) 2024 Example

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

GPL3 = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

                            Preamble

  The GNU General Public License is a free, copyleft license for
software and other kinds of works.
"""

_WORDS = ["alpha", "beta", "gamma", "delta", "value", "count", "index", "total", "items", "result",
          "buffer", "offset", "record", "parser", "token", "window", "layer", "batch", "cache", "score"]


def python_module(seed: int, functions: int = 12) -> str:
    """A realistic, unique, parseable Python module."""
    rng = random.Random(seed)
    out = [f'"""Module {seed}: helpers for {rng.choice(_WORDS)} processing."""', "", "import math", ""]
    for i in range(functions):
        a, b, c = rng.sample(_WORDS, 3)
        k = rng.randint(2, 99)
        out += [
            f"def {a}_{b}_{seed}_{i}({a}, {b}={k}):",
            f'    """Combine {a} with {b} and return the {c}."""',
            f"    {c} = [{a} * n + {b} for n in range({k})]",
            f"    if len({c}) > {rng.randint(1, 50)}:",
            f"        return math.fsum({c}) / len({c})",
            f"    return sum({c}) - {rng.randint(0, 9)}",
            "",
        ]
    return "\n".join(out) + "\n"


def js_module(seed: int) -> str:
    """A small unique JavaScript module."""
    rng = random.Random(seed)
    lines = []
    for i in range(8):
        a, b = rng.sample(_WORDS, 2)
        lines.append(f"export function {a}{i}_{seed}({b}) {{\n  const {a} = {b} * {rng.randint(2, 90)};\n"
                     f"  return {a} + {rng.randint(0, 9)};\n}}\n")
    return "\n".join(lines)


def near_copy(text: str) -> str:
    """The text with one function renamed: a near duplicate (Jaccard well above 0.7)."""
    first_def = text.index("def ") + 4
    return text[:first_def] + "renamed_" + text[first_def:]


def make_repos(root: Path) -> dict:
    """A directory of repositories exercising every walk rule; returns facts the tests check."""
    root.mkdir(parents=True, exist_ok=True)
    shared = python_module(1000, functions=15)
    alpha = root / "alpha"
    (alpha / "pkg").mkdir(parents=True)
    (alpha / "LICENSE").write_text(MIT)
    (alpha / ".gitignore").write_text("*.log\nbuild_out/\n")
    (alpha / "pkg" / "core.py").write_text(python_module(1))
    (alpha / "pkg" / "more.py").write_text(python_module(2))
    (alpha / "pkg" / "shared.py").write_text(shared)
    (alpha / "web.js").write_text(js_module(3))
    (alpha / "contact.py").write_text(python_module(4) + '\nMAINTAINER = "jane.doe@corp-mail.com"\nSERVER = "52.14.133.7"\n')
    (alpha / "py2.py").write_text(python_module(5) + '\nprint "hello"\n')
    (alpha / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (alpha / "notes.log").write_text("debug output\n")
    (alpha / "build_out").mkdir()
    (alpha / "build_out" / "gen.py").write_text(python_module(6))
    (alpha / "node_modules" / "left-pad").mkdir(parents=True)
    (alpha / "node_modules" / "left-pad" / "index.js").write_text(js_module(7))
    (alpha / "node_modules" / "left-pad" / "util.js").write_text(js_module(8))
    (alpha / "sub").mkdir()
    (alpha / "sub" / ".gitignore").write_text("local_*.py\n")
    (alpha / "sub" / "local_settings.py").write_text(python_module(9))
    (alpha / "sub" / "kept.py").write_text(python_module(10))

    beta = root / "beta"
    beta.mkdir()
    (beta / "COPYING").write_text(GPL3)
    (beta / "gpl_code.py").write_text(python_module(20))

    gamma = root / "gamma"
    gamma.mkdir()
    (gamma / "unlicensed.py").write_text(python_module(30))

    delta = root / "delta"
    delta.mkdir()
    (delta / "package.json").write_text(json.dumps({"name": "delta", "license": "Apache-2.0"}))
    (delta / "copy_of_shared.py").write_text(shared)  # exact duplicate of alpha/pkg/shared.py
    (delta / "near_core.py").write_text(near_copy(python_module(1)))  # near duplicate of alpha/pkg/core.py
    (delta / "minified.min.js").write_text("var a=1;" * 200)
    (delta / "generated_pb2.py").write_text("# Generated by the protocol buffer compiler.  DO NOT EDIT!\n" + python_module(40))
    (delta / "empty.py").write_text("   \n")
    (delta / "latin1.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1") + python_module(41).encode())
    return {"shared": shared}


def make_jsonl(path: Path, extra: list[dict] = ()) -> None:
    """A JSONL source with one malformed line; includes a near copy of alpha's pkg/more.py."""
    rows = [
        {"content": python_module(100), "path": "a/one.py", "repo": "org/jsonl-repo", "license": "MIT", "stars": 3},
        {"content": near_copy(python_module(2)), "path": "b/more_copy.py", "repo": "org/other", "license": ["MIT"]},
        {"content": python_module(101), "path": "c/gpl.py", "repo": "org/gpl", "license": "GPL-3.0-only"},
    ] + list(extra)
    with open(path, "w") as fh:
        for i, r in enumerate(rows):
            fh.write(json.dumps(r) + "\n")
            if i == 0:
                fh.write("{not json\n")


def make_parquet_v1(path: Path, seeds=(200, 201, 202)) -> None:
    """A The Stack v1-style Parquet file."""
    contents = [python_module(s) for s in seeds]
    table = pa.table({
        "hexsha": [f"{s:040x}" for s in seeds],
        "size": [len(c) for c in contents],
        "ext": ["py"] * len(seeds),
        "lang": ["Python"] * len(seeds),
        "content": contents,
        "max_stars_repo_path": [f"src/mod_{s}.py" for s in seeds],
        "max_stars_repo_name": [f"stack/repo{s}" for s in seeds],
        "max_stars_repo_licenses": [["MIT"], ["Apache-2.0", "MIT"], ["GPL-2.0-only"]][: len(seeds)],
        "max_stars_count": [10, None, 5][: len(seeds)],
    })
    pq.write_table(table, path, row_group_size=2)


def make_parquet_v2(path: Path) -> None:
    """A The Stack v2-style Parquet file (with content joined in)."""
    table = pa.table({
        "blob_id": ["b1", "b2"],
        "repo_name": ["v2/first", "v2/second"],
        "path": ["/lib/thing.py", "/web/app.ts"],
        "detected_licenses": [["BSD-3-Clause"], []],
        "license_type": ["permissive", "no_license"],
        "language": ["Python", "TypeScript"],
        "star_events_count": [42, 0],
        "content": [python_module(300), "export const x: number = 1;\n" * 5],
    })
    pq.write_table(table, path)
