"""Real editors against a real codekiln: Vim running llama.vim on `codekiln serve`'s /infill; Emacs (eglot, and
lsp-mode with company) and Neovim's built-in LSP client on `codekiln lsp`. Each editor is driven as a user
drives it (keys typed in a terminal, or the completion command) and the test reads what ends up in the file.
A test is skipped with its reason when its editor (or llama.vim's source) is not on this machine;
docs/editors.md lists the packages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serve_client import get

sys.path.insert(0, str(Path(__file__).parent / "editors_real"))
from terminal import Terminal  # noqa: E402

HELPERS = Path(__file__).parent / "editors_real"
# A Python file whose last line is a statement to finish; the cursor goes after "return ".
SOURCE = "import math\n\n\ndef distance(p, q):\n    dx = q[0] - p[0]\n    dy = q[1] - p[1]\n    return\n"
LAST = SOURCE.rstrip("\n").rsplit("\n", 1)[-1]
HINT = b"38;5;202m"  # llama.vim draws its ghost text in colour 202 (its llama_hl_fim_hint group)
ERROR = re.compile(r"\bE\d{2,4}:|Error detected")


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an editor: a fresh home (none of the user's configuration or plugins), a 256-colour
    terminal, one thread for torch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIM", "MYVIMRC", "NVIM", "XDG_"))}
    return {**env, "HOME": str(home), "TERM": "xterm-256color", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            **extra}


def _http_counts(url: str, endpoint: str) -> dict[str, float]:
    """codekiln_http_requests_total for one endpoint, by status, from /metrics."""
    counts: dict[str, float] = {}
    pattern = re.compile(r'codekiln_http_requests_total\{endpoint="%s",status="(\d+)"\} ([\d.e+]+)'
                         % re.escape(endpoint))
    for line in get(url, "/metrics").raw.decode().splitlines():
        m = pattern.fullmatch(line)
        if m:
            counts[m.group(1)] = float(m.group(2))
    return counts


def _llama_vim() -> Path | None:
    """A llama.vim checkout: $CODEKILN_LLAMA_VIM, else where vim-plug, Vim packages or lazy.nvim put it."""
    candidates = [os.environ.get("CODEKILN_LLAMA_VIM", "")]
    home = Path.home()
    candidates += [str(home / ".vim" / "plugged" / "llama.vim"), str(home / ".local/share/nvim/lazy/llama.vim")]
    candidates += [str(p) for p in sorted((home / ".vim" / "pack").glob("*/*/llama.vim"))]
    for c in candidates:
        if c and (Path(c) / "autoload" / "llama.vim").is_file():
            return Path(c)
    return None


def _vim_version() -> int:
    """Vim's `v:version` style number (900 for 9.0), 0 when there is no vim."""
    if not shutil.which("vim"):
        return 0
    m = re.search(r"Vi IMproved (\d+)\.(\d+)", subprocess.run(["vim", "--version"], capture_output=True,
                                                                text=True).stdout)
    return int(m.group(1)) * 100 + int(m.group(2)) if m else 0


