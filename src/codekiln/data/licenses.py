"""SPDX license handling for the corpus license filter.

Everything here maps messy real-world license declarations (free-form names,
PyPI trove classifiers, package manifests, LICENSE file texts) onto SPDX ids
and expressions, and decides whether an expression is on an allowlist.

Policy decisions (see also the PERMISSIVE comment):

* A bare "BSD" / "BSD License" (also the PyPI "BSD License" classifier) is
  BSD-3-Clause, the most common meaning; "Simplified"/"FreeBSD" is
  BSD-2-Clause.  A bare "Apache" is Apache-2.0, a bare "MPL" is MPL-2.0.
* Unversioned GNU licenses follow the licenses' own rule that an unspecified
  version means "any version": "GPL" -> GPL-1.0-or-later, "LGPL" ->
  LGPL-2.0-or-later (the first LGPL), "AGPL" -> AGPL-3.0-or-later (the first
  FSF one).  "GPLv2" without "or later" is GPL-2.0-only.
* "Public Domain" -> "LicenseRef-Public-Domain": it is recognized so reports
  can count it, but it is not in PERMISSIVE because the claim is ambiguous
  (not a license, not valid in every jurisdiction, often made about code
  that is not the claimant's).  Callers may add it to their allowlist.
* A GNU license *text* cannot tell "only" from "or later" (that lives in the
  per-file notices), so full texts map to "-only", as GitHub's licensee does;
  a short notice that says "any later version" maps to "-or-later".
* Lists of licenses in manifests (npm "licenses", composer, gemspec, several
  license classifiers, several LICENSE files) mean a choice: they combine with
  OR.  ``to_expression`` on an explicit list combines with AND, as asked.
"""

from __future__ import annotations

import configparser
import json
import os
import pathlib
import re
from collections.abc import Collection, Iterable
from functools import lru_cache
from typing import Any

from .languages import detect_language

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 uses the tomli backport (a dependency there)
    import tomli as tomllib  # type: ignore[no-redef]

# Default allowlist.  Permissive licenses only: no copyleft (GPL family, MPL,
# EPL, CDDL, EUPL: even weak copyleft adds obligations to derived works), no
# BSD-4-Clause (advertising clause), no Apache-1.x (same kind of attribution
# clause), no Artistic (conditions on modified versions), no CC-BY* (content
# licenses, not meant for code), no "Public Domain" (see module docstring).
# Unicode-* are included because they ride along with MIT/Apache in many
# Rust crates; PSF-2.0, Python-2.0(.1) and CNRI-Python cover Python's stack.
PERMISSIVE: frozenset[str] = frozenset(
    {
        "0BSD", "Apache-2.0", "BlueOak-1.0.0", "BSD-2-Clause", "BSD-2-Clause-Patent",
        "BSD-3-Clause", "BSD-3-Clause-Clear", "BSL-1.0", "CC0-1.0", "CNRI-Python",
        "HPND", "ISC", "MIT", "MIT-0", "MIT-CMU", "NCSA", "PostgreSQL", "PSF-2.0",
        "Python-2.0", "Python-2.0.1", "Unicode-3.0", "Unicode-DFS-2016", "Unlicense",
        "UPL-1.0", "WTFPL", "X11", "Zlib",
    }
)

# Recognized (so reports can count them) but not permissive by default.
_OTHER_IDS = (
    "AFL-3.0", "AGPL-1.0-only", "AGPL-1.0-or-later", "AGPL-3.0-only", "AGPL-3.0-or-later",
    "Apache-1.0", "Apache-1.1", "Artistic-1.0", "Artistic-1.0-Perl", "Artistic-2.0",
    "Beerware", "BSD-4-Clause", "BUSL-1.1", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-NC-4.0",
    "CC-BY-NC-SA-4.0", "CC-BY-SA-4.0", "CDDL-1.0", "CDDL-1.1", "CECILL-2.1", "CPL-1.0",
    "ECL-2.0", "Elastic-2.0", "EPL-1.0", "EPL-2.0", "EUPL-1.1", "EUPL-1.2",
    "GFDL-1.3-only", "GFDL-1.3-or-later", "GPL-1.0-only", "GPL-1.0-or-later",
    "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later", "JSON",
    "LGPL-2.0-only", "LGPL-2.0-or-later", "LGPL-2.1-only", "LGPL-2.1-or-later",
    "LGPL-3.0-only", "LGPL-3.0-or-later", "LicenseRef-Public-Domain", "MPL-1.0",
    "MPL-1.1", "MPL-2.0", "MPL-2.0-no-copyleft-exception", "MS-PL", "MS-RL",
    "MulanPSL-2.0", "OFL-1.1", "OSL-3.0", "Ruby", "Sleepycat", "SSPL-1.0", "Vim",
    "ZPL-2.1",
)

