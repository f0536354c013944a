"""Post-processing rules on concrete completions: stops, end tokens, indentation scope, single line, whitespace."""

import pytest

from codekiln.infer import postprocess as pp

HUMANEVAL_PROMPT = 'def add(a, b):\n    """Add two numbers."""\n'


def test_humaneval_stops_at_the_first_bigcode_stop_sequence():
    text = "    return a + b\n\n\ndef main():\n    print(add(1, 2))\n"
    assert pp.for_humaneval(text) == "    return a + b\n\n"
    assert pp.for_humaneval("    return a + b\nif __name__ == '__main__':\n    main()") == "    return a + b"
    assert pp.for_humaneval("    x = 1  # one\n    return x\n# done") == "    x = 1  # one\n    return x"
    assert pp.for_humaneval("    return 1<|endoftext|>\ndef junk") == "    return 1"
    assert pp.HUMANEVAL_STOP == ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")


def test_find_stop_takes_the_earliest():
    assert pp.find_stop("abc\nprint(1)\ndef", ["\ndef", "\nprint"]) == 3
    assert pp.find_stop("abc", ["x", ""]) is None
    assert pp.cut_at_stop("a = 1\nb = 2", ["\nb"]) == "a = 1"


def test_end_tokens_cut():
    assert pp.cut_at_end_token("x = 1\n<|file_sep|>other.py") == "x = 1\n"
    assert pp.cut_at_end_token("y<|fim_middle|>z") == "y"
    assert pp.cut_at_end_token("plain") == "plain"


def test_trailing_whitespace_is_trimmed():
    assert pp.trim_trailing_whitespace("x = 1   \n    y = 2\t\n\n   \n") == "x = 1\n    y = 2"
    assert pp.trim_trailing_whitespace("    return x") == "    return x"  # leading indentation stays


@pytest.mark.parametrize("prefix, indent", [
    ("def f():\n    x = ", 4),             # cursor inside a line: that line's block
    ("def f():\n    ", 4),                 # cursor on an indented blank line
    (HUMANEVAL_PROMPT, 4),                 # column 0 after the docstring: the docstring's block
    ("def f():\n", 1),                     # column 0 after an opener: anything deeper than the opener
    ("class A:\n    def f(self):\n", 5),
    ("x = 1\n", 0),
    ("", 0),
    ("if x:\n\tpass\n\t", 4),              # a tab is 4 columns
])
def test_block_indent(prefix, indent):
    assert pp.block_indent(prefix) == indent


def test_dedent_ends_a_humaneval_body():
    text = "    total = 0\n\n    for x in xs:\n        total += x\n    return total\n\ndef other():\n    pass\n"
    assert pp.cut_at_dedent(text, HUMANEVAL_PROMPT) == \
        "    total = 0\n\n    for x in xs:\n        total += x\n    return total\n\n"


def test_dedent_at_the_cursor_line():
    # The cursor is on "    " in a method: the next method stays, the next class does not.
    prefix = "class A:\n    def f(self):\n        return 1\n\n    "
    text = "def g(self):\n        return 2\n\nclass B:\n    pass"
    assert pp.cut_at_dedent(text, prefix) == "def g(self):\n        return 2\n\n"


def test_dedent_never_cuts_a_continued_line():
    # Mid-line, the first line continues the cursor's line whatever its own indentation.
    prefix = "def f():\n    value = compute("
    text = "a,\n        b)\n    return value\nprint(f())"
    assert pp.cut_at_dedent(text, prefix) == "a,\n        b)\n    return value\n"


def test_dedent_can_leave_nothing():
    assert pp.cut_at_dedent("def other():\n    pass", HUMANEVAL_PROMPT) == ""


def test_single_line():
    assert pp.single_line("a + b\n    return c") == "a + b"
    assert pp.single_line("\n    return c\nx") == "\n    return c"  # leading newlines belong to the line
    assert pp.single_line("no newline") == "no newline"


