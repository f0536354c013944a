"""Where `codekiln lsp` gets its completions: the engine in this process, or a `codekiln serve` over HTTP.

Both backends take a Query (the text around the cursor, other files as repository context) and return the
raw completion and whether generation was cut short (deadline or token limit); the language server cleans
it for the editor. Both stop their work when the request is superseded by a newer one in the same document
(complete returns None) or cancelled (the asyncio task is cancelled): the engine request is cancelled
(it leaves the batch within one decode step), the HTTP connection is closed (the server notices and
cancels its engine request).

`--server` mode speaks OpenAI's `POST /v1/completions` with `suffix`: it returns the model's raw text and a
finish_reason, so the language-aware clean-up runs once, here, with the document's language; it works for
models with and without FIM tokens (a 400 saying the model has none switches to plain prompts). With
`--repo-context` it uses llama.cpp's `POST /infill` instead, the one endpoint that carries other files
(`input_extra`); its text comes back already cleaned by the server (without the language) and is cleaned
again here.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from codekiln.errors import UserError

CUT_SHORT = ("deadline", "length")  # engine finish reasons of a completion stopped before the model ended it
HTTP_TIMEOUT_S = 30.0


@dataclass
class Query:
    """What to complete: the document's text before and after the cursor, its path, language and repository,
    and other open files of the same language (path, text), most relevant last."""

    prefix: str
    suffix: str
    lang: str | None = None
    path: str = ""
    repo: str = ""
    extra: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Completion:
    """A backend's answer: the raw text and whether generation was cut short (so it may end mid-token)."""

    text: str
    truncated: bool = False
    cleaned: bool = False  # the server already cleaned it for an editor (/infill)


class BackendError(Exception):
    """A completion could not be made (engine overloaded or failed, server unreachable or refusing); the
    language server answers the request with this message as an LSP RequestFailed error."""


async def _first(work: asyncio.Future, superseded: asyncio.Event) -> bool:
    """Wait for the work or the supersession, whichever comes first; True when the work finished."""
    if superseded.is_set():
        return work.done()
    waiter = asyncio.ensure_future(superseded.wait())
    try:
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    return work.done()


