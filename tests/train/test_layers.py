"""Dependencies point one way (ARCHITECTURE.md): the shared seams are neutral modules, and no stage reaches
into another stage's internals or into a stage above it."""

import ast
from pathlib import Path

import pytest

import codekiln

SRC = Path(codekiln.__file__).parent
NEUTRAL = ("fim", "checkpoint", "validation", "token_shards", "files", "errors")
STAGES = ("data", "train", "infer", "eval", "serve", "export", "report")


def imports(path: Path) -> set[str]:
    """Every codekiln module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("codekiln"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if node.module == "codekiln")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("codekiln"))
    return found


def package_files(package: str) -> list[Path]:
    return sorted((SRC / package).glob("*.py"))


@pytest.mark.parametrize("name", NEUTRAL)
def test_neutral_modules_import_no_stage(name):
    bad = [m for m in imports(SRC / f"{name}.py") if m.split(".")[1:2] and m.split(".")[1] in STAGES]
    assert not bad, f"codekiln.{name} imports {bad}"


@pytest.mark.parametrize("path", package_files("train") + package_files("export"), ids=lambda p: p.name)
def test_stages_use_only_public_apis_below_them(path):
    own = path.parent.name
    later = [m for m in imports(path) if own == "train" and m.split(".")[1:2]
             and m.split(".")[1] in ("export", "eval", "serve", "infer")]
    assert not later, f"{own}/{path.name} imports {later}"
    internals = [m for m in imports(path) if len(m.split(".")) > 2 and m.split(".")[1] in STAGES + ("model", "tokenizer")
                 and m.split(".")[1] != own]
    assert not internals, f"{own}/{path.name} reaches into {internals}"


@pytest.mark.parametrize("path", [SRC / "eval" / "bpb.py", SRC / "infer" / "fim.py", SRC / "loading.py"],
                         ids=lambda p: p.name)
def test_consumers_reach_no_training_internals(path):
    bad = [m for m in imports(path) if m.startswith("codekiln.train")]
    assert not bad, f"{path.name} imports {bad}"
