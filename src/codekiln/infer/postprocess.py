"""Turning raw generated text into a completion: pure functions shared by eval and the server.

Benchmark rule (HumanEval, BigCode harness): cut at the first of HUMANEVAL_STOP; see `for_humaneval`.

Editor rules (after Tabby's post-processing; `for_editor` applies them in this order):
  1. end at a special token (`<|endoftext|>`, `<|file_sep|>`, `<|fim_*|>`, ...): the model ended the text;
  2. when generation was cut short (a deadline or the token limit) and no special token ended it, keep
     only what is complete (see `cut_to_complete`): up to the last line that ends outside any bracket
     or string the completion opened; a text with no such line only when it closes all it opened;
  3. single-line mode: end at the first newline that follows some non-whitespace text, so a completion
     asked for at the end of a line fills that line only;
  4. otherwise, with a known language, end before its first stop word that follows some text: a
     column-0 keyword that begins a new top-level definition (`\\ndef `, `\\nclass `, `\\nfunc `, ...;
     see `STOP_WORDS`);
  5. and end the completion where its indentation leaves the block the cursor is in (a new
     top-level statement, the next method of the class, the closing of the enclosing block);
  6. end before a line that repeats the first non-blank line of the suffix (the model started to
     write again what already follows the cursor);
  7. end before a closing bracket that the completion did not open when the suffix already starts
     with that bracket (see `cut_unbalanced`);
  8. trim trailing whitespace.
Indentation counts a tab as 4 columns.
"""

from __future__ import annotations

import re

from codekiln.tokenizer import SPECIAL_TOKENS

HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")
BLOCK_OPENERS = (":", "{", "(", "[")
TAB = 4

# Stop words for editor completions: a new top-level definition at column 0 (a function, a class or
# type, a module, an attribute or decorator that introduces one, a script's entry point). Plain
# statements, imports and comments are not stops, so a run of imports or assignments still completes
# in one go; the stops only keep a completion from running on into the next definition.
_PYTHON_STOPS = ("\ndef ", "\nasync def ", "\nclass ", "\n@", "\nif __name__")
_JS_STOPS = ("\nfunction ", "\nfunction*", "\nasync function ", "\nclass ", "\nexport ", "\nmodule.exports",
             "\ndescribe(", "\ntest(", "\nit(")
_TS_STOPS = _JS_STOPS + ("\ninterface ", "\ntype ", "\nenum ", "\nconst enum ", "\ndeclare ", "\nnamespace ",
                         "\nabstract class ")
_C_STOPS = ("\nstatic ", "\nextern ", "\nstruct ", "\nunion ", "\nenum ", "\ntypedef ", "\nvoid ", "\nint main(")
_CPP_STOPS = _C_STOPS + ("\nclass ", "\nnamespace ", "\ntemplate ", "\ntemplate<", "\ninline ", "\nauto ")

