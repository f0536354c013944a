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