# Deprecated SPDX ids still common in the wild -> their current spelling.
_DEPRECATED = {
    "GPL-1.0": "GPL-1.0-only", "GPL-1.0+": "GPL-1.0-or-later",
    "GPL-2.0": "GPL-2.0-only", "GPL-2.0+": "GPL-2.0-or-later",
    "GPL-3.0": "GPL-3.0-only", "GPL-3.0+": "GPL-3.0-or-later",
    "LGPL-2.0": "LGPL-2.0-only", "LGPL-2.0+": "LGPL-2.0-or-later",
    "LGPL-2.1": "LGPL-2.1-only", "LGPL-2.1+": "LGPL-2.1-or-later",
    "LGPL-3.0": "LGPL-3.0-only", "LGPL-3.0+": "LGPL-3.0-or-later",
    "AGPL-1.0": "AGPL-1.0-only", "AGPL-3.0": "AGPL-3.0-only",
    "GFDL-1.3": "GFDL-1.3-only",
    "BSD-2-Clause-FreeBSD": "BSD-2-Clause", "BSD-2-Clause-NetBSD": "BSD-2-Clause",
}

_EXCEPTIONS = (
    "389-exception", "Autoconf-exception-2.0", "Autoconf-exception-3.0",
    "Bison-exception-2.2", "Bootloader-exception", "Classpath-exception-2.0",
    "eCos-exception-2.0", "FLTK-exception", "Font-exception-2.0", "GCC-exception-2.0",
    "GCC-exception-3.1", "GPL-3.0-linking-exception", "LGPL-3.0-linking-exception",
    "Libtool-exception", "Linux-syscall-note", "LLVM-exception",
    "OCaml-LGPL-linking-exception", "OpenJDK-assembly-exception-1.0",
    "openvpn-openssl-exception", "Qt-GPL-exception-1.0", "Qt-LGPL-exception-1.1",
    "Swift-exception", "u-boot-exception-2.0", "Universal-FOSS-exception-1.0",
    "WxWindows-exception-3.1",
)

_IDS_BY_LOWER: dict[str, str] = {i.lower(): i for i in (*PERMISSIVE, *_OTHER_IDS)}
_IDS_BY_LOWER.update({old.lower(): new for old, new in _DEPRECATED.items()})
_EXCEPTIONS_BY_LOWER: dict[str, str] = {e.lower(): e for e in _EXCEPTIONS}

# Free-form names -> SPDX id, "|"-separated.  Names are compared as bags of
# words after _key() (case, punctuation, "License"/"Version"/"GNU" noise and
# word order are ignored; "GPL" expands to "general public" so "GPLv3" and
# "GNU General Public License v3" meet), so each entry covers many spellings.
_ALIASES: dict[str, str] = {
    "MIT": "MIT License | Expat | MIT/Expat",
    "MIT-0": "MIT No Attribution",
    "MIT-CMU": "CMU License",
    "Apache-2.0": "Apache | Apache 2 | Apache Software License | ASL 2.0",
    "Apache-1.1": "Apache 1.1",
    "Apache-1.0": "Apache 1.0",
    "BSD-3-Clause": "BSD | BSD 3-Clause | BSD 3 | New BSD | Modified BSD | Revised BSD"
    " | BSD Three Clause",
    "BSD-2-Clause": "BSD 2-Clause | BSD 2 | Simplified BSD | FreeBSD | BSD Two Clause",
    "BSD-3-Clause-Clear": "Clear BSD | BSD 3-Clause Clear",
    "BSD-4-Clause": "BSD 4-Clause | BSD 4 | Original BSD",
    "0BSD": "Zero-Clause BSD | BSD Zero Clause | BSD 0-Clause",
    "ISC": "ISC | ISCL",
    "PSF-2.0": "PSF | PSF 2.0 | PSFL | Python Software Foundation",
    "Python-2.0": "Python | Python 2.0",
    "CNRI-Python": "CNRI Python | Python License (CNRI Python License)",
    "Unlicense": "The Unlicense (Unlicense)",
    "CC0-1.0": "CC0 | CC0 1.0 | CC0 1.0 Universal | Creative Commons Zero"
    " | CC0 1.0 Universal (CC0 1.0) Public Domain Dedication",
    "Zlib": "zlib | zlib/libpng",
    "BSL-1.0": "Boost | Boost 1.0 | BSL",
    "X11": "X11 | X Consortium",
    "NCSA": "University of Illinois/NCSA Open Source License | UIUC",
    "UPL-1.0": "UPL | Universal Permissive License | UPL 1.0",
    "WTFPL": "Do What The F*ck You Want To Public License",
    "HPND": "Historical Permission Notice and Disclaimer",
    "PostgreSQL": "PostgreSQL",
    "BlueOak-1.0.0": "Blue Oak Model License | Blue Oak Model License 1.0.0",
    "LicenseRef-Public-Domain": "Public Domain",
    "MPL-2.0": "MPL | MPL 2.0",
    "MPL-1.1": "MPL 1.1",
    "MPL-1.0": "MPL 1.0",
    "EPL-1.0": "EPL 1.0",
    "EPL-2.0": "EPL 2.0",
    "CDDL-1.0": "CDDL | CDDL 1.0 | Common Development and Distribution License",
    "CDDL-1.1": "CDDL 1.1",
    "EUPL-1.1": "EUPL 1.1",
    "EUPL-1.2": "EUPL 1.2",
    "Artistic-2.0": "Artistic 2.0",
    "OSL-3.0": "OSL 3.0",
    "AFL-3.0": "AFL 3.0",
    "SSPL-1.0": "SSPL | Server Side Public License",
    "BUSL-1.1": "Business Source License 1.1",
    "CC-BY-4.0": "CC BY 4.0",
    "CC-BY-SA-4.0": "CC BY-SA 4.0",
}