STOP_WORDS: dict[str, tuple[str, ...]] = {
    "Python": _PYTHON_STOPS,
    "Cython": _PYTHON_STOPS + ("\ncdef ", "\ncpdef ", "\nctypedef "),
    "JavaScript": _JS_STOPS,
    "JSX": _JS_STOPS,
    "TypeScript": _TS_STOPS,
    "TSX": _TS_STOPS,
    "Java": ("\npublic ", "\nclass ", "\nfinal ", "\nabstract ", "\ninterface ", "\nenum ", "\nrecord ", "\n@"),
    "Kotlin": ("\nfun ", "\nsuspend fun ", "\ninline fun ", "\nclass ", "\ndata class ", "\nenum class ",
               "\nobject ", "\ninterface ", "\nsealed ", "\nabstract ", "\nopen ", "\npublic ", "\nprivate ",
               "\ninternal ", "\ntypealias ", "\n@"),
    "Scala": ("\ndef ", "\nclass ", "\ncase class ", "\ncase object ", "\nobject ", "\ntrait ", "\nenum ",
              "\nabstract ", "\nsealed ", "\nfinal ", "\nimplicit ", "\ngiven ", "\nextension ", "\n@"),
    "Go": ("\nfunc ", "\ntype "),
    "Rust": ("\nfn ", "\nasync fn ", "\nunsafe ", "\nconst fn ", "\npub ", "\nstruct ", "\nenum ", "\nunion ",
             "\ntrait ", "\nimpl ", "\nimpl<", "\nmod ", "\nmacro_rules!", "\n#["),
    "C": _C_STOPS,
    "C++": _CPP_STOPS,
    "CUDA": _CPP_STOPS + ("\n__global__ ", "\n__device__ ", "\n__host__ "),
    "Objective-C": _C_STOPS + ("\n@interface ", "\n@implementation ", "\n@protocol ", "\n- (", "\n+ ("),
    "C#": ("\nnamespace ", "\npublic ", "\ninternal ", "\nclass ", "\nstatic class ", "\nsealed ", "\nabstract ",
           "\ninterface ", "\nstruct ", "\nrecord ", "\nenum "),
    "Swift": ("\nfunc ", "\nclass ", "\nstruct ", "\nenum ", "\nprotocol ", "\nextension ", "\nactor ",
              "\nfinal ", "\npublic ", "\nprivate ", "\nfileprivate ", "\ninternal ", "\nopen ", "\n@"),
    "Dart": ("\nclass ", "\nabstract ", "\nmixin ", "\nextension ", "\nenum ", "\ntypedef ", "\nvoid ",
             "\nFuture<", "\n@"),
    "PHP": ("\nfunction ", "\nclass ", "\nabstract ", "\nfinal ", "\ninterface ", "\ntrait ", "\nenum ",
            "\nnamespace ", "\n?>"),
    "Ruby": ("\ndef ", "\nclass ", "\nmodule ", "\nif __FILE__", "\ndescribe ", "\nRSpec."),
    "Shell": ("\nfunction ", "\n#!/"),
    "Perl": ("\nsub ", "\npackage ", "\n__END__", "\n__DATA__"),
    "Lua": ("\nfunction ", "\nlocal function "),
    "Julia": ("\nfunction ", "\nstruct ", "\nmutable struct ", "\nabstract type ", "\nmodule ", "\nmacro ",
              "\n@testset"),
    "Elixir": ("\ndefmodule ", "\ndefprotocol ", "\ndefimpl "),
    "PowerShell": ("\nfunction ", "\nfilter ", "\nclass "),
    "Zig": ("\nfn ", "\npub ", "\nexport fn ", "\ninline fn ", "\ntest "),
}

# Comment openers the bracket scanner knows per language ("/*" runs to "*/", the others to the line's end).
_HASH_COMMENT_LANGUAGES = ("Python", "Cython", "Ruby", "Shell", "Perl", "Julia", "Elixir", "PowerShell")
_COMMENTS: dict[str, tuple[str, ...]] = {
    **{lang: ("//", "/*") for lang in STOP_WORDS},
    **{lang: ("#",) for lang in _HASH_COMMENT_LANGUAGES},
    "PHP": ("//", "/*", "#"),
    "Lua": ("--",),
    "Zig": ("//",),
}