def test_cut_at_suffix_drops_a_repeated_suffix():
    suffix = "\n    return total\n"
    text = "total = sum(xs)\n    return total\n"
    assert pp.cut_at_suffix(text, suffix) == "total = sum(xs)\n"
    assert pp.cut_at_suffix(text, "") == text


def test_for_editor_applies_the_rules_in_order():
    prefix = "def mean(xs):\n    "
    text = "total = sum(xs)   \n    return total / len(xs)\n\n\ndef median(xs):\n    pass<|endoftext|>"
    assert pp.for_editor(text, prefix) == "total = sum(xs)\n    return total / len(xs)"
    assert pp.for_editor(text, prefix, single=True) == "total = sum(xs)"
    assert pp.for_editor(text, prefix, suffix="\n    return total / len(xs)\n") == "total = sum(xs)"


# --- languages and stop words -------------------------------------------------------------------------

@pytest.mark.parametrize("given, lang", [
    ("python", "Python"), ("javascript", "JavaScript"), ("javascriptreact", "JSX"), ("typescript", "TypeScript"),
    ("typescriptreact", "TSX"), ("cpp", "C++"), ("c", "C"), ("csharp", "C#"), ("shellscript", "Shell"),
    ("go", "Go"), ("rust", "Rust"), ("java", "Java"), ("kotlin", "Kotlin"), ("objective-c", "Objective-C"),
    ("cuda-cpp", "CUDA"), ("sh", "Shell"), ("powershell", "PowerShell"),
    ("Python", "Python"), ("PYTHON", "Python"), ("c++", "C++"), ("C#", "C#"), ("Objective-C", "Objective-C"),
    (" TypeScript ", "TypeScript"),
    ("src/app.py", "Python"), ("app.py", "Python"), ("/abs/dir.v2/Main.JAVA", "Java"), ("lib.rs", "Rust"),
    ("src\\win\\main.cpp", "C++"), ("include/x.h", "C"), ("ui/App.tsx", "TSX"), ("Gemfile", "Ruby"),
    ("home/.bashrc", "Shell"), ("kernel.cu", "CUDA"), ("script.ps1", "PowerShell"),
    (None, None), ("", None), ("   ", None), ("markdown", None), ("README.md", None), ("brainfuck", None),
    ("src/noext", None), (".py", None), ("archive.tar.gz", None),
])
def test_editor_language(given, lang):
    assert pp.editor_language(given) == lang


def test_editor_language_agrees_with_corpus_detection():
    from codekiln.data.languages import LANGUAGES, detect_language

    assert set(pp.STOP_WORDS) <= set(LANGUAGES)
    for ext in pp._EXTENSIONS:
        assert pp.editor_language(f"dir/file.{ext}") == detect_language(f"dir/file.{ext}"), ext
    for name in pp._FILENAMES:
        assert pp.editor_language(f"dir/{name}") == detect_language(f"dir/{name}"), name
    for lang in pp.STOP_WORDS:  # every language with rules is reachable from its own name and a file
        assert pp.editor_language(lang.lower()) == lang
        assert any(detect_language(f"f.{ext}") == lang for ext in pp._EXTENSIONS)


def test_stop_words_are_column_zero_unit_starts():
    for lang in ["Python", "JavaScript", "TypeScript", "Java", "Go", "Rust", "C", "C++", "C#", "Ruby", "PHP",
                 "Kotlin", "Swift", "Scala", "Shell", "Lua"]:
        stops = pp.stop_words(lang)
        assert stops, lang
        assert all(s.startswith("\n") and s[1:2].strip() for s in stops), lang
    assert pp.stop_words("python") == pp.stop_words("Python") == pp.stop_words("x.py") == pp.STOP_WORDS["Python"]
    assert "\ndef " in pp.stop_words("Python") and "\nif __name__" in pp.stop_words("Python")
    assert "\nfunc " in pp.stop_words("go")
    assert pp.stop_words(None) == pp.stop_words("Markdown") == pp.stop_words("nonsense") == ()


