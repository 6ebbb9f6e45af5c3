"""What a chat runs on: a local GGUF file or an OpenAI-compatible server, and the engine each one needs."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qwen_chat.engines.protocol import ChatEngine, EngineEvent

if TYPE_CHECKING:  # the TUI imports this module for the two source types only
    from qwen_chat.session.model_loading import PreparedLoad


@dataclass(frozen=True)
class LocalModel:
    path: Path
    n_ctx: int | None = None  # None: the [chat] context setting, else what the planner picks
    # already read and planned (the CLI does it at start, to refuse a model before the screen opens): the first
    # `open` loads this instead of reading and planning the file again
    planned: PreparedLoad | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str | None = None
    model: str | None = None


Source = LocalModel | Server


def local_engine(on_event: Callable[[EngineEvent], None]) -> ChatEngine:
    from qwen_chat.engines.llama import Engine  # llama_cpp loads only when a local model does

    return Engine(on_event)


def remote_engine(on_event: Callable[[EngineEvent], None], endpoint: Server) -> ChatEngine:
    from qwen_chat.engines.http import RemoteEngine

    return RemoteEngine(on_event, endpoint.url, endpoint.api_key, endpoint.model)


def looks_quantized(model_id: str) -> bool:
    """A served GGUF (llama-server) is quantized; vLLM/SGLang usually serve BF16/FP8 checkpoints."""
    name = model_id.lower()
    return "gguf" in name or bool(re.search(r"\bq\d|iq\d|-q\d", name))