# GNU family, generated: (name, versions, what the unversioned name means).
_GNU = (
    ("GPL", ("1.0", "2.0", "3.0"), "GPL-1.0-or-later"),
    ("LGPL", ("2.0", "2.1", "3.0"), "LGPL-2.0-or-later"),
    ("AGPL", ("3.0",), "AGPL-3.0-or-later"),
)

# "or" is not noise ("GPL or LGPL" is two licenses) except in "or later".
_KEY_NOISE = frozenset("the license licenses licensed version v software gnu any of".split())
_KEY_EXPAND = {
    "gpl": ("general", "public"),
    "lgpl": ("lesser", "general", "public"),
    "agpl": ("affero", "general", "public"),
    "library": ("lesser",),  # LGPL-2.0 was the "Library" GPL
    "mpl": ("mozilla", "public"),
    "epl": ("eclipse", "public"),
    "eupl": ("european", "union", "public"),
    "asl": ("apache",),
    "psf": ("python", "foundation"),
    "psfl": ("python", "foundation"),
    "iscl": ("isc",),
    "bsl": ("boost",),
    "licence": (),
}
_KEY_PUNCT = re.compile(r"[^a-z0-9.+]+")
# "gplv3" -> "gpl 3", "apache2" -> "apache 2", "v2.1" -> "2.1"
_KEY_DIGITS = re.compile(r"(?<=[a-z])v?(?=\d)|\bv(?=\d)")


def _key(text: str) -> str:
    text = text.lower().replace("licence", "license").replace("+", " later ")
    text = " " + " ".join(_KEY_DIGITS.sub(" ", _KEY_PUNCT.sub(" ", text)).split()) + " "
    text = text.replace(" or any later ", " later ").replace(" or later ", " later ")
    words: set[str] = set()
    for word in text.split():
        word = word.strip(".")
        if not word or word in _KEY_NOISE:
            continue
        if word.isdigit():  # "GPL 2" == "GPL 2.0"
            word += ".0"
        words.update(_KEY_EXPAND.get(word, (word,)))
    return " ".join(sorted(words))


def _build_alias_keys() -> dict[str, str]:
    table = {
        _key(alias): spdx for spdx, aliases in _ALIASES.items() for alias in aliases.split("|")
    }
    for name, versions, bare in _GNU:
        table[_key(name)] = table[_key(name + "+")] = bare
        for ver in versions:
            table[_key(f"{name} {ver}")] = table[_key(f"{name} {ver} only")] = f"{name}-{ver}-only"
            table[_key(f"{name} {ver}+")] = f"{name}-{ver}-or-later"
    return table


_ALIAS_KEYS = _build_alias_keys()

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
_MAX_DEPTH = 32
_MAX_RAW = 500  # longer strings are license texts, not names or expressions


def _valid_idstring(token: str) -> bool:
    body = token[:-1] if token.endswith("+") else token
    if body.startswith("DocumentRef-") and ":" in body:
        body = body.replace(":", "", 1)
    return bool(body) and all(c in _ID_CHARS for c in body)


def _canonical_id(token: str) -> str | None:
    """Canonical spelling of one SPDX license id token, or None when unknown."""
    low = token.lower()
    found = _IDS_BY_LOWER.get(low)
    if found is not None:
        return found
    if low.endswith("+"):  # SPDX "or later" suffix on a plain id
        base = _IDS_BY_LOWER.get(low[:-1])
        if base is not None:
            if base.endswith("-only"):
                return base[: -len("-only")] + "-or-later"
            return base if base.endswith("-or-later") else base + "+"
        return None
    if low.startswith("licenseref-") and _valid_idstring(token):
        return "LicenseRef-" + token[len("licenseref-") :]
    if low.startswith("documentref-") and ":licenseref-" in low and _valid_idstring(token):
        return token
    return None


def _lookup_single(text: str) -> str | None:
    """One license name (SPDX id or free-form alias) -> SPDX id."""
    text = text.strip()
    if not text:
        return None
    if " " not in text:
        found = _canonical_id(text)
        if found is not None:
            return found
    return _ALIAS_KEYS.get(_key(text))


# --- SPDX expressions ------------------------------------------------------
# Nodes: ("ID", id) | ("WITH", ("ID", id), exception) | ("AND"|"OR", children)

_OPERATORS = {"and": "AND", "or": "OR", "with": "WITH"}
_PARENS = frozenset("()")


class _ParseError(ValueError):
    pass