@pytest.mark.parametrize("text, stop, kept", [
    ("x = 1\ndef g():", ("\ndef ",), "x = 1"),
    ("\n\ndef main():\n    pass\n\ndef other():", ("\ndef ",), "\n\ndef main():\n    pass\n"),  # first unit stays
    ("   \n \nclass A:\n    pass\nclass B:", ("\nclass ",), "   \n \nclass A:\n    pass"),
    ("a\n@dec\ndef f():", ("\ndef ", "\n@"), "a"),                                  # the earliest wins
    ("no stop here", ("\ndef ",), "no stop here"),
    ("x\ndef g()", (), "x\ndef g()"),
    ("", ("\ndef ",), ""),
    ("\ndef ", ("\ndef ",), "\ndef "),                                          # nothing before it
])
def test_cut_at_stop_words(text, stop, kept):
    assert pp.cut_at_stop_words(text, stop) == kept


@pytest.mark.parametrize("lang, prefix, text, kept", [
    # At top level the dedent rule cuts nothing; the stop words end the unit.
    ("python", "import os\n\n", "def main():\n    print(os.getcwd())\n\n\ndef helper():\n    pass",
     "def main():\n    print(os.getcwd())"),
    ("Python", "x = 1\n", "y = 2\nz = 3\n\nif __name__ == '__main__':\n    main()", "y = 2\nz = 3"),
    ("python", "import os\n", "import sys\nimport re\n\n@cache\ndef f():", "import sys\nimport re"),  # imports stay
    ("javascript", "", "function add(a, b) {\n  return a + b;\n}\n\nexport function sub(a, b) {",
     "function add(a, b) {\n  return a + b;\n}"),
    ("typescriptreact", "", "interface P {\n  x: number;\n}\ntype Q = P;", "interface P {\n  x: number;\n}"),
    ("go", "package main\n\n", "func main() {\n\tfmt.Println(1)\n}\n\nfunc other() {",
     "func main() {\n\tfmt.Println(1)\n}"),
    ("rust", "", "fn one() -> i32 {\n    1\n}\n\n#[cfg(test)]\nmod tests {", "fn one() -> i32 {\n    1\n}"),
    ("cpp", "", "int add(int a, int b) {\n    return a + b;\n}\n\ntemplate <typename T>\nT id(T x);",
     "int add(int a, int b) {\n    return a + b;\n}"),
    ("ruby", "", "def hi\n  puts 1\nend\n\ndef bye", "def hi\n  puts 1\nend"),
    ("shellscript", "#!/bin/sh\n", "echo hi\nfunction f {", "echo hi"),
    ("lua", "", "local x = 1\nlocal function f()", "local x = 1"),
    (None, "", "def a():\n    pass\ndef b():", "def a():\n    pass\ndef b():"),  # no language: no stop words
])
def test_for_editor_applies_the_language_stop_words(lang, prefix, text, kept):
    assert pp.for_editor(text, prefix, lang=lang) == kept


def test_stop_words_only_in_multi_line_mode():
    assert pp.for_editor("\ndef f():\n    pass", "x = 1", single=True, lang="Python") == "\ndef f():"


# --- brackets at the cut ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, suffix, kept", [
    ("a, b)", ")", "a, b"),                            # foo(|) -> foo(a, b)
    ("a, b)\nprint(x)", ")\n", "a, b"),                # what follows the extra closer goes too
    ("a, b)", "  \n  )", "a, b"),                      # the suffix's first non-whitespace character
    ("a, g(b))", ")", "a, g(b)"),                      # closers of brackets the text opened stay
    ("x[0], {'k': [1]})", ")", "x[0], {'k': [1]}"),
    ("i]) {", ")", "i]"),                              # `if (a[|)`: the ] closes the prefix's [, kept
    ("a, b)", "]", "a, b)"),                           # the suffix closes something else
    ("a, b)", "", "a, b)"),
    ("a, b)", "x)", "a, b)"),
    ("a, b", ")", "a, b"),
    ("return 1;\n}", "\n}\n", "return 1;\n"),
    ("')' + x)", ")", "')' + x"),                      # brackets in strings do not count
    ('"(" + x)', ")", '"(" + x'),
    ('f"{x})"', ")", 'f"{x})"'),
    ("it's (x))", ")", "it's (x)"),                    # an apostrophe opens no string
    ('"don\'t" + x)', ")", '"don\'t" + x'),
    ("x)  # see f(", ")", "x"),
    ("", ")", ""),
])
def test_cut_unbalanced(text, suffix, kept):
    assert pp.cut_unbalanced(text, suffix) == kept


