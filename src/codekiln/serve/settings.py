"""What an operator decides about a running server (the engine's own limits live on the Engine)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_EDITOR_MAX_TOKENS = 64


@dataclass(frozen=True)
class Settings:
    """Server settings: the served model's name, API keys, limits and opt-ins.

    `api_keys` empty means no authentication. `editor_max_tokens` is the length of a completion for
    editors whose request does not say (Tabby; /infill with n_predict -1). `fim_markers_in_prompt` reads
    FIM marker text in an OpenAI or llama.cpp `prompt` (Continue's templates) as a fill-in-the-middle
    request. `log_prompts` lets prompt text reach the log (never otherwise).
    """

    model_name: str = "codekiln"
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    editor_max_tokens: int = DEFAULT_EDITOR_MAX_TOKENS
    fim_markers_in_prompt: bool = False
    log_prompts: bool = False
    retry_after_s: int = 1
    disconnect_poll_s: float = 0.02  # how often a waiting request checks that its client is still there
    device: str = "cpu"

    @property
    def auth(self) -> bool:
        """Whether requests must carry one of the API keys."""
        return bool(self.api_keys)
