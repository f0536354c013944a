"""Tests for the hygiene (stage 3) and quality (stage 4) filters."""

from __future__ import annotations

import base64
import random
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_pii import FULL_KEYS, keyed_module, tunnel_module

from codekiln.data.quality import HYGIENE_REASONS, QUALITY_REASONS, check_hygiene, check_quality

# A realistic, clean Python module (~40 lines) used as the "passes" baseline.
CLEAN_PY = textwrap.dedent('''\
    """Utilities for reading configuration files.

    The loader accepts YAML and TOML and merges them in order, later files
    overriding earlier ones. Values are validated lazily.
    """

    from __future__ import annotations

    import os
    from pathlib import Path


    class ConfigError(Exception):
        """Raised when a configuration file cannot be used."""


    def find_configs(root: Path, names: tuple[str, ...] = ("app.toml", "app.yaml")) -> list[Path]:
        """Return the configuration files under root, shallowest first."""
        found = []
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                if name in names:
                    found.append(Path(dirpath) / name)
        return sorted(found, key=lambda p: len(p.parts))


    def merge(*layers: dict) -> dict:
        """Merge dictionaries recursively; later layers win."""
        out: dict = {}
        for layer in layers:
            for key, value in layer.items():
                if isinstance(value, dict) and isinstance(out.get(key), dict):
                    out[key] = merge(out[key], value)
                else:
                    out[key] = value
        return out
    ''')


def py_with_head(head: str) -> str:
    """CLEAN_PY with some lines prepended (markers live in the head)."""
    return head + CLEAN_PY


# --- check_hygiene ------------------------------------------------------------------------


def test_hygiene_clean_utf8_roundtrips_and_keeps_crlf() -> None:
    raw = "x = 'héllo'\r\nprint(x)\r\n".encode()
    assert check_hygiene(raw) == ("x = 'héllo'\r\nprint(x)\r\n", None)


def test_hygiene_nul_byte_in_head_is_binary() -> None:
    assert check_hygiene(b"abc\x00def\n") == (None, "binary")
    assert check_hygiene(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR") == (None, "binary")


def test_hygiene_many_control_characters_are_binary() -> None:
    raw = b"data " + b"\x01\x02\x03\x04\x05\x06" * 20 + b" end\n"
    assert check_hygiene(raw) == (None, "binary")


def test_hygiene_allows_tab_formfeed_vt_and_ansi_escapes() -> None:
    raw = b"\tx = 1\f\n\vy = '\x1b[31mred\x1b[0m'\n" * 10
    text, reason = check_hygiene(raw)
    assert reason is None and text == raw.decode()


def test_hygiene_one_stray_control_char_in_small_file_passes() -> None:
    text, reason = check_hygiene(b"x = 1  # \x07 bell\n")
    assert reason is None and "\x07" in text


def test_hygiene_latin1_is_encoding_error_without_fallback() -> None:
    raw = "# café crème\nx = 1\n".encode("latin-1")
    assert check_hygiene(raw) == (None, "encoding")


def test_hygiene_utf8_bom_is_stripped() -> None:
    assert check_hygiene(b"\xef\xbb\xbfimport os\n") == ("import os\n", None)


def test_hygiene_bom_only_is_empty() -> None:
    assert check_hygiene(b"\xef\xbb\xbf") == (None, "empty")
    assert check_hygiene(b"\xef\xbb\xbf  \n") == (None, "empty")


def test_hygiene_utf16_with_bom_is_decoded() -> None:
    raw = "int main() { return 0; }\r\n".encode("utf-16")  # BOM + little-endian
    assert check_hygiene(raw) == ("int main() { return 0; }\r\n", None)
    assert check_hygiene("x = 1\n".encode("utf-16-be").join([b"\xfe\xff", b""])) == ("x = 1\n", None)


def test_hygiene_broken_utf16_is_encoding() -> None:
    assert check_hygiene(b"\xff\xfex\x00y") == (None, "encoding")  # odd byte count


def test_hygiene_utf16_without_bom_is_binary() -> None:
    assert check_hygiene("x = 1\n".encode("utf-16-le")) == (None, "binary")


@pytest.mark.parametrize("raw", [b"", b" ", b"\n\n\t  \r\n"])
def test_hygiene_empty_and_whitespace_only(raw: bytes) -> None:
    assert check_hygiene(raw) == (None, "empty")


def test_hygiene_too_large_boundary() -> None:
    assert check_hygiene(b"a" * 100, max_bytes=100) == ("a" * 100, None)
    assert check_hygiene(b"a" * 101, max_bytes=100) == (None, "too_large")


def test_hygiene_too_large_is_checked_before_decoding() -> None:
    assert check_hygiene(b"\x00\xff" * 100, max_bytes=10) == (None, "too_large")


def test_hygiene_default_limit_is_one_megabyte() -> None:
    assert check_hygiene(b"x" * 1_000_000)[1] is None
    assert check_hygiene(b"x" * 1_000_001) == (None, "too_large")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_hygiene_total_on_arbitrary_bytes(raw: bytes) -> None:
    text, reason = check_hygiene(raw)
    assert (text is None) != (reason is None)
    if reason is not None:
        assert reason in HYGIENE_REASONS
    else:
        assert text.strip()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=200))
