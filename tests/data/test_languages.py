"""Tests for codekiln.data.languages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codekiln.data import languages
from codekiln.data.languages import LANGUAGES, detect_language, notebook_to_text

REQUIRED = (
    "Markdown", "Java", "JavaScript", "Python", "TypeScript", "PHP", "SQL", "JSX",
    "reStructuredText", "Rust", "C", "CSS", "Go", "C++", "HTML", "Vue", "Ruby",
    "Jupyter Notebook", "R", "Shell", "TSX", "Kotlin", "Swift", "Scala", "C#", "Lua",
    "Perl", "Haskell", "YAML", "TOML", "Dockerfile", "Makefile",
)


def test_languages_has_required_names_first_in_order():
    assert LANGUAGES[: len(REQUIRED)] == REQUIRED


def test_languages_unique_and_no_data_formats():
    assert len(set(LANGUAGES)) == len(LANGUAGES)
    assert "JSON" not in LANGUAGES and "XML" not in LANGUAGES and "CSV" not in LANGUAGES


def test_every_mapped_language_is_canonical():
    assert set(languages._EXTENSIONS.values()) == set(LANGUAGES)
    assert set(languages._FILENAMES.values()) <= set(LANGUAGES)
    assert {lang for _, lang in languages._PREFIXES} <= set(LANGUAGES)


def test_no_extension_claimed_twice():
    seen: dict[str, str] = {}
    for lang, exts in languages._EXTENSIONS_BY_LANGUAGE.items():
        for ext in exts.split():
            assert ext == ext.lower() and not ext.startswith(".")
            assert ext not in seen, f".{ext} claimed by {seen.get(ext)} and {lang}"
            seen[ext] = lang


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("main.py", "Python"),
        ("pkg/stubs/mod.pyi", "Python"),
        ("gui.pyw", "Python"),
        ("src/a/b/c/App.java", "Java"),
        ("index.js", "JavaScript"),
        ("esm.mjs", "JavaScript"),
        ("config.cjs", "JavaScript"),
        (".eslintrc.js", "JavaScript"),
        ("app.ts", "TypeScript"),
        ("types/index.d.ts", "TypeScript"),
        ("mod.mts", "TypeScript"),
        ("mod.cts", "TypeScript"),
        ("Button.jsx", "JSX"),
        ("Button.tsx", "TSX"),
        ("index.php", "PHP"),
        ("view.phtml", "PHP"),
        ("schema.sql", "SQL"),
        ("README.md", "Markdown"),
        ("notes.markdown", "Markdown"),
        ("docs/index.rst", "reStructuredText"),
        ("lib.rs", "Rust"),
        ("main.c", "C"),
        ("include/foo.h", "C"),
        ("MAIN.C", "C"),
        ("a.cpp", "C++"),
        ("a.cc", "C++"),
        ("a.cxx", "C++"),
        ("a.c++", "C++"),
        ("a.hpp", "C++"),
        ("a.hh", "C++"),
        ("a.hxx", "C++"),
        ("sketch.ino", "C++"),
        ("style.css", "CSS"),
        ("main.go", "Go"),
        ("index.html", "HTML"),
        ("old.htm", "HTML"),
        ("page.xhtml", "HTML"),
        ("App.vue", "Vue"),
        ("app.rb", "Ruby"),
        ("Rakefile", "Ruby"),
        ("Gemfile", "Ruby"),
        ("mygem.gemspec", "Ruby"),
        ("analysis.ipynb", "Jupyter Notebook"),
        ("plot.R", "R"),
        ("plot.r", "R"),
        ("install.sh", "Shell"),
        ("x.bash", "Shell"),
        ("x.zsh", "Shell"),
        (".bashrc", "Shell"),
        ("home/user/.zshrc", "Shell"),
        (".bash_profile", "Shell"),
        ("Main.kt", "Kotlin"),
        ("build.gradle.kts", "Kotlin"),
        ("build.gradle", "Groovy"),
        ("App.swift", "Swift"),
        ("Main.scala", "Scala"),
        ("worksheet.sc", "Scala"),
        ("Program.cs", "C#"),
        ("init.lua", "Lua"),
        ("script.pl", "Perl"),
        ("Module.pm", "Perl"),
        ("Main.hs", "Haskell"),
        ("Literate.lhs", "Haskell"),
        ("ci.yml", "YAML"),
        ("ci.YAML", "YAML"),
        ("pyproject.toml", "TOML"),
        ("Dockerfile", "Dockerfile"),
        ("docker/Dockerfile.dev", "Dockerfile"),
        ("app.dockerfile", "Dockerfile"),
        ("Containerfile", "Dockerfile"),
        ("Makefile", "Makefile"),
        ("makefile", "Makefile"),
        ("GNUmakefile", "Makefile"),
        ("rules.mk", "Makefile"),
        ("win.mak", "Makefile"),
        ("Makefile.linux", "Makefile"),
        ("CMakeLists.txt", "CMake"),
        ("cmake/FindFoo.cmake", "CMake"),
        ("View.m", "Objective-C"),
        ("Bridge.mm", "Objective-C"),
        ("kernel.cu", "CUDA"),
        ("fast.pyx", "Cython"),
        ("main.dart", "Dart"),
        ("boot.S", "Assembly"),
        ("api.proto", "Protocol Buffer"),
        ("main.tf", "Terraform"),
        (".vimrc", "Vim Script"),
        ("init.el", "Emacs Lisp"),
        ("top.v", "Verilog"),
        ("paper.tex", "TeX"),
        ("Script.PS1", "PowerShell"),
        ("build.bat", "Batchfile"),
    ],
)
def test_detect_language_known(path, expected):
    assert detect_language(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "LICENSE",
        "README",
        "COPYING",
        "notes.txt",
        "requirements.txt",
        "package.json",
        "tsconfig.json",
        "Cargo.lock",
        "Gemfile.lock",
        "yarn.lock",
        "data.csv",
        "logo.png",
        "photo.JPG",
        "archive.tar.gz",
        "pom.xml",
        ".gitignore",
        ".env",
        ".py",  # a dotfile named ".py", not a Python file
        "foo.t",  # Perl test or Turing: skipped on purpose
        "config.inc",
        "noext",
        "trailing.",
        "dir/",
        "",
        "src/Makefile/data.bin",
    ],
)
def test_detect_language_unknown(path):
    assert detect_language(path) is None


def test_only_basename_matters():
    assert detect_language("weird.py/dir/lib.rs") == "Rust"
    assert detect_language("Dockerfile/notes.txt") is None


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_detect_language_total(path):
    result = detect_language(path)
    assert result is None or result in LANGUAGES


# --- notebooks ---------------------------------------------------------------


def _nb4(*cells):
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": list(cells)})


def test_notebook_v4_code_and_markdown():
    raw = _nb4(
        {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "Some *text*."]},
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": 1,
            "source": ["import math\n", "print(math.pi)\n"],
            "outputs": [{"output_type": "stream", "name": "stdout", "text": ["3.14159\n"]}],
        },
        {"cell_type": "raw", "metadata": {}, "source": "RAW SHOULD NOT APPEAR"},
        {"cell_type": "code", "metadata": {}, "source": "x = 1", "outputs": []},
    )
    assert notebook_to_text(raw) == (
        "# Title\nSome *text*.\n\nimport math\nprint(math.pi)\n\nx = 1\n"
    )


def test_notebook_skips_outputs_and_empty_cells():
    raw = _nb4(
        {"cell_type": "code", "source": [], "outputs": [{"output_type": "execute_result",
                                                         "data": {"text/plain": ["42"]}}]},
        {"cell_type": "code", "source": "  \n\n", "outputs": []},
        {"cell_type": "code", "source": "y = 2\n\n\n", "outputs": []},
    )
    text = notebook_to_text(raw)
    assert text == "y = 2\n"
    assert "42" not in text


def test_notebook_keeps_code_indentation_and_inner_blank_lines():
    src = "def f():\n    a = 1\n\n    return a\n"
    assert notebook_to_text(_nb4({"cell_type": "code", "source": src})) == src


def test_empty_notebook_is_empty_text():
    assert notebook_to_text(_nb4()) == ""


def test_notebook_v3_worksheets():
    raw = json.dumps(
        {
            "nbformat": 3,
            "worksheets": [
                {
                    "cells": [
                        {"cell_type": "heading", "level": 2, "source": ["Intro"]},
                        {"cell_type": "markdown", "source": ["Hello"]},
                        {"cell_type": "code", "language": "python", "input": ["a = 1\n", "a"],
                         "outputs": [{"text": "1"}]},
                        {"cell_type": "raw", "source": "skip me"},
                    ]
                }
            ],
        }
    )
    assert notebook_to_text(raw) == "## Intro\n\nHello\n\na = 1\na\n"


def test_notebook_accepts_bytes():
    raw = _nb4({"cell_type": "code", "source": "z = 3"}).encode()
    assert notebook_to_text(raw) == "z = 3\n"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "{",
        "[]",
        "42",
        '"cells"',
        "{}",
        '{"metadata": {}}',
        '{"cells": {}}',
        '{"cells": [1]}',
        '{"cells": [{"cell_type": "code", "source": 5}]}',
        '{"cells": [{"cell_type": "code", "source": ["ok", 5]}]}',
        '{"worksheets": {}}',
        '{"worksheets": [{"cells": 3}]}',
        '{"worksheets": [[]]}',
        "[" * 100_000,
    ],
)
def test_notebook_malformed_raises_value_error(raw):
    with pytest.raises(ValueError):
        notebook_to_text(raw)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=50))
def test_notebook_never_raises_other_errors(raw):
    try:
        notebook_to_text(raw)
    except ValueError:
        pass