def test_vim_llama_vim_shows_and_accepts_a_completion_from_codekiln_serve(server, tmp_path):
    """Vim 9 with llama.vim (its pinned source) pointed at /infill: typing in insert mode draws the ghost text,
    Tab accepts it, and the saved file holds the typed text plus the completion."""
    if _vim_version() < 900:
        pytest.skip("needs Vim 9.0 or later with +textprop (Debian: vim or vim-nox)")
    plugin = _llama_vim()
    if plugin is None:
        pytest.skip("llama.vim not found: set CODEKILN_LLAMA_VIM to a checkout of github.com/ggml-org/llama.vim")
    if not shutil.which("curl"):
        pytest.skip("llama.vim sends its requests with curl, which is not installed")
    src = tmp_path / "geo.py"
    src.write_text(SOURCE)
    messages = tmp_path / "messages.txt"
    vimrc = tmp_path / "vimrc"
    vimrc.write_text("\n".join([
        "set nocompatible noswapfile t_Co=256",
        f"set runtimepath^={plugin}",
        f"let g:llama_config = {{'endpoint_fim': '{server.url}/infill', 'api_key': ''}}",
        "filetype plugin indent on",
    ]) + "\n")
    before = _http_counts(server.url, "/infill")
    vim = Terminal(["vim", "-u", str(vimrc), "-i", "NONE", "-n", str(src)], _env(tmp_path), str(tmp_path))
    try:
        vim.pump(1.0)
        assert vim.status is None, vim.text()
        vim.send(f"{SOURCE.count(chr(10))}GA")  # the last line, insert mode at its end
        shown = False
        for key in [" ", "m", "\x7f", "\x7f"]:  # each move asks again; a sampled completion may be empty
            vim.output.clear()
            vim.send(key)
            if vim.wait_for(lambda: HINT in vim.output, timeout=5):
                shown = True
                break
        assert shown, f"llama.vim drew no ghost text; /infill answers {_http_counts(server.url, '/infill')}"
        vim.pump(0.3)
        vim.send("\t", settle=0.5)  # accept the whole suggestion
        vim.send("\x1b", settle=0.3)
        vim.send(f":redir! > {messages} | silent messages | redir END\r")
        vim.send(":wq\r")
        assert vim.wait_exit(15) == 0, vim.text()[-2000:]
    finally:
        vim.close()
    after = _http_counts(server.url, "/infill")
    assert after.get("200", 0) > before.get("200", 0)
    assert {s for s, n in after.items() if n > before.get(s, 0)} <= {"200", "499"}, after  # 499: llama.vim cancels
    log = messages.read_text()
    assert not ERROR.search(log), log
    text = src.read_text()
    head = SOURCE.rstrip("\n")
    assert text.startswith(head), text
    completion = text[len(head):]
    assert completion.strip(), f"Tab inserted nothing: {text!r}"


def _emacs_has(feature: str) -> bool:
    """Whether `emacs --batch` can load this feature (Debian's elpa-* packages are on its load path)."""
    if not shutil.which("emacs"):
        return False
    probe = subprocess.run(["emacs", "--batch", "--eval", f"(princ (if (require '{feature} nil t) \"yes\" \"no\"))"],
                           capture_output=True, text=True, timeout=60)
    return probe.stdout.strip().endswith("yes")