def test_cut_unbalanced_skips_comments_of_a_known_language():
    assert pp.cut_unbalanced("x  # :)\n  y)", ")", lang="Python") == "x  # :)\n  y"
    assert pp.cut_unbalanced("x  # :)\n  y)", ")") == "x  # :"          # unknown language: counted
    assert pp.cut_unbalanced("x /* :) */ + y)", ")", lang="C") == "x /* :) */ + y"
    assert pp.cut_unbalanced("x // :)\n+ y)", ")", lang="Java") == "x // :)\n+ y"
    assert pp.cut_unbalanced("x -- :)\n+ y)", ")", lang="Lua") == "x -- :)\n+ y"
    assert pp.cut_unbalanced("$# ])", ")", lang="Shell") == "$# ]"      # $# is not a comment


def test_cut_unbalanced_knows_when_the_cursor_is_in_a_string():
    # The text's first quote closes the prefix's string, so the ) after it is code and closes nothing.
    assert pp.cut_unbalanced('b") + 1', ")", prefix='f("a') == 'b"'
    assert pp.cut_unbalanced('b)")', ")", prefix='f("a') == 'b)"'
    assert pp.cut_unbalanced('b)")', ")") == "b"


# --- deadline cut -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kept", [
    ("x = 1\ny = 2\nz = compu", "x = 1\ny = 2\n"),               # up to the last complete line
    ("    total = 0\n    for x in", "    total = 0\n"),
    ("x = 1\n", "x = 1\n"),
    ("a, b)\n    return x\n    y = fo", "a, b)\n    return x\n"),  # closing the prefix's bracket is fine
    ("x = foo(\n    a,\n    b", ""),                             # every line ends inside the call
    ("y = 1\nx = foo(\n    a,\n    b", "y = 1\n"),
    ("x = [1,\n     2]\ny", "x = [1,\n     2]\n"),
    ("a, b)", "a, b)"),                                          # no newline: balanced, kept
    ("foo(a, b)", "foo(a, b)"),
    ("foo(a, b", ""),                                            # no newline: open bracket
    ("x = 1; y = f(a", "x = 1;"),                                # ... unless a statement ended before
    ("for (i = 0; i < n", ""),                                   # a ; inside brackets ends no statement
    ("print('abc", ""),
    ("s = 'abc", ""),                                            # ends inside a string
    ('s = "a\\"b', ""),                                          # an escaped quote does not close
    ('s = "abc"', 's = "abc"'),
    ('doc = """one\ntwo\nthr', ""),                              # inside a multi-line string
    ('x = 1\ndoc = """one\ntwo', "x = 1\n"),
    ("s = `a\nb", ""),                                           # template literal
    ("x = 'it\nmore(", "x = 'it\n"),                             # a ' string ends with its line
    ("", ""),
])
def test_cut_to_complete(text, kept):
    assert pp.cut_to_complete(text) == kept


def test_cut_to_complete_reads_the_cursor_state_from_the_prefix():
    prefix = 'def f():\n    """Add one '
    text = 'to x."""\n    return x + 1\n    ret'
    assert pp.cut_to_complete(text, prefix, "Python") == 'to x."""\n    return x + 1\n'
    assert pp.cut_to_complete(text) == ""                        # without the prefix the """ opens a string
    assert pp.cut_to_complete("(see above\nx = 1\ny", "# note ", "Python") == "(see above\nx = 1\n"
    # A long prefix is read from a line's start in its last 16 KiB.
    long_prefix = "x = 1\n" * 5000 + 'def f():\n    """Add one '
    assert pp.cut_to_complete(text, long_prefix, "Python") == 'to x."""\n    return x + 1\n'