def test_hygiene_utf8_text_roundtrips(s: str) -> None:
    text, reason = check_hygiene(s.encode("utf-8"))
    if reason is None:
        assert text == s.removeprefix("\ufeff")
    else:
        assert reason == "empty" and not s.removeprefix("\ufeff").strip()


# --- check_quality: baseline and empty ---------------------------------------------------


def test_clean_python_passes() -> None:
    assert check_quality(CLEAN_PY, "Python", "pkg/config.py") is None


def test_whitespace_only_is_empty() -> None:
    assert check_quality("   \n\n", "Python") == "empty"
    assert check_quality("", None) == "empty"


def test_python_with_long_docstring_passes() -> None:
    doc = "\n".join("    " + " ".join(["lorem ipsum dolor sit amet"] * 2) for _ in range(200))
    text = f'def f():\n    """Summary.\n\n{doc}\n    """\n    return 1\n'
    assert check_quality(text, "Python", "f.py") is None


# --- autogenerated: markers, paths --------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        "# Generated by Django 4.2.7 on 2024-01-02 10:11\n",
        "// Code generated by protoc-gen-go. DO NOT EDIT.\n",
        "/* Generated by Cython 3.0.5 */\n",
        "# This file was generated by scripts/gen.py\n",
        "# -*- coding: utf-8 -*-\n# Automatically generated by tools/mkdata.py\n",
        "# DO NOT EDIT!\n",
        "// Do not edit this file by hand\n",
        "/**\n * This file is auto-generated. Do not modify.\n */\n",
        "# autogenerated file.\n",
        "// <auto-generated />\n",
        "# file generated by setuptools_scm\n",
        '"""Generated from schema.json."""\n',
        "# GENERATED BY mkfiles.sh\n",
    ],
)
def test_head_markers_are_autogenerated(head: str) -> None:
    assert check_quality(py_with_head(head), "Python", "m.py") == "autogenerated"


@pytest.mark.parametrize(
    "head",
    [
        "# Returns a generated id for each row.\n",
        "# The number generated is random.\n",
        "# Verify that samples are generated by the PMU.\n",
        "# This script combines the *.gcov files\n# generated by the 'make' commands above.\n",
        "/* do not edit or override these styles! */\n",
        "// do not edit without careful benchmarking.\n",
    ],
)
def test_prose_mentioning_generation_is_not_a_marker(head: str) -> None:
    assert check_quality(py_with_head(head), "Python", "m.py") is None


def test_marker_beyond_the_head_is_ignored() -> None:
    body = CLEAN_PY + "\n# This file was generated by nothing at all. DO NOT EDIT.\n"
    assert body.count("\n") > 20
    assert check_quality(body, "Python", "m.py") is None


def test_tool_signature_after_a_long_license_header() -> None:
    license_header = "".join(f"// License line {i}: permission is granted to use this.\n" for i in range(25))
    text = license_header + "// Code generated by mockgen. DO NOT EDIT.\npackage x\n\nfunc F() int { return 1 }\n"
    assert check_quality(text, "Go", "mock_x.go") == "autogenerated"
    protoc = license_header + "# Generated by the protocol buffer compiler.  DO NOT EDIT!\n" + CLEAN_PY
    assert check_quality(protoc, "Python", "x.py") == "autogenerated"


