"""Overload, cancellation by disconnect, deadlines, metrics, and a bounded soak with random disconnects."""

from __future__ import annotations

import random
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from codekiln.serve import Settings
from servers import start
from serve_client import get, post, send_and_drop, wait_idle

PROMPT = "def total(items, limit=3):\n    total = 0\n    for item in items:\n"
LONG = {"prompt": PROMPT, "max_tokens": 128, "temperature": 0, "deadline_ms": 0}  # the most this context allows


def _metrics(url: str) -> dict[str, float]:
    """Every sample of /metrics as 'name{labels}' -> value (parsed by prometheus_client's own parser)."""
    out = {}
    for family in text_string_to_metric_families(get(url, "/metrics").raw.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_overload_is_429_with_retry_after(serve_run):
    with start(serve_run, Settings(model_name="small", retry_after_s=2), max_batch=1, max_queue=1) as s:
        with ThreadPoolExecutor(10) as pool:
            replies = list(pool.map(lambda _: post(s.url, "/v1/completions", LONG), range(10)))
        statuses = sorted(r.status for r in replies)
        assert set(statuses) == {200, 429} and statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
        busy = next(r for r in replies if r.status == 429)
        assert busy.headers["retry-after"] == "2" and busy.json["error"]["type"] == "rate_limit_error"
        wait_idle(s.engine)
        assert post(s.url, "/v1/completions", {**LONG, "max_tokens": 4}).status == 200
        assert _metrics(s.url)["codekiln_rejected_requests_total"] == statuses.count(429)


def test_shutting_down_is_503(serve_run):
    with start(serve_run, Settings(model_name="closing")) as s:
        s.engine.stop()
        reply = post(s.url, "/v1/completions", {**LONG, "max_tokens": 2})
        assert reply.status == 503 and reply.json["error"]["type"] == "service_unavailable"


def test_disconnect_mid_stream_frees_the_sequence(server):
    wait_idle(server.engine)
    before = server.engine.stats().get("finished_cancelled", 0)
    gone = _metrics(server.url).get('codekiln_cancellations_total{endpoint="/v1/completions"}', 0)
    first = send_and_drop(server.url, "/v1/completions", {**LONG, "stream": True}, read_first=True)
    assert b"200 OK" in first and b"data: " in first
    stats = wait_idle(server.engine, timeout=5)
    assert stats["finished_cancelled"] == before + 1
    assert _metrics(server.url)['codekiln_cancellations_total{endpoint="/v1/completions"}'] == gone + 1
    assert _metrics(server.url)["codekiln_active_sequences"] == 0


def test_disconnect_while_waiting_cancels(server):
    """A non-streaming client that goes away is noticed by polling, and its requests leave the batch: here four
    sampled completions of 128 tokens (a few hundred decode steps' work), dropped as soon as they run.
    Sampling from the top 5 keeps out the end token, whose logit (zero) is never among them."""
    wait_idle(server.engine)
    before = server.engine.stats().get("finished_cancelled", 0)
    send_and_drop(server.url, "/infill", {"input_prefix": PROMPT, "input_suffix": "\n", "n_predict": 128, "n_cmpl": 4,
                                          "temperature": 1.0, "top_k": 5, "samplers": ["top_k", "temperature"],
                                          "seed": 3, "t_max_predict_ms": 60_000},
                  until=lambda: server.engine.stats()["running"] > 0)
    stats = wait_idle(server.engine, timeout=5)
    assert stats["finished_cancelled"] == before + 4


def test_deadline_is_honoured(server):
    full = post(server.url, "/infill", {"input_prefix": PROMPT, "n_predict": 128, "temperature": 0,
                                        "t_max_predict_ms": 60_000}).json
    assert full["tokens_predicted"] == 128
    whole_ms = full["timings"]["prompt_ms"] + full["timings"]["predicted_ms"]
    half = max(1, round(whole_ms / 8))  # llama.cpp's budgets are whole milliseconds
    budget = 2 * half
    deadlines = _metrics(server.url).get('codekiln_engine_requests_total{finish_reason="deadline"}', 0)
    t0 = time.monotonic()
    cut = post(server.url, "/infill", {"input_prefix": PROMPT, "n_predict": 128, "temperature": 0,
                                       "t_max_prompt_ms": half, "t_max_predict_ms": half}).json
    elapsed_ms = (time.monotonic() - t0) * 1000
    assert cut["stop_type"] == "limit" and cut["tokens_predicted"] < 128
    # The budget runs from submission; one decode step may finish after it. 500 ms of slack covers HTTP on a
    # loaded machine.
    assert cut["timings"]["prompt_ms"] + cut["timings"]["predicted_ms"] <= budget + whole_ms / 128 * 4 + 50
    assert elapsed_ms <= budget + 500
    assert _metrics(server.url)['codekiln_engine_requests_total{finish_reason="deadline"}'] == deadlines + 1
    # The OpenAI endpoint takes the same budget as deadline_ms (codekiln's addition) and says "length".
    reply = post(server.url, "/v1/completions", {**LONG, "deadline_ms": budget}).json
    assert reply["choices"][0]["finish_reason"] == "length" and reply["usage"]["completion_tokens"] < 128


def test_server_default_deadline(serve_run):
    with start(serve_run, Settings(model_name="hurried"), default_deadline_ms=1.0) as s:
        reply = post(s.url, "/v1/completions", {**LONG, "deadline_ms": None}).json
        assert reply["usage"]["completion_tokens"] < 128


def test_metrics_parse_and_count(server):
    post(server.url, "/v1/completions", {"prompt": PROMPT, "max_tokens": 8, "temperature": 0})
    before = _metrics(server.url)
    for kind in ("view", "view", "select", "dismiss"):
        event = {"type": kind, "completion_id": "cmpl-x", "choice_index": 0}
        assert post(server.url, "/v1/events", event).status == 200
    post(server.url, "/infill", {"input_prefix": PROMPT, "n_predict": 8, "temperature": 0})
    m = _metrics(server.url)
    for name in ("codekiln_request_latency_seconds_count{endpoint=\"/infill\"}",
                 "codekiln_time_to_first_token_seconds_count{endpoint=\"/infill\"}",
                 "codekiln_completion_tokens_per_second_count{endpoint=\"/infill\"}",
                 "codekiln_queue_depth", "codekiln_active_sequences", "codekiln_prefix_cache_hit_ratio",
                 "codekiln_prefix_cache_hits_total", "codekiln_completion_acceptance_ratio", "codekiln_max_batch",
                 'codekiln_http_requests_total{endpoint="/v1/events",status="200"}'):
        assert name in m, name
    for kind, count in (("view", 2), ("select", 1), ("dismiss", 1)):
        name = f'codekiln_completion_events_total{{type="{kind}"}}'
        assert m[name] - before.get(name, 0) == count
    assert 0 < m["codekiln_completion_acceptance_ratio"] <= 1
    assert 0 < m["codekiln_prefix_cache_hit_ratio"] < 1  # the infill shared a prefix with earlier requests
    assert m['codekiln_completion_tokens_total{endpoint="/infill"}'] >= 8 + before.get(
        'codekiln_completion_tokens_total{endpoint="/infill"}', 0)


def _rss_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def test_soak_with_random_disconnects(server):
    """Three hundred short requests over all endpoints, 8 at a time, a fifth of them dropped by their client:
    afterwards no sequence is left in the engine and the process's peak memory grew by under 64 MB."""
    rng = random.Random(0)
    bodies = [("/v1/completions", {"prompt": PROMPT + f"    x{i}", "max_tokens": 6, "temperature": 0.5, "seed": i})
              for i in range(20)]
    bodies += [("/infill", {"input_prefix": PROMPT, "input_suffix": f"\nreturn {i}\n", "n_predict": 6})
               for i in range(20)]
    bodies += [("/v1/completions", {"segments": {"prefix": PROMPT + f"    y{i}", "suffix": "\n"}}) for i in range(20)]
    jobs = [(rng.choice(bodies), rng.random() < 0.2, rng.random() < 0.3) for _ in range(300)]

    def one(job):
        (path, body), drop, stream = job
        if stream and path == "/v1/completions" and "prompt" in body:
            body = {**body, "stream": True}
        if drop:
            send_and_drop(server.url, path, body, wait_s=rng.random() * 0.01)
            return None
        return post(server.url, path, body).status

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, jobs[:60]))  # warm: allocator pools and caches reach their working size
        wait_idle(server.engine)
        start_mb = _rss_peak_mb()
        statuses = list(pool.map(one, jobs[60:]))
    stats = wait_idle(server.engine, timeout=10)
    assert all(s == 200 for s in statuses if s is not None), statuses
    assert stats["queued"] == stats["prefilling"] == stats["running"] == 0
    assert _metrics(server.url)["codekiln_active_sequences"] == 0
    assert _rss_peak_mb() - start_mb < 64
    assert post(server.url, "/v1/completions", {"prompt": PROMPT, "max_tokens": 4}).status == 200


@pytest.mark.parametrize("budget", [0])
def test_no_deadline_runs_to_max_tokens(server, budget):
    reply = post(server.url, "/v1/completions", {**LONG, "deadline_ms": budget}).json
    assert reply["usage"]["completion_tokens"] == 128 and reply["choices"][0]["finish_reason"] == "length"
