"""Tabby's API, so Tabby's editor extensions (tabby-agent) work unchanged: its completion body on
`/v1/completions`, `/v1/health`, `/v1/events` and `/v1beta/server_setting`.

A Tabby completion is a fill-in-the-middle prompt with the repository context the agent gathered
(declarations and snippets of other files become `<|file_sep|>` blocks before the current file), cleaned
for the editor (codekiln.infer.for_editor with the request's language).
"""

from __future__ import annotations

import logging
import os
import platform
import uuid

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from codekiln import __version__
from codekiln.errors import UserError
from codekiln.infer import FittedPrompt, Request
from codekiln.serve import prompts
from codekiln.serve.bodies import read_json, validate
from codekiln.serve.editor import editor_text
from codekiln.serve.jobs import ClientGone, Job
from codekiln.serve.schemas import Segments, TabbyChoice, TabbyCompletionRequest, TabbyCompletionResponse, TabbyEvent

log = logging.getLogger("codekiln.serve")
router = APIRouter()
ENDPOINT = "/v1/completions"
TABBY_API = "v0.32.0"  # the Tabby release whose API this mirrors; the agent gates features on this version


async def complete(state, body: dict, request: HttpRequest):
    """A Tabby completion (called by the /v1/completions route for bodies with `segments`)."""
    req = validate(TabbyCompletionRequest, body)
    seg = req.segments
    suffix = seg.suffix or ""
    if not seg.prefix and not suffix:
        raise UserError("segments.prefix and segments.suffix are both empty; there is nothing to complete from")
    max_tokens = prompts.editor_max_tokens(None, state.engine.context, state.settings.editor_max_tokens)
    fitted = await run_in_threadpool(build_prompt, state, seg, max_tokens)
    temperature = req.temperature or 0.0  # the agent's automatic trigger sends none: greedy, stable ghost text
    job = Job(state, ENDPOINT, [Request(prompt=fitted.ids, max_tokens=max_tokens, temperature=temperature,
                                        seed=req.seed)]).submit()
    try:
        [result] = await job.wait(request)
    except ClientGone:
        return Response(status_code=499)
    finally:
        job.close()
    text = editor_text(result, seg.prefix, suffix, lang=req.language or seg.filepath)
    return TabbyCompletionResponse(id=f"cmpl-{uuid.uuid4()}", choices=[TabbyChoice(index=0, text=text)])


def build_prompt(state, seg: Segments, max_tokens: int) -> FittedPrompt:
    """The repository-level FIM prompt of Tabby's segments (a plain prompt when the model has no FIM tokens
    and there is no suffix)."""
    tok, context = state.tok, state.engine.context
    if state.settings.log_prompts:
        log.info("tabby prefix %r suffix %r", seg.prefix, seg.suffix)
    suffix = seg.suffix or ""
    if not tok.has_fim and not suffix:
        return prompts.plain(tok, seg.prefix, context=context, max_tokens=max_tokens)
    # Most relevant last (fit_repo_fim keeps the last ones when room is short): recently opened files,
    # then snippets of changed files by score, then the declarations the cursor's code uses.
    extra = [(s.filepath, s.body) for s in seg.relevant_snippets_from_recently_opened_files or []]
    changed = sorted(seg.relevant_snippets_from_changed_files or [], key=lambda s: s.score)
    extra += [(s.filepath, s.body) for s in changed]
    extra += [(d.filepath, d.body) for d in seg.declarations or []]
    parts = prompts.FimParts(seg.prefix, suffix, extra=extra, path=seg.filepath or "", repo=_repo_name(seg.git_url))
    return prompts.infill(tok, parts, context=context, max_tokens=max_tokens)


def _repo_name(git_url: str | None) -> str:
    """`owner/name` of a git remote URL (https or scp-like), "" without one."""
    if not git_url:
        return ""
    path = git_url.rstrip("/").removesuffix(".git").replace(":", "/")
    return "/".join(path.split("/")[-2:])


@router.api_route("/v1/health", methods=["GET", "POST"])
async def health(request: HttpRequest) -> dict:
    """Tabby's health state: the agent enables completion when `model` is set; needs no key."""
    state = request.app.state.codekiln
    name, device = state.settings.model_name, state.settings.device
    return {"model": name, "device": device, "cuda_devices": [],
            "models": {"completion": {"local": {"model_id": name, "device": device}}},
            "arch": platform.machine() or "unknown",
            "cpu_info": platform.processor() or platform.machine() or "unknown",
            "cpu_count": os.cpu_count() or 1,
            "version": {"build_date": "", "build_timestamp": "", "git_sha": "",
                        "git_describe": f"{TABBY_API}-codekiln-{__version__}"},
            "webserver": None}


@router.get("/v1beta/server_setting")
async def server_setting() -> dict:
    """Tabby's server settings: the agent's own telemetry is left to the user."""
    return {"disable_client_side_telemetry": False}


@router.post("/v1/events")
async def events(request: HttpRequest, select_kind: str | None = None) -> Response:
    """A completion was shown (view), accepted (select) or dismissed; feeds the acceptance-rate metric."""
    state = request.app.state.codekiln
    event = validate(TabbyEvent, await read_json(request, state.settings.max_body_bytes))
    state.metrics.event(event.type)
    return Response(status_code=200)