def test_cut_to_complete_comments():
    assert pp.cut_to_complete("x = 1  # maybe f(\ny = 2\nz", lang="Python") == "x = 1  # maybe f(\ny = 2\n"
    assert pp.cut_to_complete("x = 1  # maybe f(\ny = 2\nz") == ""   # unknown language: ( counts
    assert pp.cut_to_complete("x = 1;  /* a\nb */\ny", lang="C") == "x = 1;  /* a\nb */\n"
    assert pp.cut_to_complete("x = 1;  /* a\nb", lang="C") == "x = 1;"
    assert pp.cut_to_complete("x = 1  # a comment with (", lang="Python") == "x = 1  # a comment with ("


# --- the editor rules together ------------------------------------------------------------------------

@pytest.mark.parametrize("text, prefix, suffix, single, kept", [
    ("total = sum(xs)\n    return total / len(xs)\n    # and then the medi", "def mean(xs):\n    ", "", False,
     "total = sum(xs)\n    return total / len(xs)"),
    ("sum(xs) / len(xs", "def mean(xs):\n    return ", "", True, ""),
    ("sum(xs) / len(xs)\n    ", "def mean(xs):\n    return ", "", True, "sum(xs) / len(xs)"),
    ("sum(xs)", "def mean(xs):\n    return ", "", True, "sum(xs)"),
    ("a, b)\nprint(", "foo(", ")", False, "a, b"),
])
def test_for_editor_truncated(text, prefix, suffix, single, kept):
    assert pp.for_editor(text, prefix, suffix, single=single, truncated=True) == kept


def test_for_editor_truncated_ignored_when_the_model_ended_the_text():
    # An end token means the text is whole: its last line is kept even without a newline.
    assert pp.for_editor("x = 1\ny = 2<|endoftext|>", "", truncated=True) == "x = 1\ny = 2"
    assert pp.for_editor("x = 1\ny = 2", "", truncated=True) == "x = 1"
    assert pp.for_editor("x = 1\ny = 2", "") == "x = 1\ny = 2"


def test_for_editor_cuts_a_bracket_the_suffix_closes():
    # The one change for calls without the new arguments: before, this gave "a, b)".
    assert pp.for_editor("a, b)", "foo(", ")") == "a, b"
    assert pp.for_editor("a, b)", "foo(", ")", single=True) == "a, b"
    assert pp.for_editor("a, b)", "foo(", "") == "a, b)"


def _for_editor_before(text, prefix, suffix="", single=False):
    """for_editor as it was before languages, deadlines and brackets."""
    text = pp.cut_at_end_token(text)
    text = pp.single_line(text) if single else pp.cut_at_dedent(text, prefix)
    return pp.trim_trailing_whitespace(pp.cut_at_suffix(text, suffix))


@pytest.mark.parametrize("text, prefix, suffix, single", [
    ("total = sum(xs)   \n    return total / len(xs)\n\n\ndef median(xs):\n    pass<|endoftext|>",
     "def mean(xs):\n    ", "", False),
    ("total = sum(xs)\n    return total\n", "def mean(xs):\n    ", "\n    return total\n", False),
    ("total = sum(xs)\n    return total\n", "def mean(xs):\n    ", "\n    return total\n", True),
    ("def main():\n    pass\n\ndef other():\n    pass", "", "", False),     # no language: no stop words
    ("a, b", "foo(", ")\n", False),
    ("x]", "a[", "\n", False),
    ("return 1;\n}\n\nint g() {", "int f() {\n    ", "\n}\n", False),
    ("", "x", "", False),
])
def test_for_editor_without_the_new_arguments_is_unchanged(text, prefix, suffix, single):
    assert pp.for_editor(text, prefix, suffix, single=single) == _for_editor_before(text, prefix, suffix, single)
