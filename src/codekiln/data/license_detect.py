"""Finding a project's license: LICENSE/COPYING texts, package manifests, installed distributions.

Returns SPDX expressions built with codekiln.data.licenses (the policy decisions are listed there).
A recognized LICENSE file beats manifest metadata. Several license files combine with AND (a
project with LICENSE (MIT) and COPYING (GPL-3.0) is MIT AND GPL-3.0-only) unless the project
declares a choice: files named after their licenses (LICENSE-MIT + LICENSE-APACHE), a manifest
expression naming every license found (Cargo's "MIT OR Apache-2.0"), or a README that offers
"either of" them. Files are read up to 256 KB and never raise: unreadable or malformed means absent.
"""

from __future__ import annotations

import configparser
import json
import os
import pathlib
import re
from collections.abc import Iterable
from typing import Any

from codekiln.data.languages import detect_language
from codekiln.data.licenses import _combine, license_ids, normalize_license
from codekiln.data.uri import UriPath

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 uses the tomli backport (a dependency there)
    import tomli as tomllib  # type: ignore[no-redef]

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


def _read(path, limit: int = _READ_LIMIT) -> str | None:
    try:
        if isinstance(path, UriPath):
            data = path.read_bytes(limit)
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
    except (OSError, ValueError):
        return None
    return data.decode("utf-8-sig", errors="replace")


def _read_inside(root: pathlib.Path, relative: Any) -> str | None:
    """Read a file a manifest points at, refusing paths that leave the repository."""
    if not isinstance(relative, str) or not relative:
        return None
    if isinstance(root, UriPath):
        parts = relative.replace("\\", "/").split("/")
        if ".." in parts or relative.startswith("/"):
            return None
        return _read(root / "/".join(p for p in parts if p not in ("", ".")))
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
    # Trove classifiers cannot say "or": several of them may as well mean that
    # parts of the package are under each, so all must be allowed.
    return _combine(found, "AND", sort=True)


def _from_value(value: Any, list_op: str = "OR") -> str | None:
    """A manifest's license value: a string, a list of strings (joined with list_op), or {"type": ...}."""
    if isinstance(value, str):
        return normalize_license(value)
    if isinstance(value, dict):
        return _from_value(value.get("type"), list_op)
    if isinstance(value, list):
        return _combine((_from_value(v, list_op) for v in value), list_op, sort=True)
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
    # npm documents its legacy "licenses" list as a choice, to be written "(A OR B)" today.
    return _from_value(data.get("license")) or _from_value(data.get("licenses"))


def _composer_json(root: pathlib.Path, names: dict[str, str]) -> str | None:
    data = _load_json(root, names["composer.json"])
    # Composer documents an array of licenses as a disjunctive (OR) license.
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
        # RubyGems gives a list of licenses no meaning: all of them apply.
        found = _from_value(items, "AND")
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


def _manifest_license(root: pathlib.Path, names: dict[str, str]) -> str | None:
    """The first package manifest's license expression, in _METADATA_READERS order."""
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


_TEXT_EXTENSIONS = (".txt", ".md", ".markdown", ".rst")


def _license_family(spdx: str) -> str:
    # "GPL-3.0-only" -> "gpl", "Apache-2.0" -> "apache", "BSD-2-Clause" -> "bsd".
    return spdx.split("-", 1)[0].lower()


def _name_declares(lower: str, spdx: str) -> bool:
    """True when a license file's name says which license it holds: LICENSE-MIT, LICENSE.APACHE2."""
    prefix = next(p for p in _LICENSE_PREFIXES if lower.startswith(p))
    if prefix == "unlicense":  # UNLICENSE beside LICENSE-MIT, as in ripgrep
        return spdx == "Unlicense"
    suffix = lower[len(prefix) + 1 :]
    for ext in _TEXT_EXTENSIONS:
        suffix = suffix.removesuffix(ext)
    named = normalize_license(suffix) if suffix else None
    # The name need not be exact: LICENSE-BSD may hold the 2-clause text, LICENSE-GPL any GPL.
    return named is not None and license_ids(named) == {named} and (
        _license_family(named) == _license_family(spdx)
    )


def _version_free(ids: Iterable[str]) -> set[str]:
    # A manifest's GPL-3.0-or-later and the text's GPL-3.0-only name the same license.
    return {i.removesuffix("+").removesuffix("-only").removesuffix("-or-later") for i in ids}


