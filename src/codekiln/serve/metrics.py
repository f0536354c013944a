"""Prometheus metrics of one server, in a registry of its own (two apps in a process never share counters).

Latency, time to first token and tokens/s are histograms observed per request; the engine's queue depth,
active sequences, prefix-cache hit rate and finish reasons are read from Engine.stats() at scrape time.
The names are listed in docs/serving.md.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from codekiln.infer import Result

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RATE_BUCKETS = (5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200)


class Metrics:
    """The server's metrics; `render()` is the /metrics body."""

    def __init__(self, engine):
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram("codekiln_request_latency_seconds", "HTTP request latency, to the last byte",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("codekiln_http_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.ttft = Histogram("codekiln_time_to_first_token_seconds", "submission to the first generated token",
                              ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens_per_s = Histogram("codekiln_completion_tokens_per_second", "a completion's decode speed",
                                      ["endpoint"], buckets=RATE_BUCKETS, registry=r)
        self.completion_tokens = Counter("codekiln_completion_tokens", "tokens generated for clients",
                                         ["endpoint"], registry=r)
        self.cancellations = Counter("codekiln_cancellations", "requests cancelled because the client went away",
                                     ["endpoint"], registry=r)
        self.events = Counter("codekiln_completion_events", "editor events: view (shown), select (accepted), dismiss",
                              ["type"], registry=r)
        self._shown = self._accepted = 0
        r.register(_EngineCollector(engine, self))

    def event(self, kind: str) -> None:
        """Count an editor event (Tabby's view, select or dismiss)."""
        self.events.labels(kind).inc()
        self._shown += kind == "view"
        self._accepted += kind == "select"

    def observe(self, endpoint: str, results: list[Result]) -> None:
        """Record finished completions: time to first token, decode speed, tokens."""
        for res in results:
            if res is None or res.finish_reason in ("cancelled", "shutdown", "error"):
                continue
            if res.completion_tokens:
                self.ttft.labels(endpoint).observe(res.ttft_ms / 1000)
                self.completion_tokens.labels(endpoint).inc(res.completion_tokens)
                if res.predict_ms > 0 and res.completion_tokens > 1:
                    self.tokens_per_s.labels(endpoint).observe((res.completion_tokens - 1) / (res.predict_ms / 1000))

    def acceptance(self) -> float:
        """Accepted completions over shown ones (0 before any was shown)."""
        return self._accepted / self._shown if self._shown else 0.0

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _EngineCollector:
    """Gauges and counters read from the engine when Prometheus scrapes."""

    def __init__(self, engine, metrics: Metrics):
        self.engine, self.metrics = engine, metrics

    def describe(self):
        return []

    def collect(self):
        s = self.engine.stats()
        yield _gauge("codekiln_queue_depth", "requests waiting for a batch slot", s.get("queued", 0))
        yield _gauge("codekiln_active_sequences", "sequences prefilling or decoding",
                     s.get("prefilling", 0) + s.get("running", 0))
        yield _gauge("codekiln_max_batch", "sequences decoded together at most", self.engine.max_batch)
        prompt, cached = s.get("prompt_tokens", 0), s.get("cached_tokens", 0)
        yield _gauge("codekiln_prefix_cache_hit_ratio", "prompt tokens reused from the prefix cache over all prompt "
                     "tokens", cached / prompt if prompt else 0.0)
        yield _counter("codekiln_prefix_cache_hits", "requests that reused a cached prefix", s.get("prefix_hits", 0))
        yield _counter("codekiln_prompt_tokens", "prompt tokens submitted to the engine", prompt)
        yield _counter("codekiln_cached_prompt_tokens", "prompt tokens whose keys and values were reused", cached)
        yield _counter("codekiln_rejected_requests", "requests refused because the queue was full",
                       s.get("rejected", 0))
        finished = CounterMetricFamily("codekiln_engine_requests", "engine requests by how they finished",
                                       labels=["finish_reason"])
        for key, value in sorted(s.items()):
            if key.startswith("finished_"):
                finished.add_metric([key[len("finished_"):]], value)
        yield finished
        yield _gauge("codekiln_completion_acceptance_ratio", "accepted (select) over shown (view) editor completions",
                     self.metrics.acceptance())


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
