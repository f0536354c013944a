"""Language detection from file paths, and Jupyter notebook flattening.

Detection is path-only (no shebangs, no content sniffing) and runs once per
file over the whole corpus, so it is a couple of dict lookups on the
lower-cased basename: exact filenames first, then the last extension, then a
few filename prefixes (``Dockerfile.dev``, ``Makefile.inc``).

Ambiguous extensions are resolved to the language that dominates open-source
code, on purpose and without content checks:

* ``.h`` -> C (C++ headers usually use ``.hpp``/``.hh``; C++ code in ``.h``
  files is still labelled C).
* ``.m`` -> Objective-C, not Matlab (Matlab is therefore not detected);
  ``.mm`` (Objective-C++) -> Objective-C.
* Extensions are case-insensitive everywhere, so ``.C``/``.H`` are C (old
  all-caps DOS names like ``MAIN.C`` outnumber gcc's ``.C``-means-C++), and
  ``.R``/``.r``, ``.S``/``.s`` are R and Assembly.
* ``.pl`` -> Perl (not Prolog, which is not detected); ``.t`` is skipped.
* ``.v`` -> Verilog (not Coq), ``.fs`` -> F# (not GLSL/Forth), ``.d`` -> D,
  ``.sc`` -> Scala, ``.ts`` -> TypeScript (not Qt translations),
  ``.ino`` (Arduino) -> C++, ``.bas`` -> Visual Basic.
* Skipped as too ambiguous: ``.inc``, ``.pro``, ``.pp``, ``.cl``, ``.cls``.

Data formats (JSON, XML, CSV, lock files, plain text) are deliberately not
languages: the corpus only wants code and prose-with-code (Markdown, reST,
notebooks) plus configuration that is written by hand (YAML, TOML).
"""

from __future__ import annotations

import json

# Canonical name -> extensions (lower case, no dot). Dict order is the order
# of LANGUAGES: the main corpus languages first, then the long tail.
_EXTENSIONS_BY_LANGUAGE: dict[str, str] = {
    "Markdown": "md markdown mdown mkd mkdn",
    "Java": "java",
    "JavaScript": "js mjs cjs",
    "Python": "py pyi pyw",
    "TypeScript": "ts mts cts",
    "PHP": "php phtml php3 php4 php5",
    "SQL": "sql",
    "JSX": "jsx",
    "reStructuredText": "rst",
    "Rust": "rs",
    "C": "c h",
    "CSS": "css",
    "Go": "go",
    "C++": "cpp cc cxx c++ hpp hh hxx h++ ipp tpp tcc inl ino",
    "HTML": "html htm xhtml",
    "Vue": "vue",
    "Ruby": "rb rake gemspec ru",
    "Jupyter Notebook": "ipynb",
    "R": "r",
    "Shell": "sh bash zsh ksh",
    "TSX": "tsx",
    "Kotlin": "kt kts",
    "Swift": "swift",
    "Scala": "scala sc",
    "C#": "cs csx",
    "Lua": "lua",
    "Perl": "pl pm",
    "Haskell": "hs lhs",
    "YAML": "yml yaml",
    "TOML": "toml",
    "Dockerfile": "dockerfile containerfile",
    "Makefile": "mk mak make",
    "CMake": "cmake",
    "Objective-C": "m mm",
    "CUDA": "cu cuh",
    "Cython": "pyx pxd pxi",
    "Dart": "dart",
    "Julia": "jl",
    "Elixir": "ex exs",
    "Erlang": "erl hrl",
    "Clojure": "clj cljs cljc",
    "OCaml": "ml mli",
    "F#": "fs fsi fsx",
    "Fortran": "f for f77 f90 f95 f03 f08",
    "Zig": "zig",
    "Nim": "nim nims nimble",
    "Groovy": "groovy gvy gradle",
    "PowerShell": "ps1 psm1 psd1",
    "Batchfile": "bat cmd",
    "Assembly": "asm s nasm",
    "Protocol Buffer": "proto",
    "GraphQL": "graphql gql graphqls",
    "SCSS": "scss",
    "Less": "less",
    "Svelte": "svelte",
    "TeX": "tex sty ltx",
    "Visual Basic": "vb vbs bas",
    "Solidity": "sol",
    "Terraform": "tf tfvars",
    "Nix": "nix",
    "Vim Script": "vim",
    "Emacs Lisp": "el",
    "Scheme": "scm ss sld",
    "Racket": "rkt rktl",
    "Common Lisp": "lisp lsp asd",
    "Pascal": "pas dpr",
    "D": "d di",
    "Ada": "adb ads",
    "COBOL": "cob cbl",
    "Crystal": "cr",
    "Elm": "elm",
    "PureScript": "purs",
    "Awk": "awk",
    "Tcl": "tcl tk",
    "Verilog": "v vh sv svh",
    "VHDL": "vhd vhdl",
}