def test_tool_name_in_code_is_not_a_signature() -> None:
    text = "# Wrapper around swagger-codegen and thrift.\n" + CLEAN_PY
    assert check_quality(text, "Python", "x.py") is None
    # Beyond the head only signatures count, and Go's needs to open a comment line.
    text = CLEAN_PY.replace("class ConfigError", 'MARKER = "// Code generated x. DO NOT EDIT."\nclass ConfigError')
    assert text[:text.index("MARKER")].count("\n") >= 10
    assert check_quality(text, "Python", "x.py") is None
    assert check_quality(text.replace('MARKER = "// ', "// ", 1), "Python", "x.py") == "autogenerated"


@pytest.mark.parametrize(
    "path",
    [
        "web/package-lock.json", "yarn.lock", "a/pnpm-lock.yaml", "poetry.lock", "Cargo.lock",
        "Gemfile.lock", "composer.lock", "go.sum", "Pipfile.lock", "deps/mix.lock",
        "proto/search_pb2.py", "api/v1/service.pb.go", "lib/model.g.dart", "Forms\\Main.Designer.cs",
    ],
)
def test_generated_paths(path: str) -> None:
    assert check_quality(CLEAN_PY, None, path) == "autogenerated"


def test_autogenerated_flag_off() -> None:
    assert check_quality(py_with_head("# DO NOT EDIT!\n"), "Python", "poetry.lock", autogenerated=False) is None


def test_autogenerated_is_checked_before_line_lengths() -> None:
    text = "// Code generated by x. DO NOT EDIT.\n" + "var a = 1;" * 200 + "\n"
    assert check_quality(text, "JavaScript", "a.js") == "autogenerated"


# --- line lengths ---------------------------------------------------------------------------


def test_one_900_char_line_passes_max_line_length() -> None:
    text = CLEAN_PY + "ALPHABET = '" + "ab" * 444 + "'\n"
    assert max(map(len, text.splitlines())) > 890
    assert check_quality(text, "Python", "x.py") is None


def test_max_line_length_boundary() -> None:
    filler = "".join(f"value_{i} = compute(value_{i - 1})\n" for i in range(1, 200))
    ok = filler + "x = '" + "a" * 994 + "'\n"  # exactly 1000 characters
    assert check_quality(ok, "Python", "x.py") is None
    bad = filler + "x = '" + "a" * 995 + "'\n"  # 1001 characters
    assert check_quality(bad, "Python", "x.py") == "max_line_length"
    assert check_quality(bad, "Python", "x.py", max_line_length=2000) is None


def test_avg_line_length() -> None:
    line = "result = transform(" + ", ".join(f"argument_{i}" for i in range(8)) + ")"
    text = "\n".join([line] * 40) + "\n"  # ~120 chars per line
    assert 100 < len(line) < 1000
    assert check_quality(text, "Python", "x.py") == "avg_line_length"
    assert check_quality(text, "Python", "x.py", max_avg_line_length=150) is None


def test_avg_line_length_applies_to_markdown() -> None:
    para = "This paragraph is written on a single line, as many Markdown files do, " * 3
    text = "\n\n".join([para.strip()] * 10) + "\n"
    assert check_quality(text, "Markdown", "README.md") == "avg_line_length"


def test_crlf_and_cr_only_line_endings_are_lines() -> None:
    lines = [f"x_{i} = {i}" for i in range(300)]
    assert check_quality("\r\n".join(lines) + "\r\n", "Python", "x.py") is None
    assert check_quality("\r".join(lines) + "\r", "Python", "x.py") is None  # classic Mac


# --- minified -------------------------------------------------------------------------------


def test_min_js_path_is_minified_even_when_short() -> None:
    text = "function add(a, b) {\n  return a + b;\n}\n"
    assert check_quality(text, "JavaScript", "static/vendor/jquery.min.js") == "minified"
    assert check_quality(text, "CSS", "css/bootstrap.min.css") == "minified"
    assert check_quality(text, "JavaScript", "admin.js") is None
    assert check_quality(text, "JavaScript", "jquery.min.js", minified=False) is None


def test_minified_js_heuristic_between_thresholds() -> None:
    stmt = "var a=document.getElementById('app');a.addEventListener('click',function(e){e.preventDefault()});"
    line = stmt * 1 + "x=1;" * 5  # ~120 chars, no spaces
    text = "\n".join([line] * 30) + "\n"
    assert 110 < len(line) < 200
    # With BigCode defaults the generic average check fires first...
    assert check_quality(text, "JavaScript", "app.js") == "avg_line_length"
    # ...and with a relaxed average, the JS-specific minified check still catches it.
    assert check_quality(text, "JavaScript", "app.js", max_avg_line_length=500) == "minified"
    assert check_quality(text, "CSS", "app.css", max_avg_line_length=500) == "minified"
    # Not for languages outside the JS/CSS family.
    assert check_quality(text, "Python", "app.py", max_avg_line_length=500) is None