class EngineBackend:
    """Completions from a codekiln.infer Engine running in this process."""

    def __init__(self, engine, tok, *, max_tokens: int, deadline_ms: float | None, repo_context: bool):
        self.engine, self.tok = engine, tok
        self.max_tokens = max(1, min(max_tokens, engine.context // 2))
        self.deadline_ms = deadline_ms
        self.repo_context = repo_context
        self.fim = bool(tok.has_fim)

    def describe(self) -> str:
        """One line for the log: prompt kind and repository context."""
        kind = "fill-in-the-middle" if self.fim else "plain prompts (the tokenizer has no FIM tokens)"
        return f"engine in process, {kind}, repository context {'on' if self.repo_context else 'off'}"

    def stats(self) -> dict:
        """What `codekiln/status` reports: the backend, its prompt kind and the engine's counters."""
        return {"backend": "engine", "fim": self.fim, "repo_context": self.repo_context,
                "max_tokens": self.max_tokens, "engine": self.engine.stats()}

    def fit(self, query: Query) -> list[int]:
        """The prompt's token ids, fitted to the engine's context (infer.window's rules)."""
        from codekiln.infer import fit_prompt, fit_repo_fim

        if not self.fim:
            return fit_prompt(self.tok, query.prefix, context=self.engine.context,
                              max_new_tokens=self.max_tokens).ids
        extra = query.extra if self.repo_context else []
        path, repo = (query.path, query.repo) if self.repo_context else ("", "")
        return fit_repo_fim(self.tok, query.prefix, query.suffix, context=self.engine.context,
                            max_new_tokens=self.max_tokens, extra=extra, path=path, repo=repo).ids

    async def complete(self, query: Query, superseded: asyncio.Event) -> Completion | None:
        """The completion, or None when superseded first; cancelling the task cancels the engine request."""
        from codekiln.infer import Overloaded, Request, ShuttingDown

        if not (query.prefix if not self.fim else query.prefix or query.suffix):
            return Completion("")
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(None, self.fit, query)
        if superseded.is_set():
            return None
        done: asyncio.Future = loop.create_future()

        def on_event(event) -> None:  # on the engine's thread
            if event.kind == "done":
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(event.result))

        try:
            handle = self.engine.submit(Request(prompt=ids, max_tokens=self.max_tokens, temperature=0.0,
                                                deadline_ms=self.deadline_ms), on_event)
        except Overloaded as exc:
            raise BackendError(f"the engine is busy: {exc}") from None
        except (ShuttingDown, UserError) as exc:
            raise BackendError(str(exc)) from None
        try:
            if not await _first(done, superseded):
                handle.cancel()
                return None
        except asyncio.CancelledError:
            handle.cancel()
            raise
        result = done.result()
        if result.finish_reason in ("error", "shutdown"):
            raise BackendError(f"the engine could not finish the completion ({result.finish_reason})")
        if result.finish_reason == "cancelled":
            return None
        return Completion(result.text, truncated=result.finish_reason in CUT_SHORT)


class _Call:
    """One HTTP request on its own connection, run in a worker thread; abort() closes the socket from
    another thread, which ends the request at once (the server sees the client leave)."""

    def __init__(self, url: str, path: str, body: dict, headers: dict[str, str], timeout: float):
        parts = urlsplit(url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.conn = cls(parts.hostname, parts.port, timeout=timeout)
        self.path = parts.path.rstrip("/") + path
        self.body, self.headers = json.dumps(body).encode(), headers
        self.aborted = False
        self._lock = threading.Lock()

    def run(self) -> tuple[int, bytes]:
        """(status, body); raises OSError when the server cannot be reached or the call was aborted."""
        try:
            self.conn.connect()
            if self.aborted:
                raise ConnectionAbortedError("the request was cancelled")
            self.conn.request("POST", self.path, body=self.body, headers=self.headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        finally:
            self.conn.close()

    def abort(self) -> None:
        """Close the connection (safe from any thread, more than once)."""
        with self._lock:
            self.aborted = True
            sock = self.conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class HttpBackend:
    """Completions from a `codekiln serve` (see the module docstring for the endpoints)."""

    def __init__(self, url: str, api_key: str | None, *, max_tokens: int, deadline_ms: float | None,
                 repo_context: bool, timeout: float = HTTP_TIMEOUT_S):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"--server must be an http:// or https:// URL, not {url!r}")
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.max_tokens, self.deadline_ms, self.repo_context = max_tokens, deadline_ms, repo_context
        self.timeout = timeout
        self.fim = True  # until the server says its model has no FIM tokens
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="codekiln-lsp-http")

    def describe(self) -> str:
        """One line for the log."""
        via = "/infill with repository context" if self.repo_context else "/v1/completions"
        return f"codekiln serve at {self.url} ({via}; auth {'on' if 'Authorization' in self.headers else 'off'})"

    def stats(self) -> dict:
        """What `codekiln/status` reports: the backend and what it learned of the server."""
        return {"backend": "server", "url": self.url, "fim": self.fim, "repo_context": self.repo_context,
                "max_tokens": self.max_tokens}

    def _request(self, query: Query) -> tuple[str, dict]:
        deadline = self.deadline_ms
        if self.repo_context and self.fim:
            body = {"input_prefix": query.prefix, "input_suffix": query.suffix, "n_predict": self.max_tokens,
                    "temperature": 0.0, "input_extra": [{"filename": p, "text": t} for p, t in query.extra]}
            if deadline:
                body["t_max_predict_ms"] = int(deadline)
            return "/infill", body
        body = {"prompt": query.prefix, "max_tokens": self.max_tokens, "temperature": 0.0}
        if self.fim:
            body["suffix"] = query.suffix
        if deadline is not None:
            body["deadline_ms"] = deadline
        return "/v1/completions", body

    async def complete(self, query: Query, superseded: asyncio.Event) -> Completion | None:
        """The completion, or None when superseded first; cancelling the task closes the connection."""
        while True:
            if not (query.prefix or (self.fim and query.suffix)):
                return Completion("")
            path, body = self._request(query)
            call = _Call(self.url, path, body, self.headers, self.timeout)
            work = asyncio.wrap_future(self.pool.submit(call.run))
            try:
                if not await _first(work, superseded):
                    call.abort()
                    return None
            except asyncio.CancelledError:
                call.abort()
                raise
            try:
                status, raw = work.result()
            except OSError as exc:
                raise BackendError(f"cannot reach codekiln serve at {self.url}: {exc}") from None
            answer = _json(raw)
            if status == 400 and self.fim and "fill-in-the-middle" in _message(answer):
                self.fim = False  # the served model has no FIM tokens: plain prompts from now on
                continue
            if status != 200:
                raise BackendError(f"codekiln serve answered {status}: {_message(answer) or raw[:200]!r}")
            return _completion(path, answer)


def _json(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _message(answer) -> str:
    """The error message of an OpenAI-shaped error body, else ""."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return str(answer["error"].get("message", ""))
    return ""


def _completion(path: str, answer) -> Completion:
    """A Completion from /v1/completions' or /infill's JSON answer."""
    try:
        if path == "/infill":
            return Completion(answer["content"], truncated=answer.get("stop_type") == "limit", cleaned=True)
        choice = answer["choices"][0]
        return Completion(choice["text"], truncated=choice.get("finish_reason") == "length")
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"codekiln serve answered {path} with an unexpected body") from None