# Where a language's name comes from: the editor's language id (VS Code / LSP `languageId`, Neovim
# filetypes, common short names), codekiln's canonical name in any case, or a file's name. The file
# names and extensions agree with codekiln.data.languages.detect_language (a test checks it); infer/
# sits below data/ and so keeps its own table for the languages it has rules for.
_EDITOR_IDS: dict[str, str] = {
    "python": "Python", "py": "Python", "cython": "Cython",
    "javascript": "JavaScript", "js": "JavaScript", "javascriptreact": "JSX", "jsx": "JSX",
    "typescript": "TypeScript", "ts": "TypeScript", "typescriptreact": "TSX", "tsx": "TSX",
    "java": "Java", "kotlin": "Kotlin", "kt": "Kotlin", "scala": "Scala", "go": "Go", "golang": "Go",
    "rust": "Rust", "rs": "Rust", "c": "C", "cpp": "C++", "cuda-cpp": "CUDA", "cuda": "CUDA",
    "objective-c": "Objective-C", "objective-cpp": "Objective-C", "objc": "Objective-C", "objcpp": "Objective-C",
    "csharp": "C#", "cs": "C#", "swift": "Swift", "dart": "Dart", "php": "PHP", "ruby": "Ruby", "rb": "Ruby",
    "shellscript": "Shell", "sh": "Shell", "bash": "Shell", "zsh": "Shell", "perl": "Perl", "lua": "Lua",
    "julia": "Julia", "elixir": "Elixir", "powershell": "PowerShell", "ps1": "PowerShell", "zig": "Zig",
}
_EXTENSIONS: dict[str, str] = {ext: lang for lang, exts in {
    "Python": "py pyi pyw", "Cython": "pyx pxd pxi", "JavaScript": "js mjs cjs", "JSX": "jsx",
    "TypeScript": "ts mts cts", "TSX": "tsx", "Java": "java", "Kotlin": "kt kts", "Scala": "scala sc",
    "Go": "go", "Rust": "rs", "C": "c h", "C++": "cpp cc cxx c++ hpp hh hxx h++ ipp tpp tcc inl ino",
    "CUDA": "cu cuh", "Objective-C": "m mm", "C#": "cs csx", "Swift": "swift", "Dart": "dart",
    "PHP": "php phtml php3 php4 php5", "Ruby": "rb rake gemspec ru", "Shell": "sh bash zsh ksh",
    "Perl": "pl pm", "Lua": "lua", "Julia": "jl", "Elixir": "ex exs", "PowerShell": "ps1 psm1 psd1", "Zig": "zig",
}.items() for ext in exts.split()}
_FILENAMES: dict[str, str] = {name: lang for lang, names in {
    "Python": "sconstruct sconscript", "Ruby": "rakefile gemfile guardfile podfile vagrantfile brewfile",
    "Shell": ".bashrc .bash_profile .bash_login .bash_logout .bash_aliases .profile .zshrc .zshenv .zprofile"
             " .zlogin .kshrc pkgbuild",
}.items() for name in names.split()}
_CANONICAL: dict[str, str] = {lang.lower(): lang for lang in STOP_WORDS}


def editor_language(name_or_path: str | None) -> str | None:
    """Canonical language (a key of STOP_WORDS) of an editor language id, a canonical name or a file path.

    Tried in this order on the lower-cased name: an editor id (`python`, `typescriptreact`, `cpp`,
    `csharp`, `shellscript`, ...), a canonical name (`C++`, `c#`), then the path's file name and its
    last extension (`src/app.py`, `Gemfile`). None when empty or unknown, and for languages without
    editor rules here (Markdown, YAML, ...): the server then applies no stop words.
    """
    if not name_or_path or not name_or_path.strip():
        return None
    key = name_or_path.strip().lower()
    lang = _EDITOR_IDS.get(key) or _CANONICAL.get(key)
    if lang is not None:
        return lang
    name = re.split(r"[/\\]", key)[-1]
    dot = name.rfind(".")
    return _FILENAMES.get(name) or (_EXTENSIONS.get(name[dot + 1:]) if dot > 0 else None)


def stop_words(lang: str | None) -> tuple[str, ...]:
    """The stop words of a language (in any form editor_language reads); empty when unknown."""
    return STOP_WORDS.get(editor_language(lang) or "", ())


