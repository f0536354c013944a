"""Fill-in-the-middle through every API gives the same text; prefix reuse; cache warm-up; models without FIM."""

from __future__ import annotations

import json
import shutil

import pytest

from codekiln.infer import for_editor
from codekiln.serve import Settings
from servers import start
from serve_client import post

PREFIX = "import math\n\n\ndef distance(p, q):\n    dx = q[0] - p[0]\n    dy = q[1] - p[1]\n    return "
SUFFIX = "\n\n\ndef midpoint(p, q):\n    return ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)\n"
N = 24


def _openai(cold, **extra):
    body = {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": N, "temperature": 0, **extra}
    return cold("/v1/completions", body).json["choices"][0]["text"]


def test_fim_is_the_same_text_through_every_api(cold):
    """The same prefix and suffix through OpenAI's suffix, llama.cpp's /infill and /completion, Continue's marker
    text and Tabby's segments: the same prompt ids, so (each on a fresh server) the same greedy text."""
    raw = _openai(cold)
    assert raw  # the random model writes N printable tokens
    # llama.cpp's /infill, streamed (raw text), with the cursor line in input_prefix and an empty `prompt`.
    infill = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": N, "temperature": 0,
              "samplers": ["temperature"]}
    status, events = cold("/infill", {**infill, "stream": True}, stream=True)
    assert status == 200
    chunks = [json.loads(e) for e in events]
    assert "".join(c["content"] for c in chunks[:-1]) == raw and chunks[-1]["stop"] is True
    # Continue's layout: FIM marker text in the prompt (this server reads it), through both of its providers.
    marked = f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"
    assert cold("/v1/completions", {"prompt": marked, "max_tokens": N, "temperature": 0}
                ).json["choices"][0]["text"] == raw
    done = cold("/completion", {"prompt": marked, "n_predict": N, "temperature": 0}).json
    assert done["content"] == raw and done["stop_type"] == "limit"
    # The editor APIs clean the same raw text the same way (Tabby asks for --editor-max-tokens, 64).
    raw64 = _openai(cold, max_tokens=64)
    infilled = cold("/infill", {**infill, "n_predict": 64}).json
    assert infilled["content"] == for_editor(raw64, PREFIX, SUFFIX, truncated=True) != ""
    tabby = cold("/v1/completions", {"language": "python", "segments": {"prefix": PREFIX, "suffix": SUFFIX}}).json
    assert tabby["choices"][0]["text"] == for_editor(raw64, PREFIX, SUFFIX, lang="python", truncated=True) != ""


def test_infill_prompt_follows_the_middle_token(server, cold):
    """llama.cpp's `prompt` (the cursor line) goes after <|fim_middle|>: the model continues it, so the answer is
    the completion of the FIM prompt of the lines before it, with the line after the middle token."""
    head, line = PREFIX.rsplit("\n", 1)
    head += "\n"
    body = {"input_prefix": head, "input_suffix": SUFFIX, "prompt": line, "n_predict": N, "temperature": 0,
            "stream": True}
    _, events = cold("/infill", body, stream=True)
    streamed = "".join(json.loads(e)["content"] for e in events[:-1])
    tok = server.tok
    ids = [tok.special_ids["<|fim_prefix|>"], *tok.encode(head), tok.special_ids["<|fim_suffix|>"],
           *tok.encode(SUFFIX), tok.special_ids["<|fim_middle|>"], *tok.encode(line)]
    direct = cold("/v1/completions", {"prompt": ids, "max_tokens": N, "temperature": 0}).json
    assert streamed == direct["choices"][0]["text"] != ""


def test_prefix_reuse_gives_the_cold_answer(server, cold):
    """Requests that extend the previous one (an editor typing) reuse its cached keys and values and give the
    greedy text of a cold run of the same prompt. Reuse computes the rest of the prompt apart, which may round
    differently and flip a near tie: one answer in nine may differ (none does with this model)."""
    fields = {"input_suffix": SUFFIX, "n_predict": 16, "temperature": 0, "samplers": ["temperature"]}
    typed = PREFIX + "math.hypot(dx, dy)"
    post(server.url, "/infill", {**fields, "input_prefix": typed[:len(PREFIX)]})
    same, reused, ends = 0, 0, range(len(PREFIX) + 2, len(typed) + 1, 2)
    for end in ends:  # keystrokes of two characters
        warm = post(server.url, "/infill", {**fields, "input_prefix": typed[:end]}).json
        fresh = cold("/infill", {**fields, "input_prefix": typed[:end]}).json
        reused += warm["timings"]["cache_n"] > fresh["timings"]["cache_n"]
        assert warm["tokens_cached"] == warm["tokens_evaluated"] + warm["tokens_predicted"]
        same += warm["content"] == fresh["content"]
    assert len(ends) == 9 and reused == 9 and same >= 8, (reused, same)


def test_warm_up_fills_the_cache(server):
    """n_predict 0 (llama.vim's ring update) succeeds with an empty answer and prefills the repository chunks,
    so the completion that follows reuses them."""
    extra = [{"filename": "src/shapes.py", "text": "class Point:\n    def __init__(self, x, y):\n        self.x = x\n"
                                                    "        self.y = y\n" * 3, "time": [1, 2]}]
    warm = post(server.url, "/infill", {"input_prefix": "", "input_suffix": "", "input_extra": extra, "prompt": "",
                                        "n_predict": 0, "t_max_prompt_ms": 1, "t_max_predict_ms": 1,
                                        "response_fields": [""]})
    assert warm.status == 200 and warm.json == {}
    real = post(server.url, "/infill", {"input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": extra,
                                        "n_predict": 8, "temperature": 0}).json
    extra_tokens = len(server.tok.encode("src/shapes.py\n")) + len(server.tok.encode(extra[0]["text"])) + 1
    assert real["timings"]["cache_n"] >= extra_tokens


@pytest.fixture(scope="module")
def no_fim_run(serve_run, tmp_path_factory):
    """The same model with a tokenizer that declares no FIM tokens (like some imported models)."""
    run = tmp_path_factory.mktemp("nofim") / "run"
    shutil.copytree(serve_run, run)
    config = run / "tokenizer" / "tokenizer_config.json"
    record = json.loads(config.read_text()) if config.is_file() else {}
    record["codekiln"] = {"special_tokens": {"<|endoftext|>": "<|endoftext|>"}}
    config.write_text(json.dumps(record))
    return run


def test_fim_without_fim_tokens_is_a_clear_400(no_fim_run):
    with start(no_fim_run, Settings(model_name="nofim", fim_markers_in_prompt=True)) as s:
        assert not s.tok.has_fim
        for path, body in [("/v1/completions", {"prompt": PREFIX, "suffix": SUFFIX}),
                           ("/v1/completions", {"prompt": f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"}),
                           ("/v1/completions", {"segments": {"prefix": PREFIX, "suffix": SUFFIX}}),
                           ("/infill", {"input_prefix": PREFIX, "input_suffix": SUFFIX})]:
            r = post(s.url, path, body)
            assert r.status == 400, (path, r.raw)
            assert "fill-in-the-middle" in r.json["error"]["message"]
        # Plain completion still works, and so does Tabby at the end of a file (no suffix).
        assert post(s.url, "/v1/completions", {"prompt": PREFIX, "max_tokens": 4}).status == 200
        assert post(s.url, "/v1/completions", {"segments": {"prefix": PREFIX}}).status == 200