def _emacs_complete(script: str, server_cmd: list[str], tmp_path: Path) -> tuple[dict, str]:
    """Run an Emacs batch script of editors_real/ on geo.py with the cursor after "return "; its JSON result and
    the buffer's text before the cursor."""
    src = tmp_path / "geo.py"
    src.write_text(SOURCE.replace("    return\n", "    return \n"))
    out = tmp_path / "result.json"
    env = _env(tmp_path, CK_FILE=str(src), CK_LINE=str(SOURCE.count("\n")), CK_COLUMN=str(len(LAST) + 1),
               CK_OUT=str(out), CK_SERVER=json.dumps(server_cmd))
    run = subprocess.run(["emacs", "--batch", "-l", str(HELPERS / script)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0 and out.exists(), run.stderr[-3000:]
    return json.loads(out.read_text()), SOURCE.replace("    return\n", "    return ")


@pytest.mark.skipif(not shutil.which("emacs"), reason="emacs is not installed (Debian: emacs-nox)")
def test_emacs_eglot_completes_from_codekiln_lsp(serve_run, tmp_path):
    """Emacs with eglot starts `codekiln lsp --model RUN`; `completion-at-point` after "return " offers codekiln's
    item and inserts its whole text (eglot applies the item's textEdit)."""
    if not _emacs_has("eglot"):
        pytest.skip("eglot is not available to emacs (Emacs 28: Debian's elpa-eglot; built in from Emacs 29)")
    cmd = [sys.executable, "-m", "codekiln", "lsp", "--model", str(serve_run), "--threads", "1", "--debounce-ms", "0"]
    result, before = _emacs_complete("eglot_complete.el", cmd, tmp_path)
    assert result["details"] == ["codekiln"], result
    inserted = result["filter_texts"][0]  # the item's whole text: the word typed (none here) plus the completion
    assert inserted.strip() and result["candidates"][0] == inserted.strip().split("\n")[0][:80]
    assert result["text"] == before + inserted + "\n", result
    assert result["point"] == len(before) + len(inserted)


@pytest.mark.skipif(not shutil.which("emacs"), reason="emacs is not installed (Debian: emacs-nox)")
def test_emacs_lsp_mode_with_company_completes_from_codekiln_lsp(server, tmp_path):
    """Emacs with lsp-mode and company on `codekiln lsp --server URL`: company's first candidate is the item's
    label (its first line) and taking it inserts the item's whole text."""
    missing = [f for f in ("lsp-mode", "company") if not _emacs_has(f)]
    if missing:
        pytest.skip(f"not available to emacs: {', '.join(missing)} (Debian: elpa-lsp-mode, elpa-company)")
    cmd = [sys.executable, "-m", "codekiln", "lsp", "--server", server.url, "--debounce-ms", "0"]
    result, before = _emacs_complete("lsp_mode_complete.el", cmd, tmp_path)
    assert len(result["candidates"]) == 1, result
    assert result["text"].startswith(before) and result["text"].endswith("\n"), result
    inserted = result["text"][len(before):-1]
    assert inserted.strip() and result["candidates"][0] == inserted.strip().split("\n")[0][:80], result
    assert result["point"] == len(before) + len(inserted)


def _nvim_version() -> tuple[int, int]:
    """Neovim's (major, minor), (0, 0) when there is no nvim."""
    if not shutil.which("nvim"):
        return (0, 0)
    m = re.search(r"NVIM v(\d+)\.(\d+)", subprocess.run(["nvim", "--version"], capture_output=True, text=True).stdout)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def test_neovim_builtin_lsp_omni_completion_from_codekiln_lsp(server, tmp_path):
    """Neovim (0.7 and later) with its built-in LSP client on `codekiln lsp --server URL`: CTRL-X CTRL-O after
    "return " lists codekiln's item, CTRL-Y accepts it, and the saved file holds it."""
    if _nvim_version() < (0, 7):
        pytest.skip("needs Neovim 0.7 or later (Debian: neovim)")
    src = tmp_path / "geo.py"
    src.write_text(SOURCE.replace("    return\n", "    return \n"))
    ready = tmp_path / "ready"
    cmd = [sys.executable, "-m", "codekiln", "lsp", "--server", server.url, "--debounce-ms", "0"]
    env = _env(tmp_path, CK_SERVER=json.dumps(cmd), CK_READY=str(ready))
    messages = tmp_path / "messages.txt"
    nvim = Terminal(["nvim", "-u", str(HELPERS / "nvim_lsp_init.lua"), "-i", "NONE", "-n", str(src)], env,
                    str(tmp_path))
    try:
        assert nvim.wait_for(ready.exists, timeout=60), nvim.text()[-2000:]
        nvim.send(f"{SOURCE.count(chr(10))}GA")
        nvim.output.clear()
        nvim.send("\x18\x0f")  # CTRL-X CTRL-O: omni completion, vim.lsp.omnifunc
        assert nvim.wait_for(lambda: b"codekiln" in nvim.output, timeout=30), nvim.text()[-2000:]
        nvim.send("\x19")  # CTRL-Y: accept the selected item
        nvim.send("\x1b")
        nvim.send(f":redir! > {messages} | silent messages | redir END\r")
        nvim.send(":wq\r")
        assert nvim.wait_exit(15) == 0, nvim.text()[-2000:]
    finally:
        nvim.close()
    log = messages.read_text()
    assert not ERROR.search(log), log
    # Vim's complete() cannot insert a line break: a completion of several lines arrives with NULs in their place
    # (docs/editors.md, known limits), so the lines are compared with NULs read as line breaks.
    text = src.read_text().replace("\x00", "\n")
    head = SOURCE.replace("    return\n", "    return ")
    assert text.startswith(head) and text[len(head):].strip(), text