def _parse(text: str, leaf, exception) -> tuple:
    """Recursive-descent parse of an SPDX expression; `leaf` maps a run of words to an id."""
    tokens = text.replace("(", " ( ").replace(")", " ) ").split()
    pos = 0

    def op_at(i: int) -> str | None:
        return _OPERATORS.get(tokens[i].lower()) if i < len(tokens) else None

    def parse_or(depth: int) -> tuple:
        nonlocal pos
        if depth > _MAX_DEPTH:
            raise _ParseError("expression nested too deeply")
        nodes = [parse_and(depth)]
        while op_at(pos) == "OR":
            pos += 1
            nodes.append(parse_and(depth))
        return nodes[0] if len(nodes) == 1 else ("OR", tuple(nodes))

    def parse_and(depth: int) -> tuple:
        nonlocal pos
        nodes = [parse_with(depth)]
        while op_at(pos) == "AND":
            pos += 1
            nodes.append(parse_with(depth))
        return nodes[0] if len(nodes) == 1 else ("AND", tuple(nodes))

    def parse_with(depth: int) -> tuple:
        nonlocal pos
        node = parse_primary(depth)
        if op_at(pos) == "WITH":
            # SPDX only allows "simple-id WITH exception", never "(a OR b) WITH x".
            if node[0] != "ID" or pos + 1 >= len(tokens):
                raise _ParseError("bad WITH")
            exc = exception(tokens[pos + 1])
            if exc is None or op_at(pos + 1) or tokens[pos + 1] in _PARENS:
                raise _ParseError("bad exception id")
            pos += 2
            node = ("WITH", node, exc)
        return node

    def parse_primary(depth: int) -> tuple:
        nonlocal pos
        if pos >= len(tokens):
            raise _ParseError("unexpected end")
        if tokens[pos] == "(":
            pos += 1
            node = parse_or(depth + 1)
            if pos >= len(tokens) or tokens[pos] != ")":
                raise _ParseError("missing ')'")
            pos += 1
            return node
        start = pos
        while pos < len(tokens) and tokens[pos] not in _PARENS and op_at(pos) is None:
            pos += 1
        found = leaf(tokens[start:pos]) if pos > start else None
        if found is None:
            raise _ParseError("bad license id")
        return ("ID", found)

    node = parse_or(0)
    if pos != len(tokens):
        raise _ParseError("trailing tokens")
    return _flatten(node)


def _flatten(node: tuple) -> tuple:
    """Merge nested same-operator nodes and drop duplicate operands."""
    if node[0] not in ("AND", "OR"):
        return node
    children: list[tuple] = []
    for child in map(_flatten, node[1]):
        for c in child[1] if child[0] == node[0] else (child,):
            if c not in children:
                children.append(c)
    return children[0] if len(children) == 1 else (node[0], tuple(children))


def _render(node: tuple, parent: str | None = None) -> str:
    kind = node[0]
    if kind == "ID":
        return node[1]
    if kind == "WITH":
        return f"{node[1][1]} WITH {node[2]}"
    text = f" {kind} ".join(_render(child, kind) for child in node[1])
    # Parenthesize every nested compound, even where precedence makes it
    # optional: "A OR (B AND C)" is what humans expect to read.
    return f"({text})" if parent is not None else text


def _leaf_lenient(words: list[str]) -> str | None:
    return _lookup_single(" ".join(words))


def _leaf_strict(words: list[str]) -> str | None:
    return words[0] if len(words) == 1 and _valid_idstring(words[0]) else None


def _exception_lenient(token: str) -> str | None:
    found = _EXCEPTIONS_BY_LOWER.get(token.lower())
    # Unknown exceptions are kept: only the base license decides allowedness.
    return found if found is not None or not _valid_idstring(token) else token


@lru_cache(maxsize=8192)
def _parse_strict(expression: str) -> tuple | None:
    try:
        return _parse(expression, _leaf_strict, lambda t: t if _valid_idstring(t) else None)
    except _ParseError:
        return None


def _parse_lenient(text: str) -> str | None:
    try:
        return _render(_parse(text, _leaf_lenient, _exception_lenient))
    except _ParseError:
        return None


def _combine(expressions: Iterable[str | None], op: str, sort: bool) -> str | None:
    """Join normalized expressions with AND/OR into one normalized expression."""
    unique: list[str] = []
    for expr in expressions:
        if expr and expr not in unique:
            unique.append(expr)
    if sort:
        unique.sort(key=str.lower)
    if len(unique) <= 1:
        return unique[0] if unique else None
    return _parse_lenient(f" {op} ".join(f"({e})" for e in unique))


# --- public API ------------------------------------------------------------


@lru_cache(maxsize=8192)
def _normalize(raw: str) -> str | None:
    text = raw.strip()
    if not text or len(text) > _MAX_RAW or text.count("(") != text.count(")"):
        return None
    if text[:10].lower() == "license ::":  # trove classifier: the last part names it
        text = text.rsplit("::", 1)[-1].strip()
    found = _lookup_single(text) or _parse_lenient(text)
    if found is not None:
        return found
    if "(" in text:
        # "Mozilla Public License 1.0 (MPL)", "Zero-Clause BSD (0BSD)": try the
        # name outside the parentheses first (more specific), then inside.
        outside = re.sub(r"\([^()]*\)", " ", text)
        for candidate in (outside, *re.findall(r"\(([^()]*)\)", text)):
            found = _lookup_single(candidate)
            if found is not None:
                return found
    if "/" in text:  # legacy Cargo/npm "MIT/Apache-2.0" meant a choice
        parts = [_lookup_single(p) for p in text.split("/")]
        if all(parts):
            return _combine(parts, "OR", sort=False)
    return None


def normalize_license(raw: str | None) -> str | None:
    """Free-form license name/id/trove classifier -> SPDX id, or None when unknown."""
    return _normalize(raw) if isinstance(raw, str) else None


