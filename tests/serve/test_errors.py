"""Every bad input gets its 4xx and a JSON error a client can show; the server stays healthy; API keys."""

from __future__ import annotations

import pytest

from codekiln.serve import Settings
from servers import start
from serve_client import get, post, request

OK = {"prompt": "def f(x):\n", "max_tokens": 2}
BAD = [
    # (path, body or raw bytes, status)
    ("/v1/completions", b"{not json", 400),
    ("/v1/completions", b"", 400),
    ("/v1/completions", b"[1, 2]", 400),
    ("/v1/completions", b"\xff\xfe{}", 400),
    ("/v1/completions", b'{"prompt": "x", "temperature": NaN}', 400),
    ("/v1/completions", b"[" * 60_000, 400),
    ("/v1/completions", {}, 422),
    ("/v1/completions", {"prompt": 5}, 422),
    ("/v1/completions", {"prompt": "x", "max_tokens": -1}, 422),
    ("/v1/completions", {"prompt": "x", "max_tokens": "many"}, 422),
    ("/v1/completions", {"prompt": "x", "top_p": 1.5}, 422),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 422),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, 422),
    ("/v1/completions", {"prompt": "x", "n": 0}, 422),
    ("/v1/completions", {"prompt": "x", "logprobs": 99}, 422),
    ("/v1/completions", {"prompt": "x", "echo": True}, 422),
    ("/v1/completions", {"prompt": "x", "stop": ["a"] * 100}, 422),
    ("/v1/completions", {"prompt": "x", "stop": 3}, 422),
    ("/v1/completions", {"prompt": "x", "deadline_ms": -5}, 422),
    ("/v1/completions", {"prompt": ""}, 400),
    ("/v1/completions", {"prompt": "", "suffix": ""}, 400),
    ("/v1/completions", {"prompt": []}, 400),
    ("/v1/completions", {"prompt": [[]]}, 400),
    ("/v1/completions", {"prompt": [1_000_000]}, 400),
    ("/v1/completions", {"prompt": [-1]}, 400),
    ("/v1/completions", {"prompt": [1, 2], "suffix": "x"}, 400),
    ("/v1/completions", {"segments": {"prefix": "", "suffix": ""}}, 400),
    ("/v1/completions", {"segments": {"prefix": 5}}, 422),
    ("/v1/completions", {"segments": "x"}, 422),
    ("/v1/completions", {"segments": {"prefix": "x"}, "temperature": "hot"}, 422),
    ("/infill", {"input_prefix": 5}, 422),
    ("/infill", {"input_prefix": "x", "n_predict": -5}, 422),
    ("/infill", {"input_prefix": "x", "top_p": 2}, 422),
    ("/infill", {"input_prefix": "x", "input_extra": [{"text": 3}]}, 422),
    ("/infill", {"input_prefix": "x", "n_cmpl": 99}, 400),
    ("/infill", {"n_predict": 10}, 400),
    ("/completion", {"prompt": ""}, 400),
    ("/completion", {"n_predict": 3}, 422),
    ("/v1/events", {"type": "bogus", "completion_id": "cmpl-1"}, 422),
    ("/v1/events", {}, 422),
]


@pytest.mark.parametrize("path,body,status", BAD, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(BAD)])
def test_bad_input_gets_its_4xx(server, path, body, status):
    raw = body if isinstance(body, bytes) else None
    reply = request(server.url, "POST", path, None if raw is not None else body, raw=raw)
    assert reply.status == status, reply.raw
    error = reply.json["error"]
    assert isinstance(error["message"], str) and error["message"] and error["type"] == "invalid_request_error"


def test_server_is_healthy_after_bad_input(server):
    for path, body, _ in BAD:
        request(server.url, "POST", path, None if isinstance(body, bytes) else body,
                raw=body if isinstance(body, bytes) else None)
    assert get(server.url, "/health").status == 200
    assert post(server.url, "/v1/completions", OK).status == 200
    stats = server.engine.stats()
    assert stats.get("finished_error", 0) == 0


