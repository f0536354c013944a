"""The request bodies llama.vim, llama.vscode, Tabby's agent and Continue send (recorded from their source in
fixtures/editors/) are answered with every field each editor reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from codekiln.serve import Settings
from servers import start
from serve_client import request, sse

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "editors").glob("*.json"))
# Reads no answer of a working server carries, and why.
ABSENT = {
    "timings/truncated": "llama.vim's typo for the `truncated` it asked for; llama.cpp never writes this key",
    "finish_reason": "Continue skips chunks whose top-level finish_reason is 'eos'; OpenAI's chunks have none",
    "error.message": "read from error answers only",
    "chat_model": "Tabby leaves it out when no chat model is served",
}


def _path(path: str) -> list:
    """A `reads` path as keys and indices: '.' nests, [i] indexes, '/' is part of a key."""
    steps = []
    for part in path.split("."):
        m = re.fullmatch(r"([^\[]*)((?:\[\w+\])*)", part)
        if m.group(1):
            steps.append(m.group(1))
        steps += [int(i) if i.isdigit() else i for i in re.findall(r"\[(\w+)\]", m.group(2))]
    return steps


def _found(obj, steps) -> bool:
    for step in steps:
        if step == "i":  # every element of an array
            return isinstance(obj, list) and bool(obj) and all(_found(o, steps[1:]) for o in obj)
        if isinstance(step, int):
            if not isinstance(obj, list) or len(obj) <= step:
                return False
        elif not isinstance(obj, dict) or step not in obj:
            return False
        obj = obj[step]
    return True


def _check_reads(fixture: dict, answers: list) -> None:
    for read in fixture["reads"]:
        if read in ABSENT:
            continue
        steps = _path(read)
        ok = [_found(a, steps) for a in answers]
        if isinstance(answers[0], list) and steps[:1] != ["i"]:
            ok = [all(_found(o, steps) for o in a) for a in answers]  # an array answer: each element
        assert all(ok), f"{fixture['path']}: the answer lacks {read!r}: {answers[0]}"


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_editor_request_is_answered(server, path):
    fixture = json.loads(path.read_text())
    headers = {k: v for k, v in fixture["headers"].items() if k.lower() != "content-type"}
    if "example_response_sse" in fixture:
        status, events = sse(server.url, fixture["path"], fixture["body"], headers)
        assert status == 200, events
        answers = [json.loads(e) for e in events if e != "[DONE]"]
        if fixture["path"] == "/v1/completions":
            assert events[-1] == "[DONE]"
            answers = [a for a in answers if a["choices"]]
        assert answers and not any("error" in a for a in answers)
        _check_reads(fixture, answers[:-1] if fixture["path"] == "/completion" else answers)
        return
    reply = request(server.url, fixture["method"], fixture["path"], fixture["body"], headers)
    assert reply.status == 200, reply.raw
    if fixture["example_response"] is None:  # Tabby's events: an empty body
        assert reply.raw == b""
        return
    answer = reply.json
    assert answer is not None, reply.raw
    _check_reads(fixture, [answer])
    if "llama.vim" in fixture["source"]["repo"] and fixture["reads"]:
        # Vim reads the answer line by line and matches "content"\s*:" with no space before the quote.
        assert b"\n" not in reply.raw.strip() and re.search(rb'"content"\s*:"', reply.raw)
    if fixture["path"] == "/v1/health":
        assert isinstance(answer["model"], str) and answer["model"]
        major, minor = map(int, re.search(r"(\d+)\.(\d+)\.\d+", answer["version"]["git_describe"]).groups())
        assert (major, minor) >= (0, 9)  # the agent asks for /v1beta/server_setting from 0.9.0 on


def test_editor_fixtures_exist():
    names = {p.stem.split("_")[0] for p in FIXTURES}
    assert {"llama", "tabby", "continue"} <= names


def test_editor_headers_against_a_server_with_keys(serve_run):
    """With API keys, each editor's own Authorization header decides: a configured key passes; llama.vim's
    empty 'Bearer ', Continue's 'Bearer undefined' and no header at all get 401 (the editors show nothing)."""
    keys = ("auth_0123456789abcdef", "example-api-key")
    with start(serve_run, Settings(model_name="keyed", api_keys=keys, fim_markers_in_prompt=True)) as s:
        for path in FIXTURES:
            fixture = json.loads(path.read_text())
            auth = fixture["headers"].get("Authorization", "")
            reply = request(s.url, fixture["method"], fixture["path"], fixture["body"], fixture["headers"])
            if fixture["path"] == "/v1/health" or auth.removeprefix("Bearer ") in keys:
                assert reply.status == 200, (path.name, reply.raw)
            else:
                assert reply.status == 401, (path.name, reply.raw)
                assert reply.json["error"]["type"] == "authentication_error"