def find_stop(text: str, stop) -> int | None:
    """Index where the earliest of the stop strings begins in text, or None."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(found) if found else None


def cut_at_stop(text: str, stop) -> str:
    """text up to (not including) the earliest stop string."""
    i = find_stop(text, stop)
    return text if i is None else text[:i]


def cut_at_end_token(text: str) -> str:
    """text up to the first special-token string (`<|endoftext|>`, `<|file_sep|>`, `<|fim_*|>`, ...)."""
    return cut_at_stop(text, SPECIAL_TOKENS)


def trim_trailing_whitespace(text: str) -> str:
    """Spaces and tabs removed from the end of every line, and trailing blank lines from the end."""
    return "\n".join(line.rstrip(" \t\r") for line in text.split("\n")).rstrip()


def indent_width(line: str) -> int:
    """Columns of leading whitespace (a tab is 4)."""
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += TAB - width % TAB
        else:
            break
    return width


def block_indent(prefix: str) -> int:
    """Least indentation a line of the completion may have and still be in the cursor's block.

    The cursor line is the text after the prefix's last newline. When it holds code, the cursor is in
    that line's block. When it is whitespace only, its width is the cursor's indentation if non-zero;
    at column 0 the block is that of the last non-blank line, one deeper when that line opens a block
    (ends with `:`, `{`, `(` or `[`). Nothing above the cursor: 0, which cuts nothing.
    """
    lines = prefix.split("\n")
    cursor = lines[-1]
    if cursor:
        return indent_width(cursor)
    for line in reversed(lines[:-1]):
        if line.strip():
            return indent_width(line) + (1 if line.rstrip().endswith(BLOCK_OPENERS) else 0)
    return 0


def cut_at_dedent(text: str, prefix: str) -> str:
    """text up to the first non-blank line less indented than the cursor's block (see block_indent).

    The completion's first line continues the cursor line, so it is measured together with it and
    can only end the completion when the cursor line holds no code.
    """
    limit = block_indent(prefix)
    cursor = prefix.split("\n")[-1]
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i == 0:
            if cursor.strip() or not line.strip():
                continue
            line = cursor + line
        if line.strip() and indent_width(line) < limit:
            return "\n".join(lines[:i]) + ("\n" if i else "")
    return text


def single_line(text: str) -> str:
    """text up to the first newline that follows some non-whitespace text (leading blank lines stay)."""
    seen = False
    for i, ch in enumerate(text):
        if ch == "\n" and seen:
            return text[:i]
        if not ch.isspace():
            seen = True
    return text


def cut_at_suffix(text: str, suffix: str) -> str:
    """text up to a line (after its first) that repeats the first non-blank line of the suffix."""
    target = next((line.strip() for line in suffix.split("\n") if line.strip()), "")
    if not target:
        return text
    lines = text.split("\n")
    for i in range(1, len(lines)):
        if lines[i].strip() == target:
            return "\n".join(lines[:i]) + "\n"
    return text


def cut_at_stop_words(text: str, stop) -> str:
    """text up to the earliest stop string that follows some non-whitespace text.

    Blank lines before the completion's first code do not count, so a completion that itself begins
    with a new definition (`"\\n\\ndef main():..."` at the end of a file) keeps that definition and
    ends before the next one.
    """
    start = len(text) - len(text.lstrip())
    i = find_stop(text[start:], stop)
    return text if i is None else text[:start + i]


# The bracket scanner: brackets, newlines and `;` outside strings and comments. A string opens at
# ', " or ` and closes at the same quote (a backslash escapes one character); ' and " strings also end
# with their line, while triple-quoted and backquoted strings may span lines. A ' between a word and a
# letter ("don't") is an apostrophe, not a quote, unless the word is a Python string prefix (r'..',
# f'..'). Comments are recognised only for a known language: its line comment ("#" only at the text's
# or a line's start or after whitespace, so shell's `$#` stays code) and C's /* ... */. Known
# misreadings, each confined to one line: Rust lifetimes ('a), and quotes or brackets in comments when
# the language is unknown.
_SCAN = re.compile(r'"""|' + r"'''" + r'|\\.|/\*|\*/|//|--|[()\[\]{};\n"' + r"'`#]", re.S)
_OPENERS = {")": "(", "]": "[", "}": "{"}
_STRING_PREFIXES = {"r", "b", "f", "u", "rb", "br", "fr", "rf"}
_ONE_LINE = ("\n", "'", '"')  # what ends with its line: a line comment, a ' or " string
_SCAN_TAIL = 16384  # characters of the prefix read to know whether the cursor is in a string or comment


def _scan(text: str, lang: str | None = None, inside: str | None = None) -> tuple[list[tuple[int, str]], str | None]:
    """Brackets, newlines and `;` of text outside strings and comments, with their indices, and the state
    text ends in: None in code, else the delimiter that would close what it ends in ("\\n": a line comment).

    inside is that state where text starts (see _state_after).
    """
    comments = _COMMENTS.get(lang or "", ())
    events: list[tuple[int, str]] = []
    for m in _SCAN.finditer(text):
        tok, i = m.group(), m.start()
        if inside is not None:
            if tok == "\n" and inside in _ONE_LINE:
                inside = None  # the line ends what it held; the newline itself is code
            elif tok == inside or (inside in ("'", '"') and tok == inside * 3):
                inside = None
                continue
            else:
                continue
        if tok in ("\n", ";", "(", ")", "[", "]", "{", "}"):
            events.append((i, tok))
        elif tok in ('"', '"""', "'''", "`"):
            inside = tok
        elif tok == "'":
            word = re.search(r"\w*$", text[max(0, i - 8):i]).group().lower()
            if not word or word in _STRING_PREFIXES or not text[i + 1:i + 2].isalpha():
                inside = tok
        elif tok == "/*" and tok in comments:
            inside = "*/"
        elif tok in ("//", "--") and tok in comments:
            inside = "\n"
        elif tok == "#" and tok in comments and (i == 0 or text[i - 1].isspace()):
            inside = "\n"
    return events, inside