def test_minified_bundle_on_one_line() -> None:
    text = "!function(e){" + "var t=e.x||{};t.y=function(n){return n*2};" * 400 + "}(window);\n"
    assert check_quality(text, "JavaScript", "bundle.js") == "max_line_length"
    # The .min. name is proof and is checked before the line lengths.
    assert check_quality(text, "JavaScript", "dist/bundle.min.js") == "minified"
    assert check_quality(text, "JavaScript", "dist/bundle.min.js", minified=False) == "max_line_length"


def test_generated_path_wins_over_min_path() -> None:
    assert check_quality("var a=1;" * 200, "JavaScript", "x.min.js") == "minified"
    assert check_quality("// Code generated by x. DO NOT EDIT.\nvar a=1;\n", "JavaScript", "x.min.js") == "autogenerated"


# --- alnum fraction -------------------------------------------------------------------------


def test_low_alnum_fraction() -> None:
    text = "\n".join(["# " + "=-" * 30, "#" + " " * 40 + "#", "# " + "*" * 50] * 20) + "\n"
    assert check_quality(text, "Python", "banner.py") == "alnum_fraction"
    assert check_quality(text, "Python", "banner.py", min_alnum_fraction=0.0) is None


def test_alnum_fraction_counts_non_ascii_letters() -> None:
    block = "# 説明: データを読み込む関数 {i}\ndef 読み込み_{i}(パス):\n    return パス"
    text = "\n".join(block.format(i=i) for i in range(20)) + "\n"
    assert check_quality(text, "Python", "jp.py") is None
    # Non-ASCII punctuation and symbols do not count as alphanumeric.
    assert check_quality("x = 1\n" + "# ─── ★ ─── ★ ───\n" * 50, "Python", "box.py") == "alnum_fraction"


# --- data-like ------------------------------------------------------------------------------


def crc_table_file() -> str:
    rows = []
    for i in range(0, 256, 8):
        rows.append("    " + ", ".join(f"0x{(i * 2654435761 + j * 40503) & 0xFFFFFFFF:08x}" for j in range(8)) + ",")
    return "#include <stdint.h>\n\nstatic const uint32_t crc_table[256] = {\n" + "\n".join(rows) + "\n};\n\n" \
        "uint32_t crc32(const uint8_t *p, size_t n) {\n    uint32_t c = ~0u;\n" \
        "    while (n--) c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);\n    return ~c;\n}\n"


def test_byte_array_file_is_data_like() -> None:
    rnd = random.Random(1)
    rows = ["    " + ", ".join(f"0x{rnd.randrange(256):02x}" for _ in range(12)) + "," for _ in range(60)]
    text = "FIRMWARE = bytes([\n" + "\n".join(rows) + "\n])\n"
    assert check_quality(text, "Python", "firmware.py") == "autogenerated"
    assert check_quality(text, "Python", "firmware.py", data_like=False) is None


def test_lookup_table_dominated_c_file_is_data_like() -> None:
    assert check_quality(crc_table_file(), "C", "crc32.c") == "autogenerated"


def test_float_matrix_and_string_rows_are_data_like() -> None:
    rnd = random.Random(2)
    matrix = "\n".join("    [" + ", ".join(f"{rnd.uniform(-1, 1):.4f}" for _ in range(10)) + "]," for _ in range(40))
    assert check_quality("WEIGHTS = [\n" + matrix + "\n]\n", "Python", "w.py") == "autogenerated"
    words = "\n".join("    " + ", ".join(f'"w{i}{j}"' for j in range(10)) + "," for i in range(30))
    assert check_quality("const WORDS = [\n" + words + "\n];\n", "JavaScript", "words.js") == "autogenerated"


def test_base64_blob_file_is_data_like() -> None:
    blob = base64.b64encode(random.Random(3).randbytes(3000)).decode()
    lines = "\n".join(f'    "{blob[i:i + 76]}"' for i in range(0, len(blob), 76))
    text = "ICON_PNG = (\n" + lines + "\n)\n"
    assert check_quality(text, "Python", "icons.py") == "autogenerated"