def to_expression(licenses: str | Iterable[str] | None) -> str | None:
    """A license string, or a list of license strings -> one SPDX expression ('A AND B' for lists); None when empty/unknown."""
    if licenses is None:
        return None
    if isinstance(licenses, str):
        return normalize_license(licenses)
    try:
        items = list(licenses)
    except TypeError:
        return None
    normalized = [normalize_license(item) for item in items]
    # An unknown member of an AND could be anything: the whole is unknown.
    if not normalized or any(n is None for n in normalized):
        return None
    return _combine(normalized, "AND", sort=False)


def _fold(allowlist: Collection[str]) -> frozenset[str]:
    """Allowlist in canonical spelling, so a config saying "mit" or "GPL-3.0+" still matches."""
    return frozenset(_canonical_id(a) or a for a in allowlist if isinstance(a, str))


_fold_cached = lru_cache(maxsize=32)(_fold)  # for frozensets like PERMISSIVE: hashable


def _id_allowed(token: str, allowed: frozenset[str]) -> bool:
    canon = _canonical_id(token) or token
    # "Apache-2.0+" lets the user pick Apache-2.0 itself.
    return canon in allowed or (canon.endswith("+") and canon[:-1] in allowed)


def _node_allowed(node: tuple, allowed: frozenset[str]) -> bool:
    kind = node[0]
    if kind == "ID":
        return _id_allowed(node[1], allowed)
    if kind == "WITH":  # exceptions only ever grant extra permissions
        return _id_allowed(node[1][1], allowed)
    check = all if kind == "AND" else any
    return check(_node_allowed(child, allowed) for child in node[1])


def license_allowed(expression: str | None, allowlist: Collection[str] = PERMISSIVE) -> bool:
    """True when an SPDX expression is allowed: AND needs every id allowed, OR needs any; None/unknown -> False."""
    if not isinstance(expression, str) or not expression.strip():
        return False
    node = _parse_strict(expression)
    if node is None:
        return False
    allowed = _fold_cached(allowlist) if isinstance(allowlist, frozenset) else _fold(allowlist)
    return _node_allowed(node, allowed)


# Quotes, Markdown emphasis/headers and underscores vary between copies of
# the same license text; whitespace and case always do.
_TEXT_DROP = str.maketrans("", "", "\"'`\u201c\u201d\u2018\u2019*#>_")


def _norm_text(text: str) -> str:
    return " ".join(text.lower().translate(_TEXT_DROP).split())


_SPDX_LINE = re.compile(r"SPDX-License-Identifier:[ \t]*([^\r\n]*)", re.IGNORECASE)
_GNU_TITLES = (
    ("gnu affero general public license", "AGPL"),
    ("gnu lesser general public license", "LGPL"),
    ("gnu library general public license", "LGPL"),
    ("gnu general public license", "GPL"),
)
_GNU_VERSIONS = {
    "AGPL": {"3": "3.0"},
    "LGPL": {"2": "2.0", "2.1": "2.1", "3": "3.0"},
    "GPL": {"1": "1.0", "2": "2.0", "3": "3.0"},
}
_GNU_VERSION_RE = re.compile(r"^\W*(?:version|v)\W*(\d(?:\.\d)?)")
_GNU_NOTICE_VERSION_RE = re.compile(r"version (\d(?:\.\d)?) of the license")
# Dates on the title lines, for texts whose title and version got separated.
_GNU_DATES = (
    ("version 3, 29 june 2007", "3"),
    ("version 2.1, february 1999", "2.1"),
    ("version 2, june 1991", "2"),
)


def _gnu_rule(t: str) -> tuple[int, str] | None:
    hits = [(t.find(title), title, family) for title, family in _GNU_TITLES]
    hits = [h for h in hits if h[0] >= 0]
    if not hits:
        return None
    # The earliest title is this file's license: GPL-3.0 mentions the LGPL at
    # its end, the LGPL texts mention the GPL, and so on.
    pos, title, family = min(hits)
    m = _GNU_VERSION_RE.match(t[pos + len(title) : pos + len(title) + 40])
    if m is None:  # a notice: "... either version 2 of the License, or ..."
        m = _GNU_NOTICE_VERSION_RE.search(t)
    version = m.group(1) if m else next((v for date, v in _GNU_DATES if date in t), "")
    spdx_version = _GNU_VERSIONS[family].get(version.removesuffix(".0"))
    if spdx_version is None:
        return None
    notice_only = "terms and conditions" not in t
    suffix = "-or-later" if notice_only and "any later version" in t else "-only"
    return pos, f"{family}-{spdx_version}{suffix}"


def _versioned_rule(anchor: str, versions: dict[str, str]):
    def rule(t: str) -> tuple[int, str] | None:
        pos = t.find(anchor)
        if pos < 0:
            return None
        head = t[pos + len(anchor) : pos + len(anchor) + 30]
        for version, spdx in versions.items():
            if version in head:
                return pos, spdx
        return None

    return rule


def _phrase_rule(anchor: str, decide):
    """Rule that fires at `anchor` and lets `decide(window)` pick the id (or None)."""
    anchor = _norm_text(anchor)

    def rule(t: str) -> tuple[int, str] | None:
        pos = t.find(anchor)
        if pos < 0:
            return None
        # The window ends where a second copy (e.g. a vendored one) begins, so
        # its clauses cannot leak into this one's classification.
        end = t.find(anchor, pos + len(anchor))
        spdx = decide(t[pos : min(pos + 3000, end) if end >= 0 else pos + 3000])
        return (pos, spdx) if spdx else None

    return rule


