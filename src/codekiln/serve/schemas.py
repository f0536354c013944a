"""Request and response bodies, one pydantic model per public spec, field by field.

OpenAI's legacy completions API (`/v1/completions`), Tabby's completion, event and health bodies, and
llama.cpp's `/infill` and `/completion`. Fields that editors send and the server does not use are declared
(so a wrong type is still caught) and documented as ignored in docs/serving.md; unknown fields are ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_STOP = 64  # stop strings per request (Continue sends ten; OpenAI allows four)
MAX_STOP_CHARS = 256


class _Body(BaseModel):
    """A request body: unknown fields are ignored, known ones are type-checked."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


def _stop_list(value) -> list[str]:
    """`stop` as a list without empty strings (a string or a list of strings)."""
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else list(value)
    if len(stops) > MAX_STOP:
        raise ValueError(f"at most {MAX_STOP} stop strings")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ValueError(f"a stop string is longer than {MAX_STOP_CHARS} characters")
    return [s for s in stops if s]


# OpenAI: POST /v1/completions.
class StreamOptions(_Body):
    """OpenAI's stream_options: include_usage adds a last chunk with the usage."""

    include_usage: bool = False


class CompletionRequest(_Body):
    """OpenAI's completion request. `deadline_ms` and `top_k` are codekiln's additions."""

    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]] = Field(...)
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = Field(None, validate_default=True)
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    # Accepted and ignored (docs/serving.md).
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    best_of: int | None = Field(None, ge=1)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # codekiln's additions.
    deadline_ms: float | None = Field(None, ge=0)
    top_k: int = Field(0, ge=0)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        return _stop_list(value)

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value):
        if value:
            raise ValueError("echo=true is not supported; send echo=false or leave it out")
        return value


class LogProbs(BaseModel):
    """OpenAI's legacy logprobs object."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    """One choice of an OpenAI completion."""

    text: str
    index: int
    logprobs: LogProbs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Usage(BaseModel):
    """Token counts of a request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    """OpenAI's completion response (and, with finish_reason null until the end, each streamed chunk)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Model(BaseModel):
    """One entry of GET /v1/models."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "codekiln"


class ModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[Model]


# Tabby: POST /v1/completions (by shape), /v1/events, GET /v1/health, /v1beta/server_setting.
class Declaration(_Body):
    """A declaration the cursor's code refers to (Tabby)."""

    filepath: str = ""
    body: str = ""


class Snippet(_Body):
    """A relevant snippet of another file (Tabby)."""

    filepath: str = ""
    body: str = ""
    score: float = 0.0


class Segments(_Body):
    """The code around the cursor and the context Tabby's agent gathered."""

    prefix: str = ""
    suffix: str | None = None
    filepath: str | None = None
    git_url: str | None = None
    declarations: list[Declaration] | None = None
    relevant_snippets_from_changed_files: list[Snippet] | None = None
    relevant_snippets_from_recently_opened_files: list[Snippet] | None = None
    clipboard: str | None = None  # ignored


class TabbyCompletionRequest(_Body):
    """Tabby's completion request."""

    language: str | None = None
    segments: Segments = Field(...)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = Field(None, ge=0)
    # Accepted and ignored.
    user: str | None = None
    mode: str | None = None
    debug_options: dict[str, Any] | None = None


class TabbyChoice(BaseModel):
    """One choice of a Tabby completion."""

    index: int
    text: str


class TabbyCompletionResponse(BaseModel):
    """Tabby's completion response."""

    id: str
    choices: list[TabbyChoice]


class TabbyEvent(_Body):
    """A shown, accepted or dismissed completion (Tabby's LogEventRequest)."""

    type: Literal["view", "select", "dismiss"]
    completion_id: str
    choice_index: int = Field(0, ge=0)
    view_id: str | None = None
    elapsed: int | None = Field(None, ge=0)
    select_kind: str | None = None


# llama.cpp: POST /infill and /completion.
class ExtraChunk(_Body):
    """A chunk of another file sent as repository context (llama.vim's and llama.vscode's ring buffer)."""

    filename: str = ""
    text: str = ""
    time: Any = None  # ignored (Vim sends reltime(), VS Code milliseconds)


class LlamaSampling(_Body):
    """The sampling fields llama.cpp's completion endpoints share (llama.cpp's defaults)."""

    n_predict: int = Field(-1, ge=-1)
    temperature: float = Field(0.8, ge=0.0, le=100.0)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.95, ge=0.0, le=1.0)
    seed: int = -1
    stop: list[str] | None = Field(None, validate_default=True)
    samplers: list[str] | str | None = None
    stream: bool = False
    n_probs: int = Field(0, ge=0, le=20)
    t_max_prompt_ms: float = -1
    t_max_predict_ms: float = -1
    response_fields: list[str] | None = None
    n_cmpl: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    # Accepted and ignored.
    model: str | None = None
    id_slot: int = -1
    cache_prompt: bool = True
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    mirostat: int | None = None
    lora: list[dict[str, Any]] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        return _stop_list(value)

    @field_validator("samplers")
    @classmethod
    def _samplers(cls, value):
        if isinstance(value, str):  # llama.cpp's short form: one letter per sampler
            letters = {"k": "top_k", "p": "top_p", "t": "temperature", "m": "min_p", "y": "typ_p", "x": "xtc",
                       "d": "dry", "s": "top_n_sigma", "i": "infill"}
            return [letters.get(c, c) for c in value]
        return value


class InfillRequest(LlamaSampling):
    """llama.cpp's /infill request: the code around the cursor, the cursor line, and repository chunks."""

    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[ExtraChunk] = Field(default_factory=list)
    prompt: str = ""
    n_indent: int = Field(0, ge=0)


class LlamaCompletionRequest(LlamaSampling):
    """llama.cpp's /completion request (Continue's llama.cpp provider)."""

    prompt: str | list[int] = Field(...)
