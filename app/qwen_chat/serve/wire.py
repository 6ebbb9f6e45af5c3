"""What a client sends, read strictly: a request body becomes `ChatParams` or `CompletionParams`, or a `BadRequest`
whose message says which field is wrong and why (the client gets it as a 400, never a traceback)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from qwen_chat.qwen3.sampling import validate

MAX_STOPS = 8  # stop strings per request (OpenAI allows 4; llama-server more)
MAX_STOP_LENGTH = 200
# Request fields that would change the answer and that the engine cannot honour: refused, never silently ignored.
_UNSUPPORTED = {"frequency_penalty": 0, "logit_bias": None, "logprobs": False, "top_logprobs": None, "n": 1,
                "echo": False, "best_of": 1, "suffix": None}


class BadRequest(Exception):
    """A request the server refuses; `status` is the HTTP status (400 unless said otherwise)."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class SamplingFields:
    """The sampling fields a request gave (None: the Qwen preset's value)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()

    def given(self) -> dict[str, Any]:
        """The preset fields the request set, by the name `Sampling` uses."""
        names = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "seed")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class ChatParams:
    messages: tuple[dict[str, Any], ...]
    sampling: SamplingFields
    stream: bool = False
    tools: tuple[dict[str, Any], ...] = ()
    enable_thinking: bool = True
    thinking_budget: int | None = None  # None: the preset's, else [chat] thinking_budget
    model: str = ""


@dataclass(frozen=True)
class CompletionParams:
    prompt: str
    sampling: SamplingFields
    stream: bool = False
    model: str = ""


def body_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest saying where it stops being one."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")\
            from None
    except RecursionError:
        raise BadRequest("the request body nests too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(value).__name__}")
    return value


def chat_params(body: dict[str, Any], max_tokens_limit: int) -> ChatParams:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest('"messages" must be a non-empty list of messages')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f'messages[{i}] must be an object with a "role" string')
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise BadRequest('"chat_template_kwargs" must be an object')
    enable = kwargs.get("enable_thinking", True)
    if not isinstance(enable, bool):
        raise BadRequest('"chat_template_kwargs.enable_thinking" must be true or false')
    budget = body.get("thinking_budget")
    if budget is not None and (problem := validate("thinking_budget", budget)):
        raise BadRequest(problem)
    tools = _tools(body)
    return ChatParams(tuple(messages), sampling_fields(body, max_tokens_limit), _stream(body), tools, enable,
                      budget, _model(body))


def completion_params(body: dict[str, Any], max_tokens_limit: int) -> CompletionParams:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest('"prompt" must be a string (one prompt per request)')
    fields = sampling_fields(body, max_tokens_limit, default_max=16)  # OpenAI's default for completions
    return CompletionParams(prompt, fields, _stream(body), _model(body))


def sampling_fields(body: dict[str, Any], max_tokens_limit: int, default_max: int | None = None) -> SamplingFields:
    for name, neutral in _UNSUPPORTED.items():
        if body.get(name) not in (None, neutral):
            raise BadRequest(f'"{name}" is not supported by this server (only {json.dumps(neutral)})')
    values: dict[str, Any] = {}
    for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "seed"):
        value = body.get(name)
        if value is None:
            continue
        if name == "top_k" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if problem := validate(name, value):
            raise BadRequest(problem)
        values[name] = value
    return SamplingFields(**values, max_tokens=_max_tokens(body, max_tokens_limit, default_max), stop=_stops(body))


def _max_tokens(body: dict[str, Any], limit: int, default: int | None) -> int | None:
    """The request's output limit (`max_completion_tokens` or `max_tokens`), at most the server's `--max-tokens`."""
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return min(default, limit) if default is not None else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f'"max_tokens" must be a whole number of at least 1 (got {json.dumps(value)})')
    return min(value, limit)


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest('"stop" must be a non-empty string or a list of them')
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_LENGTH for s in stops):
        raise BadRequest(f'"stop": at most {MAX_STOPS} strings of at most {MAX_STOP_LENGTH} characters')
    return tuple(stops)


def _tools(body: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    tools = body.get("tools") or []
    if body.get("tool_choice") == "none":
        return ()
    if not isinstance(tools, list):
        raise BadRequest('"tools" must be a list of {"type": "function", "function": {...}} objects')
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise BadRequest(f'tools[{i}] must be {{"type": "function", "function": {{"name": ..., ...}}}}')
    return tuple(tools)


def _stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest('"stream" must be true or false')
    return stream


def _model(body: dict[str, Any]) -> str:
    model = body.get("model", "")
    return model if isinstance(model, str) else ""
