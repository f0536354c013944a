"""The OpenAI completions API against a real server: answers, streaming, stop strings, concurrency."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from serve_client import get, post

PROMPT = "def total(items, limit=3):\n    total = 0\n    for item in items:\n"


def test_completion_shape_and_usage(server, cold):
    r = post(server.url, "/v1/completions", {"model": "anything", "prompt": PROMPT, "max_tokens": 12,
                                             "temperature": 0, "presence_penalty": 0.5, "frequency_penalty": 0.1,
                                             "user": "someone", "best_of": 1, "logit_bias": {"5": 1}})
    assert r.status == 200, r.raw
    body = r.json
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == "tiny"
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length" and choice["text"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(server.tok.encode(PROMPT))
    assert usage["completion_tokens"] == 12 and usage["total_tokens"] == usage["prompt_tokens"] + 12
    # Greedy is repeatable (the same computation on fresh servers), and the model name sent is ignored.
    a = cold("/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "model": "x"}).json
    b = cold("/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "temperature": 0}).json
    assert a["choices"][0]["text"] == b["choices"][0]["text"] and a["model"] == "tiny"


def test_stop_strings_are_honoured(cold):
    full = cold("/v1/completions", {"prompt": PROMPT, "max_tokens": 24, "temperature": 0}).json
    text = full["choices"][0]["text"]
    stop = text[5:8]  # a piece the greedy completion is known to write
    cut = cold("/v1/completions", {"prompt": PROMPT, "max_tokens": 24, "temperature": 0,
                                   "stop": [stop, "never-written"]}).json["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert cut["text"] == text[:text.find(stop)] and stop not in cut["text"]


def test_n_choices_logprobs_and_token_prompts(server, cold):
    ids = server.tok.encode(PROMPT)
    body = post(server.url, "/v1/completions", {"prompt": [ids, ids[:-1]], "max_tokens": 6, "temperature": 0,
                                                "n": 2, "logprobs": 2}).json
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert all(c["finish_reason"] == "length" and c["text"] for c in body["choices"])
    # Token ids give what their text gives.
    by_ids = cold("/v1/completions", {"prompt": ids, "max_tokens": 6, "temperature": 0}).json
    by_text = cold("/v1/completions", {"prompt": PROMPT, "max_tokens": 6, "temperature": 0}).json
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 6
    assert "".join(lp["tokens"]) == body["choices"][0]["text"]
    assert all(v <= 0 for v in lp["token_logprobs"]) and all(len(t) == 2 for t in lp["top_logprobs"])
    assert lp["text_offset"][0] == 0
    assert body["usage"]["prompt_tokens"] == 2 * len(ids) - 1


def test_seeded_samples_repeat(cold):
    req = {"prompt": PROMPT, "max_tokens": 10, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    a = cold("/v1/completions", req).json["choices"][0]["text"]
    assert a == cold("/v1/completions", req).json["choices"][0]["text"]
    assert a != cold("/v1/completions", {**req, "seed": 8}).json["choices"][0]["text"]


def test_streaming_sse_ends_with_done(cold):
    req = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0}
    whole = cold("/v1/completions", req).json["choices"][0]["text"]
    status, events = cold("/v1/completions", {**req, "stream": True, "stream_options": {"include_usage": True}},
                          stream=True)
    assert status == 200
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == whole
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16


def test_sixteen_concurrent_requests_all_succeed(server):
    def one(i):
        return post(server.url, "/v1/completions", {"prompt": f"{PROMPT}        x = {i}\n", "max_tokens": 16,
                                                    "temperature": 0})

    alone = [one(i).json["choices"][0]["text"] for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(one, range(16)))
    assert [r.status for r in replies] == [200] * 16
    assert all(r.json["usage"]["completion_tokens"] == 16 for r in replies)
    # Batched with up to fifteen others, a greedy completion is the one it was alone, except where batched
    # arithmetic rounds differently at a near tie: at most one of the sixteen may differ (none does here).
    same = sum(r.json["choices"][0]["text"] == a for r, a in zip(replies, alone))
    assert same >= 15, same


def test_models_and_health(server):
    models = get(server.url, "/v1/models").json
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]
    assert get(server.url, "/health").json == {"status": "ok"}