def _has(*phrases: str):
    normalized = [_norm_text(p) for p in phrases]
    return lambda window: all(p in window for p in normalized)


_MIT_AS_IS = _has('THE SOFTWARE IS PROVIDED "AS IS"')
_MIT_NOTICE = _has("The above copyright notice and this permission notice shall be included")
_X11_CLAUSE = _has("Except as contained in this notice, the name of")
_ISC_NOTICE = _has(
    "provided that the above copyright notice and this permission notice appear in all copies"
)
_BSD_ADVERTISING = _has("All advertising materials mentioning features or use of this software")
_BSD_CLEAR = _has("NO EXPRESS OR IMPLIED LICENSES TO ANY PARTY'S PATENT RIGHTS ARE GRANTED")
_BSD_ENDORSE = _has("endorse or promote products derived from this software")


def _mit(window: str) -> str | None:
    if not _MIT_AS_IS(window):
        return None
    if _X11_CLAUSE(window):
        return "X11"
    return "MIT" if _MIT_NOTICE(window) else "MIT-0"


def _isc(window: str) -> str | None:
    if not _MIT_AS_IS(window):
        return None
    return "ISC" if _ISC_NOTICE(window) else "0BSD"


def _bsd(window: str) -> str:
    if _BSD_ADVERTISING(window):
        return "BSD-4-Clause"
    if _BSD_CLEAR(window):
        return "BSD-3-Clause-Clear"
    return "BSD-3-Clause" if _BSD_ENDORSE(window) else "BSD-2-Clause"


def _python_rule(t: str) -> tuple[int, str] | None:
    hits = [p for p in (t.find(a) for a in _PSF_ANCHORS) if p >= 0]
    if not hits:
        return None
    # Python's own LICENSE stacks PSF, BeOpen and CNRI terms (its history
    # section names them before the PSF part): that whole stack is Python-2.0.
    return min(hits), "Python-2.0" if "beopen" in t and "cnri" in t else "PSF-2.0"


_PSF_ANCHORS = (
    "python software foundation license",
    "this license agreement is between the python software foundation",
)


def _const(spdx: str):
    return lambda window: spdx


def _both(check, spdx: str):
    return lambda window: spdx if check(window) else None


# Order only breaks ties between rules anchored at the same position (Boost
# and MIT both start "Permission is hereby granted, free of charge").
_TEXT_RULES = (
    _gnu_rule,
    _versioned_rule(
        "mozilla public license", {"2.0": "MPL-2.0", "1.1": "MPL-1.1", "1.0": "MPL-1.0"}
    ),
    _versioned_rule("eclipse public license", {"2.0": "EPL-2.0", "1.0": "EPL-1.0"}),
    _versioned_rule("apache license", {"2.0": "Apache-2.0"}),
    _versioned_rule("apache software license", {"2.0": "Apache-2.0", "1.1": "Apache-1.1"}),
    _phrase_rule("Boost Software License", _const("BSL-1.0")),
    _phrase_rule(
        "Permission is hereby granted, free of charge, to any person or organization"
        " obtaining a copy of the software and accompanying documentation",
        _const("BSL-1.0"),
    ),
    _phrase_rule(
        "Permission is hereby granted, free of charge, to any person obtaining a copy", _mit
    ),
    _phrase_rule(
        "distribute this software for any purpose with or without fee is hereby granted", _isc
    ),
    _phrase_rule(
        "Redistribution and use in source and binary forms, with or without modification,"
        " are permitted provided that",
        _bsd,
    ),
    _phrase_rule(
        "The origin of this software must not be misrepresented",
        _both(_has("Altered source versions must be plainly marked as such"), "Zlib"),
    ),
    _phrase_rule(
        "This is free and unencumbered software released into the public domain",
        _const("Unlicense"),
    ),
    _phrase_rule("CC0 1.0 Universal", _const("CC0-1.0")),
    _phrase_rule(  # the short CC0 dedication notice
        "dedicated all copyright and related and neighboring rights to this software to the"
        " public domain worldwide",
        _both(_has("creativecommons.org/publicdomain/zero/1.0"), "CC0-1.0"),
    ),
    _phrase_rule("DO WHAT THE FUCK YOU WANT TO PUBLIC LICENSE", _const("WTFPL")),
    _python_rule,
    _phrase_rule("The Universal Permissive License (UPL), Version 1.0", _const("UPL-1.0")),
    _phrase_rule("University of Illinois/NCSA Open Source License", _const("NCSA")),
    _phrase_rule("Blue Oak Model License", _const("BlueOak-1.0.0")),
)