def test_too_large_body_is_413(server):
    big = {"prompt": "x" * (65 * 1024)}
    reply = post(server.url, "/v1/completions", big)
    assert reply.status == 413 and "bytes" in reply.json["error"]["message"]
    # Without a Content-Length (chunked), the limit holds while reading.
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", "/v1/completions", body=iter([b'{"prompt": "', b"x" * (70 * 1024), b'"}']),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()
    assert post(server.url, "/v1/completions", OK).status == 200


def test_unknown_routes_and_methods_are_json(server):
    reply = get(server.url, "/nowhere")
    assert reply.status == 404 and reply.json["error"]["message"]
    reply = get(server.url, "/v1/completions")
    assert reply.status == 405 and reply.json["error"]["message"]


def test_auth_on_and_off(serve_run, server):
    # Off: any Authorization header (llama.vim's empty one, Continue's "Bearer undefined") is ignored.
    for auth in ("Bearer ", "Bearer undefined", "Basic abc"):
        assert post(server.url, "/v1/completions", OK, {"Authorization": auth}).status == 200
    with start(serve_run, Settings(model_name="keyed", api_keys=("k-one", "k-two"))) as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer k-one-and-more"},
                        {"Authorization": "k-one"}, {"Authorization": "Bearer "}):
            reply = post(s.url, "/v1/completions", OK, headers)
            assert reply.status == 401, headers
            assert reply.json["error"]["type"] == "authentication_error"
            assert reply.headers.get("www-authenticate") == "Bearer"
        for key in ("k-one", "k-two"):
            assert post(s.url, "/v1/completions", OK, {"Authorization": f"Bearer {key}"}).status == 200
        assert get(s.url, "/health").status == 200
        assert get(s.url, "/v1/health").status == 200
        assert get(s.url, "/metrics").status == 401
        assert get(s.url, "/metrics", {"Authorization": "bearer k-two"}).status == 200


FIELDS = ["prompt", "suffix", "max_tokens", "temperature", "top_p", "n", "stop", "stream", "seed", "logprobs", "echo",
          "segments", "language", "input_prefix", "input_suffix", "input_extra", "n_predict", "n_indent", "samplers",
          "t_max_prompt_ms", "t_max_predict_ms", "response_fields", "n_cmpl", "type", "completion_id", "deadline_ms",
          "top_k", "stream_options", "model"]


def _value(rng, depth=0):
    kinds = ["int", "float", "str", "none", "bool", "list", "dict"] if depth < 2 else ["int", "str", "none"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, 1, -1, 3, 2**31, -(2**63), 10**30, 127])
    if kind == "float":
        return rng.choice([0.0, 0.5, -0.5, 1.0, 1e308, -1e-308, 2.5])
    if kind == "str":
        return rng.choice(["", "x", "def f():\n", "<fim_prefix>a<fim_suffix>b<fim_middle>", "\u0000\ud7ff", "view"])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(FIELDS + ["prefix", "suffix", "text", "filename"]): _value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def test_random_bodies_never_give_500(server):
    """Two hundred bodies of random fields and types over every endpoint: 2xx or 4xx, never a 5xx."""
    import random

    rng = random.Random(1)
    for _ in range(200):
        path = rng.choice(["/v1/completions", "/infill", "/completion", "/v1/events"])
        body = {rng.choice(FIELDS): _value(rng) for _ in range(rng.randint(1, 6))}
        if rng.random() < 0.5:
            body["prompt" if path != "/infill" else "input_prefix"] = "def f(x):\n"
        if "max_tokens" not in body:
            body["max_tokens"] = 2
        body.setdefault("n_predict", 2)
        reply = post(server.url, path, body)
        assert reply.status < 500, (path, body, reply.raw)
        if reply.status >= 400:
            assert reply.json["error"]["message"], (path, body, reply.raw)
    assert get(server.url, "/health").status == 200


def test_tolerated_values(server):
    """Values other servers accept are accepted: a negative seed, fractional llama.cpp budgets."""
    assert post(server.url, "/v1/completions", {**OK, "seed": -5, "temperature": 1}).status == 200
    assert post(server.url, "/infill", {"input_prefix": "x", "n_predict": 2, "t_max_predict_ms": 250.5}).status == 200