def _covers(declared: str | None, found: Iterable[str]) -> bool:
    """True when a declared expression names every license in `found`, so it says how they combine."""
    declared_ids = _version_free(license_ids(declared))
    wanted = set()
    for spdx in found:
        ids = license_ids(spdx)
        if not ids:
            return False
        wanted |= _version_free(ids)
    return bool(declared_ids) and wanted <= declared_ids


_README_PREFIX = "readme"
# "Licensed under either of", "dual-licensed under", "at your option", "your choice of".
_CHOICE_PHRASE = re.compile(
    r"\beither\s+of\b|\bdual[\s-]+licen[sc]ed?\b|\bat\s+your\s+(?:option|choice)\b"
    r"|\byour\s+choice\s+of\b|\bdual[\s-]+licen[sc]ing\b",
    re.IGNORECASE,
)
_CHOICE_WINDOW = 600
_FAMILY_WORDS = {
    "gpl": ("gpl", "general public license"),
    "lgpl": ("lgpl", "lesser general public license", "library general public license"),
    "agpl": ("agpl", "affero general public license"),
    "mpl": ("mpl", "mozilla public license"),
    "bsl": ("bsl", "boost software license"),
    "psf": ("psf", "python software foundation license"),
}


def _mentions(window: str, spdx: str, file_names: Iterable[str]) -> bool:
    """True when a README passage names a license, by SPDX id, by family, or by its file's name."""
    if any(name in window for name in file_names):
        return True
    family = _license_family(spdx)
    words = (spdx.lower(), *_FAMILY_WORDS.get(family, (family,)))
    return any(re.search(r"(?<![\w-])" + re.escape(w) + r"(?![\w])", window) for w in words)


def _readme_offers_choice(root, names: dict[str, str], files: dict[str, str]) -> bool:
    """True when a top-level README offers the licenses of `files` as a choice ("either of ... at your option")."""
    found = set(files.values())
    for lower in sorted(n for n in names if n.startswith(_README_PREFIX)):
        text = _read(root / names[lower])
        if not text:
            continue
        # SPDX-License-Identifier: MIT OR Apache-2.0 in a README names the project's license.
        m = _SPDX_LINE.search(text)
        if m and _covers(normalize_license(m.group(1).strip().removesuffix("-->")), found):
            return True
        low = text.lower()
        for m in _CHOICE_PHRASE.finditer(low):
            window = low[max(0, m.start() - _CHOICE_WINDOW) : m.end() + _CHOICE_WINDOW]
            if all(
                _mentions(window, spdx, [n for n, s in files.items() if s == spdx])
                for spdx in found
            ):
                return True
    return False


def detect_repo_license(repo_dir) -> str | None:
    """SPDX expression for a repository directory from its top-level LICENSE/COPYING files or package metadata."""
    try:
        if isinstance(repo_dir, UriPath):
            root = repo_dir
            names = {p.name.lower(): p.name for p in root.iterdir() if p.is_file()}
        else:
            root = pathlib.Path(repo_dir)
            with os.scandir(root) as entries:
                names = {e.name.lower(): e.name for e in entries if _is_file(e)}
    except (OSError, TypeError, ValueError):
        return None

    files: dict[str, str] = {}  # lower-cased file name -> its license
    for lower in sorted(names):
        if _is_license_file(lower):
            text = _read(root / names[lower])
            spdx = detect_license_text(text) if text else None
            if spdx is not None:
                files[lower] = spdx
    # LGPL-3.0 is written as extra permissions on top of GPL-3.0, so such
    # projects ship both COPYING and COPYING.LESSER: that is just the LGPL.
    for lgpl in {s for s in files.values() if s.startswith("LGPL-3.0")}:
        files = {name: s for name, s in files.items() if s != lgpl[1:]}
    found = set(files.values())
    if len(found) == 1:
        return found.pop()
    if not found:
        return _manifest_license(root, names)

    # Several licenses: all of the code may need all of them (LICENSE (MIT) next
    # to COPYING (GPL-3.0) usually means parts are GPL), unless the project says
    # they are alternatives.
    named = {s for name, s in files.items() if _name_declares(name, s)}
    if found <= named:  # LICENSE-MIT + LICENSE-APACHE: the Rust ecosystem's dual license
        return _combine(found, "OR", sort=True)
    declared = _manifest_license(root, names)
    if _covers(declared, found):
        return declared
    if _readme_offers_choice(root, names, files):
        return _combine(found, "OR", sort=True)
    return _combine(found, "AND", sort=True)


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