def detect_license_text(text: str) -> str | None:
    """SPDX id of a LICENSE/COPYING file's text, or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    # Only a header tag names the file's own license; tags further down
    # belong to bundled third-party notices.
    m = _SPDX_LINE.search(text, 0, 2000)
    if m:
        found = normalize_license(m.group(1).strip().removesuffix("*/").removesuffix("-->"))
        if found is not None:
            return found
    t = _norm_text(text)
    best: tuple[int, int, str] | None = None
    for index, rule in enumerate(_TEXT_RULES):
        hit = rule(t)
        if hit is not None and (best is None or (hit[0], index) < best[:2]):
            best = (hit[0], index, hit[1])
    if best is not None:
        return best[2]
    # A LICENSE file that just says "MIT" or "Apache-2.0".
    stripped = text.strip()
    return normalize_license(stripped) if len(stripped) <= 120 else None


# --- repositories ----------------------------------------------------------

_READ_LIMIT = 256 * 1024
_LICENSE_PREFIXES = ("license", "licence", "copying", "unlicense")
# Files that describe bundled/third-party code rather than the project itself.
_NOT_PROJECT_LICENSE = ("third", "3rd", "vendor", "notice", "header", "dependencies", "exception")
_NON_TEXT_EXTENSIONS = frozenset("json xml pdf png jpg jpeg gif svg html htm csv".split())


def _read(path: pathlib.Path | str, limit: int = _READ_LIMIT) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except (OSError, ValueError):
        return None
    return data.decode("utf-8-sig", errors="replace")


def _read_inside(root: pathlib.Path, relative: Any) -> str | None:
    """Read a file a manifest points at, refusing paths that leave the repository."""
    if not isinstance(relative, str) or not relative:
        return None
    try:
        base = root.resolve()
        path = (base / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return _read(path) if path.is_relative_to(base) else None


def _is_license_file(lower: str) -> bool:
    prefix = next((p for p in _LICENSE_PREFIXES if lower.startswith(p)), None)
    if prefix is None:
        return False
    rest = lower[len(prefix) :]
    if rest and rest[0] not in ".-_":  # "licenses", "licensed.txt"
        return False
    if any(marker in rest for marker in _NOT_PROJECT_LICENSE):
        return False
    ext = rest.rpartition(".")[2] if "." in rest else ""
    if ext in _NON_TEXT_EXTENSIONS:
        return False
    return detect_language(lower) in (None, "Markdown", "reStructuredText")


def _from_classifiers(classifiers: Iterable[Any]) -> str | None:
    found = [
        normalize_license(c)
        for c in classifiers
        if isinstance(c, str) and c.strip().lower().startswith("license ::")
    ]
    return _combine(found, "OR", sort=True)


def _from_value(value: Any) -> str | None:
    """A manifest's license value: a string, a list of strings (a choice), or {"type": ...}."""
    if isinstance(value, str):
        return normalize_license(value)
    if isinstance(value, dict):
        return _from_value(value.get("type"))
    if isinstance(value, list):
        return _combine((_from_value(v) for v in value), "OR", sort=True)
    return None


def _load_json(root: pathlib.Path, name: str) -> dict | None:
    text = _read(root / name)
    try:
        data = json.loads(text) if text else None
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _load_toml(root: pathlib.Path, name: str) -> dict | None:
    text = _read(root / name)
    if text is None or tomllib is None:
        return None
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError):
        return None


def _table(data: Any, *keys: str) -> dict:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def _package_json(root: pathlib.Path, names: dict[str, str]) -> str | None:
    data = _load_json(root, names["package.json"])
    if data is None:
        return None
    return _from_value(data.get("license")) or _from_value(data.get("licenses"))


def _composer_json(root: pathlib.Path, names: dict[str, str]) -> str | None:
    data = _load_json(root, names["composer.json"])
    return _from_value(data.get("license")) if data else None


