"""OpenAI's completions API, `POST /v1/completions` (Tabby's body on the same path goes to serve.tabby).

The text is returned raw, as OpenAI does: generation ends at the model's end token, a stop string or
max_tokens, with no editor post-processing. `suffix` makes it a fill-in-the-middle request. A prompt laid
out with FIM marker text (Continue) is read as one only with `--fim-markers-in-prompt`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse

from codekiln.errors import UserError
from codekiln.infer import FittedPrompt, Request, Result
from codekiln.serve import prompts, tabby
from codekiln.serve.bodies import read_json, validate
from codekiln.serve.errors import ApiError, error_body
from codekiln.serve.jobs import ClientGone, Job
from codekiln.serve.schemas import CompletionChoice, CompletionRequest, CompletionResponse, LogProbs, Usage

log = logging.getLogger("codekiln.serve")
router = APIRouter()
ENDPOINT = "/v1/completions"
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "deadline": "length"}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CLIENT_CLOSED = 499  # nginx's code for a request whose client went away; nobody reads the answer


@router.post(ENDPOINT)
async def completions(request: HttpRequest):
    """OpenAI's completion (or Tabby's, told apart by its `segments`)."""
    state = request.app.state.codekiln
    body = await read_json(request, state.settings.max_body_bytes)
    if "segments" in body and "prompt" not in body:
        return await tabby.complete(state, body, request)
    req = validate(CompletionRequest, body)
    max_tokens = min(16 if req.max_tokens is None else req.max_tokens, state.engine.context // 2)
    fitted = await run_in_threadpool(build_prompts, state, req, max_tokens)
    requests = [Request(prompt=f.ids, max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                        top_k=req.top_k, seed=None if req.seed is None else (req.seed + j) % 2**64,
                        stop=tuple(req.stop), deadline_ms=req.deadline_ms, logprobs=req.logprobs)
                for f in fitted for j in range(req.n)]
    job = Job(state, ENDPOINT, requests, stream=req.stream).submit()
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.settings.model_name}
    prompt_tokens = sum(len(f.ids) for f in fitted)
    if req.stream:
        usage = req.stream_options is not None and req.stream_options.include_usage
        return StreamingResponse(_stream(job, request, head, prompt_tokens if usage else None),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    try:
        results = await job.wait(request)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    finally:
        job.close()
    choices = [CompletionChoice(text=r.text, index=i, finish_reason=FINISH.get(r.finish_reason, "stop"),
                                logprobs=_logprobs(state.tok, r) if req.logprobs is not None else None)
               for i, r in enumerate(results)]
    completion_tokens = sum(r.completion_tokens for r in results)
    return CompletionResponse(**head, choices=choices, usage=Usage(prompt_tokens=prompt_tokens,
                              completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens))


def build_prompts(state, req: CompletionRequest, max_tokens: int) -> list[FittedPrompt]:
    """The fitted token ids of each prompt of the request (runs in a worker thread: tokenizing is work)."""
    tok, context, settings = state.tok, state.engine.context, state.settings
    items = _prompt_items(req.prompt)
    out = []
    for item in items:
        if isinstance(item, list):
            if req.suffix:
                raise UserError("a suffix needs the prompt as text, not token ids")
            if not item:
                raise UserError("the prompt is empty; give some text or a suffix")
            out.append(prompts.plain(tok, item, context=context, max_tokens=max_tokens))
            continue
        if settings.log_prompts:
            log.info("prompt %r suffix %r", item, req.suffix)
        if req.suffix:
            parts = prompts.FimParts(item, req.suffix)
        elif not item:
            raise UserError("the prompt and the suffix are both empty; give some text before or after the cursor")
        elif settings.fim_markers_in_prompt:
            parts = prompts.split_markers(item)
        else:
            parts = None
            if not state.marker_hint_logged and prompts.marker_text(item):
                state.marker_hint_logged = True
                log.warning("a prompt holds fill-in-the-middle marker text (Continue lays prompts out this way); "
                            "start the server with --fim-markers-in-prompt to read it as a FIM request")
        if parts is None:
            out.append(prompts.plain(tok, item, context=context, max_tokens=max_tokens))
        else:
            out.append(prompts.infill(tok, parts, context=context, max_tokens=max_tokens))
    return out


def _prompt_items(prompt) -> list[str | list[int]]:
    """OpenAI's prompt forms as a list: a string, strings, token ids, or lists of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise UserError("the prompt is an empty list; give a string, strings or token ids")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    if len(prompt) > 16:
        raise UserError(f"at most 16 prompts per request, not {len(prompt)}")
    return list(prompt)


async def _stream(job: Job, request: HttpRequest, head: dict, usage_prompt_tokens: int | None):
    """Server-sent events: one chunk per piece of text, a last one per choice with its finish_reason,
    the usage when asked, then `data: [DONE]`. An engine failure mid-stream is an `error` event."""
    try:
        async for index, event in job.events(request):
            if event.kind == "delta":
                if event.text:
                    yield _sse(CompletionResponse(**head, choices=[CompletionChoice(text=event.text, index=index)]))
            else:
                finish = FINISH.get(event.result.finish_reason, "stop")
                yield _sse(CompletionResponse(**head, choices=[CompletionChoice(text="", index=index,
                                                                               finish_reason=finish)]))
        if usage_prompt_tokens is not None:
            done = sum(r.completion_tokens for r in job.results)
            usage = Usage(prompt_tokens=usage_prompt_tokens, completion_tokens=done,
                          total_tokens=usage_prompt_tokens + done)
            yield _sse(CompletionResponse(**head, choices=[], usage=usage))
        yield "data: [DONE]\n\n"
    except ClientGone:
        return
    except ApiError as exc:
        yield f"data: {json.dumps(error_body(exc.message, exc.type))}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        job.close()


def _sse(chunk: CompletionResponse) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"


def _logprobs(tok, result: Result) -> LogProbs:
    """OpenAI's legacy logprobs of a finished completion."""
    tokens, offsets, offset = [], [], 0
    for info in result.logprobs:
        text = tok.decode([info.token])
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
    return LogProbs(tokens=tokens, token_logprobs=[i.logprob for i in result.logprobs],
                    top_logprobs=[{tok.decode([t]): lp for t, lp in i.top} for i in result.logprobs],
                    text_offset=offsets)