def test_escaped_bytes_blob_is_data_like() -> None:
    row = '    "' + "".join(f"\\x{b:02x}" for b in range(20)) + '"'
    text = "char blob[] =\n" + "\n".join([row] * 30) + ";\n"
    assert check_quality(text, "C", "blob.c") == "autogenerated"


def test_small_lookup_table_in_real_code_passes() -> None:
    table = "\n".join("    " + ", ".join(str(i * 8 + j) for j in range(8)) + "," for i in range(6))
    text = CLEAN_PY + "\n\nSQUARES = [\n" + table + "\n]\n\n" + CLEAN_PY.replace("def ", "def other_")
    assert check_quality(text, "Python", "x.py") is None


def test_call_with_many_arguments_is_not_a_data_row() -> None:
    calls = "\n".join(f"plot(x{i}, y{i}, z{i}, a{i}, b{i}, c{i}, d{i}, e{i}, f{i})" for i in range(50))
    assert check_quality(calls + "\n", "Python", "plots.py") is None


def test_data_formats_are_exempt_from_data_like() -> None:
    rows = "\n".join("  [" + ", ".join(str(i * 10 + j) for j in range(10)) + "]," for i in range(40))
    assert check_quality("matrix: [\n" + rows + "\n]\n", "YAML", "m.yaml") is None
    assert check_quality("matrix = [\n" + rows + "\n]\n", "Python", "m.py") == "autogenerated"


# --- private keys: secrets to redact, not data -------------------------------------------------


@pytest.mark.parametrize("module", [keyed_module, tunnel_module])
@pytest.mark.parametrize("kind", sorted(FULL_KEYS))
def test_code_with_an_embedded_private_key_is_kept(kind: str, module) -> None:
    # Its 26-38 base64 rows outnumber the code lines: the data-like check used to drop the
    # file as autogenerated, so the PII stage never saw (or redacted) the key.
    assert check_quality(module(FULL_KEYS[kind]), "Python", "deploy.py") is None


def test_private_key_in_one_escaped_line_is_not_too_long() -> None:
    escaped = FULL_KEYS["rsa"].replace("\n", "\\n")
    assert len(escaped) > 1000
    text = CLEAN_PY + f'\nPEM = "{escaped}"\n'
    assert check_quality(text, "Python", "x.py") is None


@pytest.mark.parametrize("lang", ["Python", "Text", None])
def test_a_file_that_is_only_a_key_is_dropped(lang: str | None) -> None:
    for key in FULL_KEYS.values():
        assert check_quality(key, lang, "deploy_key") == "autogenerated"
        assert check_quality("\n" + key + "\n\n" + key, lang, "keys") == "autogenerated"
        assert check_quality(key, lang, "deploy_key", data_like=False) is None


def test_a_key_does_not_hide_other_data() -> None:
    # Without the key, the file is still mostly a table: still data-like.
    rows = "\n".join("  [" + ", ".join(str(i * 10 + j) for j in range(10)) + "]," for i in range(40))
    text = keyed_module(FULL_KEYS["rsa"]) + "\nMATRIX = [\n" + rows + "\n]\n"
    assert check_quality(text, "Python", "m.py") == "autogenerated"


def test_private_key_markers_without_a_block_change_nothing() -> None:
    text = CLEAN_PY + '\nBEGIN = "-----BEGIN RSA PRIVATE KEY-----"\n'
    assert check_quality(text, "Python", "pem.py") is None
    rows = "\n".join("  [" + ", ".join(str(i * 10 + j) for j in range(10)) + "]," for i in range(40))
    assert check_quality("# PRIVATE KEY rows\nm = [\n" + rows + "\n]\n", "Python", "m.py") == (
        "autogenerated")


# --- order and totality -----------------------------------------------------------------------


def test_max_line_length_before_avg_before_alnum() -> None:
    long_punct = "#" * 1500 + "\n"
    assert check_quality(long_punct, "Python", "x.py") == "max_line_length"
    avg_punct = ("#" * 150 + "\n") * 20
    assert check_quality(avg_punct, "Python", "x.py") == "avg_line_length"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.sampled_from(["Python", "JavaScript", "CSS", "YAML", None]))
def test_check_quality_is_total(text: str, lang: str | None) -> None:
    reason = check_quality(text, lang, "f.txt")
    assert reason is None or reason in QUALITY_REASONS