def _text_or_name(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return normalize_license(value) or detect_license_text(value)


def _pyproject(root: pathlib.Path, names: dict[str, str]) -> str | None:
    data = _load_toml(root, names["pyproject.toml"])
    if data is None:
        return None
    project = _table(data, "project")
    lic = project.get("license")
    found = None
    if isinstance(lic, str):  # PEP 639: an SPDX expression
        found = normalize_license(lic)
    elif isinstance(lic, dict):  # PEP 621: {text = "..."} or {file = "LICENSE"}
        found = _text_or_name(lic.get("text"))
        if found is None and "file" in lic:
            text = _read_inside(root, lic["file"])
            found = detect_license_text(text) if text else None
    classifiers = project.get("classifiers")
    if found is None and isinstance(classifiers, list):
        found = _from_classifiers(classifiers)
    return found or _from_value(_table(data, "tool", "poetry").get("license"))


def _setup_cfg(root: pathlib.Path, names: dict[str, str]) -> str | None:
    text = _read(root / names["setup.cfg"])
    if text is None:
        return None
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read_string(text)
        license_value = parser.get("metadata", "license", fallback=None)
        classifiers = parser.get("metadata", "classifiers", fallback="")
    except (configparser.Error, ValueError):
        return None
    return _text_or_name(license_value) or _from_classifiers(classifiers.splitlines())


_SETUP_PY_LICENSE = re.compile(r"""\blicense\s*=\s*["']([^"'\n]{1,200})["']""")


def _setup_py(root: pathlib.Path, names: dict[str, str]) -> str | None:
    text = _read(root / names["setup.py"])
    m = _SETUP_PY_LICENSE.search(text) if text else None
    return normalize_license(m.group(1)) if m else None


def _cargo_toml(root: pathlib.Path, names: dict[str, str]) -> str | None:
    data = _load_toml(root, names["cargo.toml"])
    if data is None:
        return None
    # A workspace root declares shared metadata in [workspace.package], and
    # members point at it with `license.workspace = true`.
    for package in (_table(data, "package"), _table(data, "workspace", "package")):
        found = _from_value(package.get("license"))
        if found is None and "license-file" in package:
            text = _read_inside(root, package["license-file"])
            found = detect_license_text(text) if text else None
        if found is not None:
            return found
    return None


# s.license = "MIT" | spec.licenses = ["MIT", 'Ruby'] | spec.licenses = %w[MIT Ruby]
_GEMSPEC_LICENSE = re.compile(
    r"""\.licen[sc]es?\s*=\s*(\[[^\]]*\]|%w[\[(][^\])]*[\])]|["'][^"'\n]*["'])"""
)


def _gemspec(root: pathlib.Path, names: dict[str, str]) -> str | None:
    for lower in sorted(names):
        if not lower.endswith(".gemspec"):
            continue
        text = _read(root / names[lower])
        m = _GEMSPEC_LICENSE.search(text) if text else None
        if m is None:
            continue
        value = m.group(1)
        if value.startswith("%w"):
            items = value[3:-1].split()
        else:
            items = re.findall(r"""["']([^"'\n]+)["']""", value)
        found = _from_value(items)
        if found is not None:
            return found
    return None


_R_VERSION = re.compile(r"(.*?)\s*\(\s*(>=|==)?\s*([\d.]+)\s*\)\s*")
_R_FILE = re.compile(r"\+?\s*file\s+LICEN[CS]E\b", re.IGNORECASE)


def _r_license(value: str) -> str | None:
    """An R DESCRIPTION License field: "MIT + file LICENSE", "GPL (>= 2) | MIT"."""
    choices = []
    for part in value.split("|"):
        part = _R_FILE.sub("", part).strip()
        m = _R_VERSION.fullmatch(part)
        if m:
            name, op, version = m.groups()
            part = f"{name} {version} or later" if op == ">=" else f"{name} {version}"
        choices.append(normalize_license(part) if part else None)
    return _combine(choices, "OR", sort=True)


def _description(root: pathlib.Path, names: dict[str, str]) -> str | None:
    text = _read(root / names["description"])
    if text is None:
        return None
    value, collecting = [], False
    for line in text.splitlines():
        if collecting and line[:1] in (" ", "\t"):  # DCF continuation line
            value.append(line.strip())
            continue
        if collecting:
            break
        if line.lower().startswith("license:"):
            value.append(line[len("license:") :].strip())
            collecting = True
    return _r_license(" ".join(value)) if value else None


# (lower-cased file name that must exist, reader), in order of preference.
_METADATA_READERS = (
    ("package.json", _package_json),
    ("pyproject.toml", _pyproject),
    ("setup.cfg", _setup_cfg),
    ("setup.py", _setup_py),
    ("cargo.toml", _cargo_toml),
    ("composer.json", _composer_json),
    (".gemspec", _gemspec),
    ("description", _description),
)


def detect_repo_license(repo_dir: pathlib.Path) -> str | None:
    """SPDX expression for a repository directory from its top-level LICENSE/COPYING files or package metadata."""
    try:
        root = pathlib.Path(repo_dir)
        with os.scandir(root) as entries:
            names = {e.name.lower(): e.name for e in entries if _is_file(e)}
    except (OSError, TypeError, ValueError):
        return None

    found: set[str] = set()
    for lower in sorted(names):
        if _is_license_file(lower):
            text = _read(root / names[lower])
            spdx = detect_license_text(text) if text else None
            if spdx is not None:
                found.add(spdx)
    # LGPL-3.0 is written as extra permissions on top of GPL-3.0, so such
    # projects ship both COPYING and COPYING.LESSER: that is just the LGPL.
    for spdx in [s for s in found if s.startswith("LGPL-3.0")]:
        found.discard(spdx[1:])
    if found:
        # Several license files (LICENSE-MIT + LICENSE-APACHE) offer a choice.
        return _combine(found, "OR", sort=True)

    for trigger, reader in _METADATA_READERS:
        if trigger.startswith("."):  # a suffix, for "<name>.gemspec"
            present = any(n.endswith(trigger) for n in names)
        else:
            present = trigger in names
        if present:
            spdx = reader(root, names)
            if spdx is not None:
                return spdx
    return None


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


# --- installed distributions -----------------------------------------------


def distribution_license(metadata: Any) -> str | None:
    """SPDX expression for an installed distribution from its importlib.metadata (License-Expression, License, classifiers)."""
    get = getattr(metadata, "get", None)
    if get is None:
        return None
    expression = get("License-Expression")
    if isinstance(expression, str):
        found = normalize_license(expression)
        if found is not None:
            return found
    license_field = get("License")
    if isinstance(license_field, str) and license_field.strip():
        value = license_field.strip()
        # Many packages paste the whole license text into this field.
        found = normalize_license(value) if "\n" not in value else None
        if found is None:
            found = detect_license_text(value)
        if found is not None:
            return found
    get_all = getattr(metadata, "get_all", None)
    classifiers = get_all("Classifier") if get_all is not None else get("Classifier")
    if isinstance(classifiers, str):
        classifiers = [classifiers]
    return _from_classifiers(classifiers or [])
