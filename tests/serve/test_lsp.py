"""`codekiln lsp` in real client sessions over stdio: a subprocess spoken to with JSON-RPC (lsp_client.py),
with the engine in its process (--model) or in front of a real `codekiln serve` (--server, with an API key).

The tiny random models write code-like text that never ends early (conftest.serve_run), so completions
run to their token limit: long enough (1024 tokens on a model with a 2048-token context) for a request to
be cancelled or superseded while the engine runs it. Completions are compared bit for bit only with the
same computation repeated: a fresh engine (or server) running the same first request.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

import codekiln
from codekiln.infer import Engine, Request, fit_fim, fit_repo_fim, for_editor, pack_linear
from codekiln.serve import Settings
from codekiln.serve.lsp import main as lsp_main
from codekiln.tokenizer import load as load_tokenizer
from servers import printable_run, start
from lsp_client import LspProcess, initialize, inline, open_doc
from serve_client import post

ROOT = Path(__file__).resolve().parents[2]
DOC = "import math\n\n\ndef distance(p, q):\n    dx = q[0] - p[0]\n    \n\n\nprint(distance((0, 0), (3, 4)))\n"
CURSOR = (4, 20)  # the end of the line `    dx = q[0] - p[0]`
CANCELLED, INVALID_PARAMS, METHOD_NOT_FOUND, PARSE_ERROR, REQUEST_FAILED = -32800, -32602, -32601, -32700, -32803


def lsp_command(*args: str) -> list[str]:
    """`python -m codekiln lsp ARGS` once the CLI registers it, else the module's own entry point."""
    wired = "serve.lsp" in (ROOT / "src" / "codekiln" / "cli.py").read_text()
    head = ["-m", "codekiln", "lsp"] if wired else ["-m", "codekiln.serve.lsp"]
    return [sys.executable, *head, *args]


def spawn(*args: str) -> LspProcess:
    """The language server as a subprocess (one torch thread: the machine is shared)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return LspProcess(lsp_command(*args, "--threads", "1") if "--model" in args else lsp_command(*args), env=env)


def offset_of(text: str, line: int, character: int) -> int:
    """Index of an ASCII position in text."""
    return sum(len(ln) for ln in text.splitlines(True)[:line]) + character


def status(client: LspProcess) -> dict:
    """The server's codekiln/status."""
    reply = client.call("codekiln/status", None)
    assert "result" in reply, reply
    return reply["result"]


def wait_for(predicate, timeout: float = 30.0, step: float = 0.002) -> None:
    """Poll until predicate() is true."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(step)


def items(reply: dict) -> list[dict]:
    """The items of an inline completion reply (an error fails the test)."""
    assert "result" in reply, reply
    return reply["result"]["items"]


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, serve_run):
    """serve_run's tokenizer and kind of model (code-like text, never ended early) with a 2048-token context,
    recorded as trained on repository-level FIM."""
    run = tmp_path_factory.mktemp("lsp-run") / "long-run"
    ckpt = printable_run(run, serve_run / "tokenizer", context=2048, seed=1)
    record = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**record, "repo_level_fim": True}))
    return run


@pytest.fixture(scope="module")
def busy(long_run, tmp_path_factory):
    """A language server on long_run answering 1024-token completions, its workspace folder, and its URIs."""
    root = tmp_path_factory.mktemp("lsp-ws") / "proj"
    root.mkdir()
    client = spawn("--model", str(long_run), "--max-tokens", "1024", "--deadline-ms", "0", "--debounce-ms", "40")
    try:
        initialize(client, root)
        yield client, root
    finally:
        client.close()


def reference(run, prefix: str, suffix: str, max_tokens: int) -> str:
    """What a fresh engine like `codekiln lsp --model run --threads 1` completes first for this prefix and
    suffix, cleaned for the editor: the same computation as the server's first request."""
    torch.set_flush_denormal(True)
    model, tok = codekiln.load(run)
    pack_linear(model)
    engine = Engine(model, tok, max_batch=4, context=min(model.cfg.context, 4096), threads=1,
                    default_deadline_ms=0).start()
    try:
        engine.warmup()
        ids = fit_fim(tok, prefix, suffix, context=engine.context, max_new_tokens=max_tokens).ids
        result = engine.complete(Request(prompt=ids, max_tokens=max_tokens, temperature=0.0, deadline_ms=0))
    finally:
        engine.stop()
    single = bool(suffix.split("\n", 1)[0].strip())
    return for_editor(result.text, prefix, suffix, single=single, lang="python",
                      truncated=result.finish_reason in ("length", "deadline"))