def _state_after(prefix: str, lang: str | None) -> str | None:
    """Whether the cursor is in a string or comment: _scan's end state over the prefix's last lines."""
    tail = prefix[-_SCAN_TAIL:]
    if len(prefix) > _SCAN_TAIL:
        tail = tail[tail.find("\n") + 1:]  # start at a line's start, most likely in code
    return _scan(tail, lang)[1]


def cut_unbalanced(text: str, suffix: str, prefix: str = "", lang: str | None = None) -> str:
    """text up to the first closing bracket it did not open, when the suffix already starts with that bracket.

    A completion at `foo(|)` that writes `a, b)` would leave `foo(a, b))`: when the suffix's first
    non-whitespace character is a closer `)`, `]` or `}`, the text is cut before its first closer of
    that kind that closes no bracket the text opened, and everything after goes too (it was written
    as if the bracket were closed there). Unopened closers of another kind close brackets before the
    cursor and are passed over, so `i])` before the suffix `)` keeps `i]`. Brackets in strings, and
    in comments of a known language, are skipped (see the scanner notes above); prefix tells whether
    the text starts inside a string or comment.
    """
    closer = suffix.lstrip()[:1]
    if closer not in _OPENERS:
        return text
    events, _ = _scan(text, lang, _state_after(prefix, lang) if prefix else None)
    stack: list[str] = []
    for i, ch in events:
        if ch in "([{":
            stack.append(ch)
        elif ch in _OPENERS:
            if stack and stack[-1] == _OPENERS[ch]:
                stack.pop()
            elif ch == closer:
                return text[:i]
    return text


def cut_to_complete(text: str, prefix: str = "", lang: str | None = None) -> str:
    """The usable part of a completion whose generation was stopped early (a deadline, the token limit).

    A line is complete when it ends outside every bracket the text opened and outside any multi-line
    string or block comment (closers of brackets opened before the cursor do not matter). With such a
    line, the text up to and including the last one, newline kept (the editor rules then trim it).
    With none, the whole text when it is complete itself (the brackets it opened are closed and it
    does not end inside a string), else up to and including its last `;` outside brackets and strings
    (`x = 1; y = f(a` keeps `x = 1;`), else "". A word cut in two at the very end of an otherwise
    complete one-line text (`x = 1; y = fo`) cannot be told from a finished one and is kept.
    """
    events, inside = _scan(text, lang, _state_after(prefix, lang) if prefix else None)
    depth, line_end, statement_end = 0, None, None
    for i, ch in events:
        if ch in "([{":
            depth += 1
        elif ch in _OPENERS:
            depth = max(0, depth - 1)
        elif depth == 0 and ch == "\n":
            line_end = i
        elif depth == 0 and ch == ";":
            statement_end = i
    if line_end is not None:
        return text[:line_end + 1]
    if depth == 0 and inside in (None, "\n"):
        return text
    return "" if statement_end is None else text[:statement_end + 1]


def for_humaneval(text: str, stop=HUMANEVAL_STOP) -> str:
    """A HumanEval completion: cut at a special token and at the first BigCode stop sequence."""
    return cut_at_stop(cut_at_end_token(text), stop)


def for_editor(text: str, prefix: str, suffix: str = "", single: bool = False, lang: str | None = None,
               truncated: bool = False) -> str:
    """An editor completion by the rules in this module's docstring.

    single: the cursor line only; lang: the file's language (a canonical name, an editor id or a path,
    see editor_language) for its stop words and comment syntax; truncated: generation was stopped by a
    deadline or the token limit, not ended by the model, so the text may end mid-token.
    """
    lang = editor_language(lang)
    ended = cut_at_end_token(text)
    if truncated and ended == text:
        ended = cut_to_complete(ended, prefix, lang)
    if single:
        text = single_line(ended)
    else:
        text = cut_at_dedent(cut_at_stop_words(ended, stop_words(lang)), prefix)
    text = cut_unbalanced(cut_at_suffix(text, suffix), suffix, prefix, lang)
    return trim_trailing_whitespace(text)
