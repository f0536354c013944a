"""The serving engine: continuous batching over KV-cache slots, on a thread of its own.

    engine = Engine(model, tok, max_batch=8)
    engine.start()
    handle = engine.submit(Request(prompt=ids, max_tokens=32, deadline_ms=500), on_event=print)
    result = handle.wait()          # or engine.complete(request)
    engine.stop()

One loop runs on the engine's thread. Each turn it admits waiting requests while slots are free, drops
cancelled and expired ones, runs one prefill chunk of a joining request (its first token is sampled
right away: that is the time to first token), then one decode step of every running sequence together.
Requests therefore join and leave the running batch between decode steps, and one that is cancelled
(an editor closed the request) leaves within one step.

Each request samples with its own settings and its own seeded generator (codekiln.infer.sampling), so a
seeded sample does not depend on the batch it ran in, as long as the logits agree: a batched matrix
product may round differently from a single one, which can flip a near tie.

Prefix reuse: a finished sequence's keys and values stay in its slot (SlotCache). A new request takes the
free slot that shares the longest prefix of tokens with its prompt and computes only the rest; with no
match it takes the least recently used slot. Memory is the slot count times the context, fixed at start.

The waiting queue is bounded: `submit` raises `Overloaded` past it, so memory and latency stay bounded.
A request's `deadline_ms` (or the engine's default) ends its generation with finish_reason "deadline";
what it wrote so far is returned, and the caller cuts it to a usable completion (postprocess.for_editor).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from codekiln.errors import UserError
from codekiln.infer.postprocess import find_stop
from codekiln.infer.sampling import filter_logits, generators
from codekiln.infer.slots import SlotCache, common_prefix

log = logging.getLogger("codekiln.engine")

PREFILL_CHUNK = 256  # prompt tokens per prefill forward: bounds how long one joining request stalls the others
FINISH_REASONS = ("stop", "length", "eos", "deadline", "cancelled", "shutdown", "error")


class Overloaded(Exception):
    """The waiting queue is full; the caller should answer 429 with Retry-After."""


class ShuttingDown(Exception):
    """The engine no longer accepts requests; the caller should answer 503."""


@dataclass
class Request:
    """One completion to run: prompt token ids and how to sample.

    `end_ids`: tokens that end the completion (None: every special token of the tokenizer).
    `deadline_ms`: wall-clock budget from submission (None: the engine's default; 0: none).
    `logprobs`: None, or how many alternatives to report with each token's log-probability.
    """

    prompt: list[int]
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    end_ids: frozenset[int] | None = None
    deadline_ms: float | None = None
    logprobs: int | None = None


@dataclass
class TokenInfo:
    """A generated token's log-probability and the most likely alternatives at its step."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Result:
    """A finished request."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int = 0  # prompt tokens whose keys and values were reused
    queued_ms: float = 0.0
    prompt_ms: float = 0.0  # admission to the first token (prefill)
    ttft_ms: float = 0.0  # submission to the first token
    predict_ms: float = 0.0  # first token to the end
    total_ms: float = 0.0
    logprobs: list[TokenInfo] = field(default_factory=list)
    error: str = ""

    @property
    def completion_tokens(self) -> int:
        """Tokens generated (the end token excluded)."""
        return len(self.token_ids)


@dataclass
class Event:
    """What the engine reports while a request runs: a piece of new text ("delta") or the end ("done")."""

    kind: str
    text: str = ""
    token: TokenInfo | None = None
    result: Result | None = None


class Handle:
    """A submitted request: wait for its result, or cancel it (it leaves the batch within one step)."""

    def __init__(self, rid: int, request: Request, on_event: Callable[[Event], None] | None):
        self.id = rid
        self.request = request
        self.on_event = on_event
        self.cancelled = False
        self.result: Result | None = None
        self._done = threading.Event()

    def cancel(self) -> None:
        """Ask the engine to drop this request; it finishes with finish_reason "cancelled"."""
        self.cancelled = True

    def wait(self, timeout: float | None = None) -> Result:
        """Block until the request finishes; its Result."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        return self.result

    @property
    def done(self) -> bool:
        """Whether the request has finished."""
        return self._done.is_set()


class _Seq:
    """A request the engine has admitted: its slot, sampling state and the text so far."""

    def __init__(self, handle: Handle, submitted: float, deadline: float, end_ids: frozenset[int]):
        self.handle, self.req = handle, handle.request
        self.submitted, self.deadline, self.end_ids = submitted, deadline, end_ids
        self.admitted = self.first = 0.0
        self.slot = -1
        self.fed = 0  # prompt tokens in the slot
        self.cached = 0
        self.pending = -1  # the last sampled token, fed at the next decode step
        self.tokens: list[int] = []
        self.text = ""
        self.sent = 0  # characters of text already reported
        self.infos: list[TokenInfo] = []
        self.gen = generators(self.req.seed, 1)[0] if self.req.temperature > 0 else None


class Engine:
    """Continuous batching for one model: see the module docstring."""

    def __init__(self, model, tok, *, max_batch: int = 8, max_queue: int | None = None, context: int | None = None,
                 cache_slots: int | None = None, default_deadline_ms: float | None = None,
                 threads: int | None = None):
        if max_batch < 1:
            raise UserError(f"max_batch must be >= 1, not {max_batch}")
        self.model, self.tok = model, tok
        self.max_batch = max_batch
        self.max_queue = 4 * max_batch if max_queue is None else max_queue
        self.context = min(model.cfg.context, context or model.cfg.context)
        if self.context < 2:
            raise UserError(f"context must be at least 2 tokens, not {self.context}")
        extra = max_batch if cache_slots is None else cache_slots
        self.cache = SlotCache.for_model(model, max_batch + extra, self.context)
        self.default_deadline_ms = default_deadline_ms
        self.threads = threads
        self.special = frozenset(tok.special_ids.values())
        self.vocab = model.cfg.vocab_size
        self._owner: list[_Seq | None] = [None] * self.cache.slots
        self._freed = [0.0] * self.cache.slots  # when each slot last held a sequence (LRU)
        self._queue: collections.deque[_Seq] = collections.deque()
        self._prefilling: list[_Seq] = []
        self._running: list[_Seq] = []  # running[i] owns slot i
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._accepting = True
        self._stop = False
        self.counters = collections.Counter()  # requests, finished_<reason>, prompt_tokens, cached_tokens, ...

    # Public API.
    def start(self) -> "Engine":
        """Start the engine's thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="codekiln-engine", daemon=True)
            self._thread.start()
        return self

    def check(self, request: Request) -> None:
        """A UserError when the request cannot run on this engine (the server answers 400)."""
        if not request.prompt:
            raise UserError("the prompt is empty; give at least one token")
        if request.max_tokens < 0:
            raise UserError(f"max_tokens must be >= 0, not {request.max_tokens}")
        if request.temperature < 0 or not math.isfinite(request.temperature):
            raise UserError(f"temperature must be a finite number >= 0, not {request.temperature}")
        if not 0.0 < request.top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1], not {request.top_p}")
        if request.top_k < 0:
            raise UserError(f"top_k must be >= 0, not {request.top_k}")
        if request.logprobs is not None and not 0 <= request.logprobs <= 20:
            raise UserError(f"logprobs must be between 0 and 20, not {request.logprobs}")
        if len(request.prompt) + request.max_tokens > self.context:
            raise UserError(f"the prompt has {len(request.prompt)} tokens; with max_tokens={request.max_tokens} "
                            f"that is past the served context of {self.context} tokens")
        if min(request.prompt) < 0 or max(request.prompt) >= self.vocab:
            raise UserError(f"the prompt holds a token id outside the model's vocabulary of {self.vocab}")

    def submit(self, request: Request, on_event: Callable[[Event], None] | None = None) -> Handle:
        """Queue a request; its Handle. Raises UserError (bad request), Overloaded (queue full) or
        ShuttingDown. `on_event` is called on the engine's thread with each Event: keep it short."""
        self.check(request)
        handle = Handle(next(self._ids), request, on_event)
        now = time.monotonic()
        budget = self.default_deadline_ms if request.deadline_ms is None else request.deadline_ms
        deadline = now + budget / 1000 if budget and budget > 0 else math.inf
        end_ids = self.special if request.end_ids is None else frozenset(request.end_ids)
        seq = _Seq(handle, now, deadline, end_ids)
        with self._cond:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                self.counters["rejected"] += 1
                raise Overloaded(f"{len(self._queue)} requests are waiting, the most this server queues")
            self._queue.append(seq)
            self.counters["requests"] += 1
            self._cond.notify()
        return handle

    def complete(self, request: Request, timeout: float | None = None) -> Result:
        """Submit and wait: the finished Result."""
        return self.start().submit(request).wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting requests, let those in flight finish for up to `timeout` seconds, then end the
        rest with finish_reason "shutdown" and stop the thread."""
        with self._cond:
            self._accepting = False
            self._cond.notify()
        end = time.monotonic() + timeout
        while self.busy() and time.monotonic() < end and self._thread is not None and self._thread.is_alive():
            time.sleep(0.01)
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def busy(self) -> bool:
        """Whether any request is waiting or running."""
        return bool(self._queue or self._prefilling or self._running)

    def stats(self) -> dict:
        """A snapshot for /metrics: queue depth, running sequences and the counters."""
        return {"queued": len(self._queue), "prefilling": len(self._prefilling), "running": len(self._running),
                "slots": self.cache.slots, "context": self.context, **self.counters}

    def warmup(self) -> float:
        """Run one short request through prefill and decode (the first forward of a process is slow); seconds."""
        t0 = time.monotonic()
        ids = self.tok.encode("def f(x):\n    return x\n") or [0]
        self.complete(Request(prompt=ids[: max(1, self.context - 3)], max_tokens=2, end_ids=frozenset()))
        return time.monotonic() - t0

    # The loop.
    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stop and not self.busy():
                        self._cond.wait()
                    if self._stop:
                        break
                    self._admit()
                try:
                    self._turn()
                except Exception as exc:  # a bug must not take the server down: fail what ran, go on
                    log.exception("engine step failed")
                    for seq in [*self._prefilling, *self._running]:
                        self._finish(seq, "error", error=f"{type(exc).__name__}: {exc}")
        for seq in [*self._queue, *self._prefilling, *self._running]:
            self._finish(seq, "shutdown")

    def _turn(self) -> None:
        now = time.monotonic()
        with self._cond:
            for seq in [s for s in self._queue if s.handle.cancelled or now >= s.deadline]:
                self._queue.remove(seq)
                self._finish(seq, "cancelled" if seq.handle.cancelled else "deadline")
        for seq in [s for s in (*self._prefilling, *self._running) if s.handle.cancelled or now >= s.deadline]:
            self._finish(seq, "cancelled" if seq.handle.cancelled else "deadline")
        if self._prefilling:
            self._prefill(self._prefilling[0])
        if self._running:
            self._decode()

    def _admit(self) -> None:
        """Give waiting requests free slots while the batch has room (called with the lock held)."""
        while self._queue and len(self._running) + len(self._prefilling) < self.max_batch:
            seq = self._queue.popleft()
            seq.admitted = time.monotonic()
            self._take_slot(seq)
            self._prefilling.append(seq)

    def _take_slot(self, seq: _Seq) -> None:
        """The free slot sharing the longest prefix with the prompt, else the least recently used one."""
        prompt = seq.req.prompt
        free = [s for s in range(self.cache.slots) if self._owner[s] is None]
        best = max(free, key=lambda s: (common_prefix(self.cache.tokens[s], prompt), self._freed[s]))
        reuse = common_prefix(self.cache.tokens[best], prompt)
        if reuse == 0:
            best = min(free, key=lambda s: self._freed[s])
        reuse = min(reuse, len(prompt) - 1)  # at least one token is computed: its logits give the first token
        self.cache.truncate(best, reuse)
        self._owner[best] = seq
        seq.slot, seq.fed, seq.cached = best, reuse, reuse
        self.counters["prompt_tokens"] += len(prompt)
        self.counters["cached_tokens"] += reuse
        if reuse:
            self.counters["prefix_hits"] += 1

    def _swap(self, a: int, b: int) -> None:
        """Exchange two slots, their contents and their owners."""
        self.cache.swap(a, b)
        self._owner[a], self._owner[b] = self._owner[b], self._owner[a]
        self._freed[a], self._freed[b] = self._freed[b], self._freed[a]
        for s in (a, b):
            if self._owner[s] is not None:
                self._owner[s].slot = s

    def _prefill(self, seq: _Seq) -> None:
        """One chunk of a joining request's prompt; at its end, its first token and a place in the batch."""
        prompt = seq.req.prompt
        chunk = prompt[seq.fed: seq.fed + PREFILL_CHUNK]
        self.cache.prefill(seq.slot)
        ids = torch.tensor([chunk], dtype=torch.long, device=self.cache.device)
        logits = self.model(ids, cache=self.cache, last_only=True)[:, -1]
        self.cache.tokens[seq.slot].extend(chunk)
        seq.fed += len(chunk)
        if seq.fed < len(prompt):
            return
        self._prefilling.remove(seq)
        seq.first = time.monotonic()
        if seq.req.max_tokens == 0:
            self._finish(seq, "length")
            return
        b = len(self._running)
        self._swap(seq.slot, b)
        self._running.append(seq)
        self._accept(seq, self._sample(logits, [seq])[0], logits[0])

    def _decode(self) -> None:
        """One token for every running sequence."""
        rows = list(self._running)
        self.cache.decode(len(rows))
        ids = torch.tensor([[s.pending] for s in rows], dtype=torch.long, device=self.cache.device)
        logits = self.model(ids, cache=self.cache, last_only=True)[:, -1]
        for s in rows:
            self.cache.tokens[s.slot].append(s.pending)
        picked = self._sample(logits, rows)
        for i, (s, t) in enumerate(zip(rows, picked)):
            self._accept(s, t, logits[i])
        self.counters["decode_steps"] += 1
        self.counters["decoded_tokens"] += len(rows)

    def _sample(self, logits: torch.Tensor, rows: list[_Seq]) -> list[int]:
        """Each row's next token with its own settings: greedy rows by argmax, the others from their generator."""
        picked = logits.argmax(dim=-1).tolist()
        for i, s in enumerate(rows):
            if s.gen is None:
                continue
            r = s.req
            probs = filter_logits(logits[i:i + 1].float() / r.temperature, r.top_k, r.top_p)
            u = torch.rand((), generator=s.gen, dtype=torch.float64)
            cdf = probs[0].double().cumsum(-1)
            picked[i] = min(int(torch.searchsorted(cdf, (u * cdf[-1]).reshape(1), right=True)[0]), probs.shape[-1] - 1)
        return picked

    def _accept(self, seq: _Seq, token: int, logits: torch.Tensor) -> None:
        """Record a sampled token: report its text, and finish the sequence at an end token, stop or limit."""
        info = None
        if seq.req.logprobs is not None:
            lp = torch.log_softmax(logits.float(), dim=-1)
            top = torch.topk(lp, seq.req.logprobs) if seq.req.logprobs else None
            info = TokenInfo(token, float(lp[token]),
                             list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else [])
        if token in seq.end_ids:
            self._finish(seq, "eos")
            return
        seq.tokens.append(token)
        if info is not None:
            seq.infos.append(info)
        seq.text = self.tok.decode(seq.tokens)
        if seq.req.stop:
            cut = find_stop(seq.text, seq.req.stop)
            if cut is not None:
                seq.text = seq.text[:cut]
                self._finish(seq, "stop")
                return
        if len(seq.tokens) >= seq.req.max_tokens or self.cache.lengths[seq.slot] + 1 >= self.context:
            self._finish(seq, "length")
            return
        seq.pending = token
        safe = _safe_len(seq.text, seq.req.stop)
        if safe > seq.sent:
            self._emit(seq, Event("delta", seq.text[seq.sent:safe], info))
            seq.sent = safe

    def _finish(self, seq: _Seq, reason: str, error: str = "") -> None:
        """End a sequence: free its slot (its keys and values stay for reuse) and report the result."""
        if seq.handle.done:
            return
        if seq in self._running:
            i = self._running.index(seq)
            last = len(self._running) - 1
            self._swap(i, last)
            self._running[i], self._running[last] = self._running[last], self._running[i]
            self._running.pop()
        elif seq in self._prefilling:
            self._prefilling.remove(seq)
        if seq.slot >= 0:
            self._owner[seq.slot] = None
            self._freed[seq.slot] = time.monotonic()
        now = time.monotonic()
        first = seq.first or now
        admitted = seq.admitted or now
        result = Result(text=seq.text, token_ids=list(seq.tokens), finish_reason=reason, prompt_tokens=len(seq.req.prompt),
                        cached_tokens=seq.cached, queued_ms=(admitted - seq.submitted) * 1000,
                        prompt_ms=(first - admitted) * 1000, ttft_ms=(first - seq.submitted) * 1000,
                        predict_ms=(now - first) * 1000, total_ms=(now - seq.submitted) * 1000,
                        logprobs=seq.infos, error=error)
        self.counters[f"finished_{reason}"] += 1
        self.counters["completion_tokens"] += len(seq.tokens)
        if len(result.text) > seq.sent:
            self._emit(seq, Event("delta", result.text[seq.sent:]))
            seq.sent = len(result.text)
        seq.handle.result = result
        seq.handle._done.set()  # before the event: a consumer woken by it sees the handle done
        self._emit(seq, Event("done", result=result))

    def _emit(self, seq: _Seq, event: Event) -> None:
        if seq.handle.on_event is None:
            return
        try:
            seq.handle.on_event(event)
        except Exception:  # a consumer's failure is its own; the engine goes on
            log.exception("on_event failed for request %s", seq.handle.id)


def _safe_len(text: str, stop) -> int:
    """How much of the text may be reported now: not a trailing partial character (U+FFFD from a token that
    ends inside a UTF-8 sequence), nor a tail that could still grow into a stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for s in stop:
        for n in range(min(len(s) - 1, end), hold, -1):
            if text[end - n:end] == s[:n]:
                hold = n
                break
    return end - hold
