"""llama.cpp's server API: `POST /infill` (llama.vim, llama.vscode) and `POST /completion` (Continue's
llama.cpp provider), answered the way llama-server answers them so those editors work unchanged.

/infill: the repository chunks (`input_extra`) become `<|file_sep|>` blocks before the current file's FIM
prompt, and `prompt` (the cursor line up to the cursor) follows the FIM middle token, so the model goes on
from it. `n_predict` 0 is a cache warm-up: the prompt is prefilled (later requests that share it reuse
its keys and values) and the answer is an empty completion. Timings are in the answer; `response_fields`
picks fields by path, flattened to keys such as "timings/prompt_n", as llama.cpp does. `n_cmpl` > 1
answers a JSON array. The content is cleaned for the editor (serve.editor); streamed text is raw.
Sampling follows llama.cpp: a `samplers` list turns on only the samplers it names, so a list without
"temperature" samples at temperature 1 from what top_k and top_p keep.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse

from codekiln.infer import FittedPrompt, Request, Result
from codekiln.serve import prompts
from codekiln.serve.bodies import read_json, validate
from codekiln.serve.editor import editor_text
from codekiln.serve.errors import ApiError, error_body
from codekiln.serve.jobs import ClientGone, Job
from codekiln.serve.schemas import InfillRequest, LlamaCompletionRequest, LlamaSampling

log = logging.getLogger("codekiln.serve")
router = APIRouter()
STOP_TYPE = {"eos": "eos", "stop": "word", "length": "limit", "deadline": "limit"}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_MISSING = object()


@router.post("/infill")
async def infill(request: HttpRequest):
    """llama.cpp's fill-in-the-middle completion."""
    state = request.app.state.codekiln
    req = validate(InfillRequest, await read_json(request, state.settings.max_body_bytes))
    tok, context = state.tok, state.engine.context
    if not tok.has_fim:
        raise ApiError(400, "this model's tokenizer has no fill-in-the-middle tokens, so it cannot serve /infill")
    max_tokens = prompts.editor_max_tokens(req.n_predict, context, state.settings.editor_max_tokens)
    if max_tokens and not (req.input_prefix or req.input_suffix or req.prompt or req.input_extra):
        raise ApiError(400, "input_prefix, input_suffix, prompt and input_extra are all empty; "
                            "nothing to complete from")
    if state.settings.log_prompts:
        log.info("infill prefix %r prompt %r suffix %r", req.input_prefix, req.prompt, req.input_suffix)
    parts = prompts.FimParts(req.input_prefix, req.input_suffix, extra=[(c.filename, c.text) for c in req.input_extra])
    fitted = await run_in_threadpool(lambda: prompts.infill(tok, parts, context=context, max_tokens=max_tokens,
                                                            after_middle=req.prompt))
    prefix = req.input_prefix + req.prompt

    def content(result: Result) -> str:
        return editor_text(result, prefix, req.input_suffix, n_indent=req.n_indent) if result.text else ""

    return await _answer(state, request, "/infill", req, fitted, max_tokens, content)


