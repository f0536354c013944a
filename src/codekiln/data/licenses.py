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
* Several licenses found for one project combine with AND (all of its code
  must be usable), unless the project itself declares a choice: an expression
  that says OR (SPDX in a manifest, R's "|", a wheel's License-Expression), a
  list in a manifest whose format defines lists as a choice (npm "licenses",
  composer), license files named after their licenses (LICENSE-MIT +
  LICENSE-APACHE), or a README that offers "either of" them.  Several license
  classifiers or a gemspec list say nothing about a choice: AND.
  ``to_expression`` on an explicit list combines with AND too.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from functools import lru_cache

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


def license_ids(expression: str | None) -> frozenset[str]:
    """The license ids a normalized SPDX expression names (exceptions left out); empty when it does not parse."""
    node = _parse_strict(expression) if isinstance(expression, str) else None
    ids: set[str] = set()
    stack = [node] if node is not None else []
    while stack:
        node = stack.pop()
        if node[0] == "ID":
            ids.add(node[1])
        elif node[0] == "WITH":
            ids.add(node[1][1])
        else:
            stack.extend(node[1])
    return frozenset(ids)


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