def test_a_session_completes_syncs_changes_and_exits_cleanly(serve_run, tmp_path):
    client = spawn("--model", str(serve_run), "--max-tokens", "24", "--deadline-ms", "0", "--debounce-ms", "20")
    try:
        init = initialize(client, tmp_path)
        caps = init["result"]["capabilities"]
        assert "inlineCompletionProvider" in caps and "completionProvider" in caps
        assert caps["textDocumentSync"]["change"] == 2  # incremental
        uri = (tmp_path / "geometry.py").as_uri()
        open_doc(client, uri, DOC)
        first = items(client.response(inline(client, uri, *CURSOR)))
        cut = offset_of(DOC, *CURSOR)
        expected = reference(serve_run, DOC[:cut], DOC[cut:], 24)
        assert expected.strip(), "the tiny model's completion is empty: pick another cursor"
        assert [i["insertText"] for i in first] == [expected]
        here = {"line": CURSOR[0], "character": CURSOR[1]}
        assert first[0]["range"] == {"start": here, "end": here}

        # An incremental change: a line typed after the cursor line. The server's text is the client's: the
        # prompt it runs has the token count of the edited text's FIM prompt.
        tok = load_tokenizer(serve_run / "tokenizer")
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
            {"range": {"start": {"line": 5, "character": 4}, "end": {"line": 5, "character": 4}},
             "text": "dy = q[1] - p[1]\n    ret"}]})
        text = DOC.replace("p[0]\n    \n", "p[0]\n    dy = q[1] - p[1]\n    ret\n")
        cut = offset_of(text, 6, 7)
        before = status(client)["engine"]["prompt_tokens"]
        reply = client.call("textDocument/completion", {"textDocument": {"uri": uri},
                                                        "position": {"line": 6, "character": 7}})
        fitted = fit_fim(tok, text[:cut], text[cut:], context=256, max_new_tokens=24)
        assert status(client)["engine"]["prompt_tokens"] - before == len(fitted.ids)
        for item in reply["result"]["items"]:  # the edit starts at the word typed, which clients filter by
            edit = item["textEdit"]
            assert edit["range"] == {"start": {"line": 6, "character": 4}, "end": {"line": 6, "character": 7}}
            assert edit["newText"].startswith("ret") and len(edit["newText"]) > 3
            assert item["filterText"] == edit["newText"]
        # The cursor line holds code after the cursor: a single-line completion.
        one = items(client.call("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": 4, "character": 9}, "context": {"triggerKind": 1}}))
        assert len(one) == 1 and "\n" not in one[0]["insertText"]
        # A full change replaces the text: line 6 no longer exists.
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 3},
                                                 "contentChanges": [{"text": "def f(x):\n"}]})
        gone = client.call("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": 6, "character": 0}, "context": {"triggerKind": 1}})
        assert gone["error"]["code"] == INVALID_PARAMS
        before = status(client)["engine"]["prompt_tokens"]
        items(client.response(inline(client, uri, 1, 0)))  # the end of the new text
        fitted = fit_fim(tok, "def f(x):\n", "", context=256, max_new_tokens=24)
        assert status(client)["engine"]["prompt_tokens"] - before == len(fitted.ids)
        assert status(client)["repo_context"] is False  # serve_run records no repository-level FIM
        assert client.call("shutdown", None)["result"] is None
        client.notify("exit", None)
        client.proc.stdin.close()
        assert client.proc.wait(timeout=20) == 0, client.stderr
    finally:
        client.close()