# Whole basenames (lower case) that identify a language regardless of
# extension; checked before the extension so CMakeLists.txt is not plain text.
_FILENAMES_BY_LANGUAGE: dict[str, str] = {
    "Dockerfile": "dockerfile containerfile",
    "Makefile": "makefile gnumakefile bsdmakefile",
    "CMake": "cmakelists.txt",
    "Ruby": "rakefile gemfile guardfile podfile vagrantfile brewfile",
    "Shell": (
        ".bashrc .bash_profile .bash_login .bash_logout .bash_aliases .profile"
        " .zshrc .zshenv .zprofile .zlogin .kshrc pkgbuild"
    ),
    "Python": "sconstruct sconscript",
    "TOML": "pipfile",
    "Vim Script": ".vimrc _vimrc .gvimrc",
    "Emacs Lisp": ".emacs",
}

# Files like "Dockerfile.dev" or "Makefile.linux" whose suffix is a variant
# name rather than an extension; only used when the suffix is not a known one.
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("dockerfile.", "Dockerfile"),
    ("containerfile.", "Dockerfile"),
    ("makefile.", "Makefile"),
)

LANGUAGES: tuple[str, ...] = tuple(_EXTENSIONS_BY_LANGUAGE)

_EXTENSIONS: dict[str, str] = {
    ext: lang for lang, exts in _EXTENSIONS_BY_LANGUAGE.items() for ext in exts.split()
}
_FILENAMES: dict[str, str] = {
    name: lang for lang, names in _FILENAMES_BY_LANGUAGE.items() for name in names.split()
}


def detect_language(path: str) -> str | None:
    """Canonical language of a file from its name/extension, or None when not a known language."""
    name = path[path.rfind("/") + 1 :].lower()
    lang = _FILENAMES.get(name)
    if lang is not None:
        return lang
    dot = name.rfind(".")
    # dot == 0 is a dotfile like ".py" or ".gitignore": a name, not an extension.
    if dot > 0:
        lang = _EXTENSIONS.get(name[dot + 1 :])
        if lang is not None:
            return lang
        for prefix, lang in _PREFIXES:
            if name.startswith(prefix):
                return lang
    return None


def _cell_source(cell: dict, key: str) -> str:
    source = cell.get(key, "")
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        # nbformat stores multi-line sources as lines that keep their "\n".
        return "".join(source)
    raise ValueError(f"cell {key!r} must be a string or a list of strings")


def notebook_to_text(raw: str) -> str:
    """Jupyter notebook JSON -> its code and markdown cells as text; raises ValueError on malformed notebooks."""
    try:
        nb = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid notebook JSON: {exc.msg}") from None
    except (RecursionError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid notebook JSON: {type(exc).__name__}") from None
    if not isinstance(nb, dict):
        raise ValueError("notebook must be a JSON object")

    if "cells" in nb:  # nbformat 4
        cells, code_key = nb["cells"], "source"
        if not isinstance(cells, list):
            raise ValueError("notebook 'cells' must be a list")
    elif "worksheets" in nb:  # nbformat 3: code lives in "input", not "source"
        worksheets, cells, code_key = nb["worksheets"], [], "input"
        if not isinstance(worksheets, list):
            raise ValueError("notebook 'worksheets' must be a list")
        for ws in worksheets:
            if not isinstance(ws, dict) or not isinstance(ws.get("cells", []), list):
                raise ValueError("malformed notebook worksheet")
            cells.extend(ws.get("cells", []))
    else:
        raise ValueError("not a notebook: no 'cells' or 'worksheets'")

    parts: list[str] = []
    for cell in cells:
        if not isinstance(cell, dict):
            raise ValueError("notebook cell must be an object")
        kind = cell.get("cell_type")
        if kind == "code":
            text = _cell_source(cell, code_key)
        elif kind == "markdown":
            text = _cell_source(cell, "source")
        elif kind == "heading":  # nbformat 3 only; becomes a Markdown heading
            level = cell.get("level", 1)
            level = level if isinstance(level, int) and 1 <= level <= 6 else 1
            text = _cell_source(cell, "source")
            text = "#" * level + " " + text if text.strip() else ""
        else:  # raw cells and unknown types carry no code or prose we want
            continue
        text = text.rstrip()
        if text.strip():
            parts.append(text)
    return "\n\n".join(parts) + "\n" if parts else ""