@router.post("/completion")
async def completion(request: HttpRequest):
    """llama.cpp's plain completion; a prompt with FIM marker text is read as FIM with --fim-markers-in-prompt."""
    state = request.app.state.codekiln
    req = validate(LlamaCompletionRequest, await read_json(request, state.settings.max_body_bytes))
    tok, context = state.tok, state.engine.context
    if not req.prompt:
        raise ApiError(400, "the prompt is empty; give some text")
    max_tokens = prompts.editor_max_tokens(req.n_predict, context, context // 2)
    if state.settings.log_prompts:
        log.info("completion prompt %r", req.prompt)

    def build() -> FittedPrompt:
        parts = prompts.split_markers(req.prompt) if isinstance(req.prompt, str) and \
            state.settings.fim_markers_in_prompt else None
        if parts is None:
            return prompts.plain(tok, req.prompt, context=context, max_tokens=max_tokens)
        return prompts.infill(tok, parts, context=context, max_tokens=max_tokens)

    fitted = await run_in_threadpool(build)
    return await _answer(state, request, "/completion", req, fitted, max_tokens, lambda r: r.text)


async def _answer(state, request: HttpRequest, endpoint: str, req: LlamaSampling, fitted: FittedPrompt,
                  max_tokens: int, content) -> Response:
    """Run the completions of a llama.cpp request and answer in llama-server's shape."""
    count = req.n_cmpl or req.n or 1
    if count > state.engine.max_batch:
        raise ApiError(400, f"Field 'n_cmpl': Value must be between 1 <= value <= {state.engine.max_batch}, "
                            f"but got {count}")
    samplers = [sampling(req, j) for j in range(count)]
    distinct = 1 if max_tokens == 0 or samplers[0]["temperature"] == 0 else count  # greedy copies are equal
    deadline = deadline_ms(req, max_tokens)
    requests = [Request(prompt=fitted.ids, max_tokens=max_tokens, stop=tuple(req.stop), deadline_ms=deadline,
                        **samplers[j]) for j in range(distinct)]
    job = Job(state, endpoint, requests, stream=req.stream).submit()
    make = _Answer(state, req, fitted, max_tokens, samplers[0])
    if req.stream:
        return StreamingResponse(_stream(job, request, make), media_type="text/event-stream", headers=SSE_HEADERS)
    try:
        results = await job.wait(request)
    except ClientGone:
        return Response(status_code=499)
    finally:
        job.close()
    answers = [make(results[min(i, distinct - 1)], content(results[min(i, distinct - 1)]), i) for i in range(count)]
    return JSONResponse(answers[0] if count == 1 else answers)


def sampling(req: LlamaSampling, index: int) -> dict:
    """Engine sampling settings of a llama.cpp request (see the module docstring); seed -1 is random."""
    def on(name: str) -> bool:
        return req.samplers is None or name in req.samplers

    temperature = req.temperature if on("temperature") else 1.0
    top_k = req.top_k if on("top_k") else 0
    top_p = req.top_p if on("top_p") else 1.0
    if top_p <= 0:  # keep only the most likely token
        temperature, top_p = 0.0, 1.0
    seed = None if req.seed < 0 or req.seed >= 0xFFFFFFFF else req.seed + index
    return {"temperature": max(0.0, temperature), "top_k": top_k, "top_p": top_p, "seed": seed}


def deadline_ms(req: LlamaSampling, max_tokens: int) -> float | None:
    """The request's budget: t_max_prompt_ms + t_max_predict_ms where given (None: the server's default);
    none for a warm-up (n_predict 0), whose prefill must complete to be of use."""
    if max_tokens == 0:
        return 0.0
    budget = sum(t for t in (req.t_max_prompt_ms, req.t_max_predict_ms) if t > 0)
    return float(budget) if budget else None


class _Answer:
    """llama-server's completion object for one result, cut to response_fields."""

    def __init__(self, state, req: LlamaSampling, fitted: FittedPrompt, max_tokens: int, sampler: dict):
        self.state, self.req, self.fitted = state, req, fitted
        self.settings = {"n_ctx": state.engine.context, "n_predict": max_tokens, **sampler,
                         "seed": -1 if sampler["seed"] is None else sampler["seed"], "stop": req.stop,
                         "t_max_prompt_ms": req.t_max_prompt_ms, "t_max_predict_ms": req.t_max_predict_ms}

    def full(self, result: Result, content: str, index: int) -> dict:
        """Every field, as llama-server writes them."""
        prompt_n = result.prompt_tokens - result.cached_tokens
        predicted_n = result.completion_tokens
        p_ms, d_ms = result.prompt_ms, result.predict_ms
        timings = {"cache_n": result.cached_tokens, "prompt_n": prompt_n, "prompt_ms": p_ms,
                   "prompt_per_token_ms": p_ms / prompt_n if prompt_n else 0.0,
                   "prompt_per_second": 1000.0 * prompt_n / p_ms if p_ms > 0 else 0.0,
                   "predicted_n": predicted_n, "predicted_ms": d_ms,
                   "predicted_per_token_ms": d_ms / predicted_n if predicted_n else 0.0,
                   "predicted_per_second": 1000.0 * predicted_n / d_ms if d_ms > 0 else 0.0}
        return {"index": index, "content": content, "tokens": [], "id_slot": self.req.id_slot, "stop": True,
                "model": self.state.settings.model_name, "tokens_predicted": predicted_n,
                "tokens_evaluated": result.prompt_tokens, "generation_settings": self.settings,
                "has_new_line": "\n" in content, "truncated": self.fitted.cut,
                "stop_type": STOP_TYPE.get(result.finish_reason, "none"), "stopping_word": "",
                "tokens_cached": result.prompt_tokens + result.completion_tokens, "timings": timings}

    def __call__(self, result: Result, content: str, index: int) -> dict:
        return select_fields(self.full(result, content, index), self.req.response_fields)


def select_fields(obj: dict, fields: list[str] | None) -> dict:
    """llama.cpp's response_fields: each path ("timings/prompt_n") that exists, as a flat key; None: all."""
    if fields is None:
        return obj
    out = {}
    for path in fields:
        cur = obj
        for part in path.split("/"):
            cur = cur.get(part, _MISSING) if isinstance(cur, dict) else _MISSING
            if cur is _MISSING:
                break
        if path and cur is not _MISSING:
            out[path] = cur
    return out


async def _stream(job: Job, request: HttpRequest, make: _Answer):
    """llama-server's streaming: `data: {"content", "stop": false}` per piece of text, then the whole
    object with `stop: true` (raw text; editors read only `content`). No [DONE] line, as llama-server."""
    try:
        async for index, event in job.events(request):
            if event.kind == "delta":
                if event.text:
                    yield _sse({"index": index, "content": event.text, "stop": False})
            else:
                yield _sse(make(event.result, "", index))
    except ClientGone:
        return
    except ApiError as exc:
        yield _sse(error_body(exc.message, exc.type))
    finally:
        job.close()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"