def test_a_newer_request_supersedes_the_older_one(busy):
    client, root = busy
    uri = (root / "supersede.py").as_uri()
    open_doc(client, uri, DOC)
    # During the debounce: the older automatic request never reaches the engine.
    before = status(client)["engine"]["requests"]
    old, new = inline(client, uri, *CURSOR, kind=2), inline(client, uri, *CURSOR, kind=2)
    assert items(client.response(old)) == []
    assert len(items(client.response(new))) == 1
    assert status(client)["engine"]["requests"] == before + 1
    # While the engine runs it: the older one is cancelled in the engine and answers an empty list.
    old = inline(client, uri, *CURSOR)
    wait_for(lambda: status(client)["engine"]["running"] >= 1)
    cancelled = status(client)["engine"].get("finished_cancelled", 0)
    new = inline(client, uri, 4, 9)
    assert items(client.response(old)) == []
    assert len(items(client.response(new))) == 1
    assert status(client)["engine"].get("finished_cancelled", 0) == cancelled + 1


def test_cancel_request_stops_the_engine_request(busy):
    client, root = busy
    uri = (root / "cancel.py").as_uri()
    open_doc(client, uri, DOC)
    cancelled = status(client)["engine"].get("finished_cancelled", 0)
    rid = inline(client, uri, *CURSOR)
    wait_for(lambda: status(client)["engine"]["running"] >= 1)
    client.notify("$/cancelRequest", {"id": rid})
    assert client.response(rid)["error"]["code"] == CANCELLED
    wait_for(lambda: status(client)["engine"].get("finished_cancelled", 0) == cancelled + 1)
    assert status(client)["in_flight"] == 0


def test_malformed_messages_get_errors_and_the_server_goes_on(busy):
    client, root = busy
    uri = (root / "bad.py").as_uri()
    open_doc(client, uri, "x = 1\n")
    bad = [({"textDocument": {"uri": uri}}, INVALID_PARAMS),  # no position, no context
           ({"textDocument": {"uri": uri}, "position": {"line": -1, "character": 0},
             "context": {"triggerKind": 1}}, INVALID_PARAMS),
           ({"textDocument": {"uri": uri + ".missing"}, "position": {"line": 0, "character": 0},
             "context": {"triggerKind": 1}}, INVALID_PARAMS),
           ({"textDocument": {"uri": uri}, "position": {"line": 9, "character": 0},
             "context": {"triggerKind": 1}}, INVALID_PARAMS)]
    for params, code in bad:
        reply = client.call("textDocument/inlineCompletion", params)
        assert reply["error"]["code"] == code, (params, reply)
        assert reply["error"]["message"]
    assert client.call("codekiln/nothing", {})["error"]["code"] == METHOD_NOT_FOUND
    client.send_raw(b'{"jsonrpc": "2.0", "id": 77, "method": ')  # not JSON
    assert client.response(None)["error"]["code"] == PARSE_ERROR
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri + ".missing", "version": 2},
                                             "contentChanges": [{"text": "y"}]})  # a document never opened
    client.notify("textDocument/didOpen", {"textDocument": {"uri": 5}})  # bad params of a notification
    # A character past the line's end means the line's end (LSP); the server still answers.
    reply = client.call("textDocument/inlineCompletion", {"textDocument": {"uri": uri},
                        "position": {"line": 0, "character": 99}, "context": {"triggerKind": 1}})
    assert reply["result"]["items"][0]["range"]["start"] == {"line": 0, "character": 5}
    assert client.proc.poll() is None


def test_repository_context_adds_open_files_of_the_same_language(busy, long_run):
    client, root = busy
    tok = load_tokenizer(long_run / "tokenizer")
    st = status(client)
    assert st["repo_context"] is True  # long_run records repository-level FIM
    helper = "def norm(v):\n    return math.sqrt(sum(x * x for x in v))\n"
    for d in ("cancel.py", "bad.py", "supersede.py"):  # earlier tests' documents: closed
        client.notify("textDocument/didClose", {"textDocument": {"uri": (root / d).as_uri()}})
    open_doc(client, (root / "pkg" / "vec.py").as_uri(), helper)
    open_doc(client, (root / "web.js").as_uri(), "export const x = 1;\n", lang="javascript")
    uri = (root / "main.py").as_uri()
    open_doc(client, uri, DOC)
    before = status(client)["engine"]["prompt_tokens"]
    assert len(items(client.response(inline(client, uri, *CURSOR)))) == 1
    cut = offset_of(DOC, *CURSOR)
    ids = fit_repo_fim(tok, DOC[:cut], DOC[cut:], context=2048, max_new_tokens=1024,
                       extra=[("pkg/vec.py", helper)], path="main.py", repo="proj").ids
    assert status(client)["engine"]["prompt_tokens"] - before == len(ids)
    assert len(ids) > len(fit_fim(tok, DOC[:cut], DOC[cut:], context=2048, max_new_tokens=1024).ids)


def test_server_mode_with_an_api_key(long_run, tmp_path):
    settings = Settings(model_name="tiny", api_keys=("s3cret",), disconnect_poll_s=0.005)
    prefix, suffix = DOC[:offset_of(DOC, *CURSOR)], DOC[offset_of(DOC, *CURSOR):]
    with start(long_run, settings) as cold:  # the same first request on a fresh server
        raw = post(cold.url, "/v1/completions", {"prompt": prefix, "suffix": suffix, "max_tokens": 24,
                                                  "temperature": 0.0, "deadline_ms": 0},
                   headers={"Authorization": "Bearer s3cret"}).json["choices"][0]
    expected = for_editor(raw["text"], prefix, suffix, lang="python", truncated=raw["finish_reason"] == "length")
    key_file = tmp_path / "key"
    key_file.write_text("# the team's key\ns3cret\n")
    with start(long_run, settings) as served:
        client = spawn("--server", served.url, "--api-key-file", str(key_file), "--max-tokens", "24",
                       "--deadline-ms", "0")
        wrong = spawn("--server", served.url, "--api-key", "nope", "--max-tokens", "1024", "--deadline-ms", "0")
        try:
            initialize(client, tmp_path)
            initialize(wrong, tmp_path)
            uri = (tmp_path / "geometry.py").as_uri()
            for c in (client, wrong):
                open_doc(c, uri, DOC)
            assert [i["insertText"] for i in items(client.response(inline(client, uri, *CURSOR)))] == [expected]
            refused = wrong.response(inline(wrong, uri, *CURSOR))
            assert refused["error"]["code"] == REQUEST_FAILED and "401" in refused["error"]["message"]
            assert status(client)["backend"] == "server"
        finally:
            client.close()
            wrong.close()
        # $/cancelRequest closes the HTTP request; the server cancels its engine request.
        key = spawn("--server", served.url, "--api-key", "s3cret", "--max-tokens", "1024", "--deadline-ms", "0")
        try:
            initialize(key, tmp_path)
            open_doc(key, uri, DOC)
            cancelled = served.engine.counters["finished_cancelled"]
            rid = inline(key, uri, *CURSOR)
            wait_for(lambda: served.engine.stats()["running"] >= 1)
            key.notify("$/cancelRequest", {"id": rid})
            assert key.response(rid)["error"]["code"] == CANCELLED
            wait_for(lambda: served.engine.counters["finished_cancelled"] == cancelled + 1)
        finally:
            key.close()


@pytest.mark.parametrize("argv, message", [
    (["--model", "a", "--server", "http://x"], "not allowed with argument"),
    ([], "one of the arguments --model --server is required"),
    (["--model", "a", "--api-key", "k"], "--api-key go with --server"),
    (["--server", "ftp://x"], "http:// or https:// URL"),
    (["--server", "http://x", "--api-key-file", "/nonexistent/key"], "cannot read --api-key-file"),
    (["--model", "a", "--debounce-ms", "-1"], "--debounce-ms must be >= 0"),
])
def test_bad_options_are_one_line_errors(argv, message, capsys):
    try:
        code = lsp_main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
