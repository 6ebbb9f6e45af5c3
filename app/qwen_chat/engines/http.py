"""An OpenAI-compatible HTTP engine: the same chat on llama-server, vLLM or SGLang.

It honours the local engine's contract (queued requests, events through one callback, `stop()` from any
thread) so the session and the UI do not care where the model runs. Thinking arrives either as
`reasoning_content` (servers started with a reasoning parser) or inline as `<think>` in `content`; both go
through the same splitter. `/think` and `/no_think` become `chat_template_kwargs.enable_thinking`, which
vLLM, SGLang and llama-server accept, and the Qwen sampling presets go as the servers' extra fields.

Tools go as the `tools` field. A server with a tool parser streams the calls as `delta.tool_calls`
(http_tool_calls.py assembles them); one without writes Qwen's `<tool_call>` text in `content`, and the
splitter finds it there, as the local engine does. Either way the calls end up in `Done.tool_calls`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_chat.engines.http_tool_calls import ToolCallDeltas, merged_calls, wire_messages
from qwen_chat.engines.protocol import Done, EngineEvent, EventSink, Failed, GenerateRequest, Loaded, LoadRequest, Token
from qwen_chat.engines.worker import RequestWorker
from qwen_chat.qwen3.thinking import Part, StreamText, ThinkingSplitter
from qwen_chat.qwen3.tool_calls import ToolCall, ToolCallSplitter, parse_tool_calls
from qwen_chat.system.http import http_library as _http

log = logging.getLogger("qwen_chat.remote")


class EndpointError(Exception):
    pass


def _message_of(response: Any) -> str:
    try:
        body = response.json()
    except Exception:
        return response.text[:200].strip()
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def list_models(base_url: str, api_key: str | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The endpoint's `/v1/models`, or EndpointError with what went wrong."""
    http = _http()
    try:
        response = http.get(f"{base_url.rstrip('/')}/models", headers=_auth(api_key), timeout=timeout)
    except http.HTTPError as exc:
        raise EndpointError(f"cannot reach {base_url}: {exc}. Is the server running, and is the URL right "
                            "(it usually ends in /v1)?") from exc
    if response.status_code in (401, 403):
        raise EndpointError(f"{base_url} refused the API key ({response.status_code}): pass --api-key")
    if response.status_code != 200:
        raise EndpointError(f"{base_url}/models answered {response.status_code}: {_message_of(response)}")
    try:
        data = response.json()["data"]
    except Exception as exc:
        raise EndpointError(f"{base_url} does not speak the OpenAI API (no model list at /models)") from exc
    return [m for m in data if isinstance(m, dict)]


KEYRING_SERVICE = "qwen-chat-endpoint"


def api_key_for(url: str) -> str | None:
    """QWEN_CHAT_API_KEY, else the key stored for this endpoint in the system keyring."""
    import os

    if os.environ.get("QWEN_CHAT_API_KEY"):
        return os.environ["QWEN_CHAT_API_KEY"]
    try:
        import keyring

        return keyring.get_password(KEYRING_SERVICE, url)
    except Exception:  # no keyring backend: no stored key
        return None


def remember_api_key(url: str, key: str) -> None:
    try:
        import keyring

        keyring.set_password(KEYRING_SERVICE, url, key)
    except Exception as exc:
        log.warning("could not store the API key in the keyring: %s", exc)


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass
class RemoteEngine(RequestWorker):
    thread_name = "remote-engine"
    on_event: EventSink
    base_url: str
    api_key: str | None = None
    model: str | None = None  # None: the endpoint's first model
    timeout: float = 300.0
    n_ctx: int = 0
    _queue: queue.Queue[Any] = field(default_factory=queue.Queue)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _response: Any = None
    _thread: threading.Thread | None = None

    def stop(self) -> None:
        self._cancel.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()  # unblocks the reading thread at once

    def _load(self, request: LoadRequest) -> None:
        self._connect()

    def _connect(self) -> None:
        started = time.perf_counter()
        try:
            models = list_models(self.base_url, self.api_key)
        except EndpointError as exc:
            self._emit(Failed(None, str(exc)))
            return
        ids = [str(m.get("id")) for m in models]
        if self.model is None:
            if not ids:
                self._emit(Failed(None, f"{self.base_url} serves no model"))
                return
            self.model = ids[0]
        elif self.model not in ids:
            self._emit(Failed(None, f"{self.base_url} does not serve {self.model}; it serves: {', '.join(ids)}"))
            return
        info = next(m for m in models if str(m.get("id")) == self.model)
        # vLLM reports max_model_len; llama-server its context in /props; else the training context if given
        self.n_ctx = int(info.get("max_model_len") or self._llama_server_ctx()
                         or info.get("meta", {}).get("n_ctx_train") or 0)
        self._emit(Loaded(Path(self.model), self.n_ctx, 0, time.perf_counter() - started))

    def _llama_server_ctx(self) -> int:
        http = _http()
        root = self.base_url.rstrip("/").removesuffix("/v1")
        try:
            response = http.get(f"{root}/props", headers=_auth(self.api_key), timeout=5.0)
            settings = response.json().get("default_generation_settings", {}) if response.status_code == 200 else {}
        except Exception:  # not llama-server: no /props
            return 0
        return int(settings.get("n_ctx") or 0)

    def _body(self, request: GenerateRequest) -> dict[str, Any]:
        s = request.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": wire_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": s.temperature,
            "top_p": s.top_p,
            "presence_penalty": s.presence_penalty,
            "max_tokens": s.max_tokens,
            # extra sampling fields understood by vLLM, SGLang and llama-server
            "top_k": s.top_k,
            "min_p": s.min_p,
            "chat_template_kwargs": {"enable_thinking": request.enable_thinking},
        }
        if s.seed is not None:
            body["seed"] = s.seed
        if request.tools:  # only then: some servers reject an empty list, and without it nothing changes
            body["tools"] = list(request.tools)
        return body

    def _generate(self, request: GenerateRequest) -> None:
        self._cancel.clear()
        answer = _AnswerStream(request.request_id, self._emit, find_tool_calls=bool(request.tools))
        failure = self._stream(request, answer)
        if not failure and not answer.ended_properly and not self._cancel.is_set():
            failure = f"the connection to {self.base_url} broke before the answer ended"
        if self._cancel.is_set():
            answer.finish, failure = "stopped", ""
        answer.flush()
        if failure:
            self._emit(Failed(request.request_id, f"{failure}. The partial answer is kept; send again to retry."))
            return
        self._emit(answer.done(self.n_ctx))

    def _stream(self, request: GenerateRequest, answer: _AnswerStream) -> str:
        """Feed the server's event stream into `answer`; returns what went wrong, or "" (a stop is not wrong)."""
        http = _http()
        try:
            with http.Client(timeout=http.Timeout(self.timeout, connect=10.0)) as client, client.stream(
                    "POST", f"{self.base_url.rstrip('/')}/chat/completions", json=self._body(request),
                    headers={**_auth(self.api_key), "Accept": "text/event-stream"}) as response:
                self._response = response
                _check_streaming(response)
                for line in response.iter_lines():
                    if self._cancel.is_set():
                        answer.finish, answer.ended_properly = "stopped", True
                        break
                    if answer.feed_line(line):
                        break
        except EndpointError as exc:
            return str(exc)
        except (http.HTTPError, OSError, ValueError, RuntimeError) as exc:
            if self._cancel.is_set():
                answer.finish = "stopped"
            elif isinstance(exc, http.TimeoutException):
                return f"the server did not answer within {self.timeout:.0f} s"
            else:
                return f"the connection to {self.base_url} broke: {exc}"
        finally:
            self._response = None
        return ""


def _check_streaming(response: Any) -> None:
    if response.status_code != 200:
        response.read()
        raise EndpointError(f"the server answered {response.status_code}: {_message_of(response)}")
    kind = response.headers.get("content-type", "")
    if "text/event-stream" not in kind:
        raise EndpointError(f"the server did not stream (content-type {kind or 'none'}): it does not "
                            "speak the OpenAI streaming protocol here")


@dataclass
class _AnswerStream:
    """One streamed answer: it parses the server-sent events, emits the tokens, and keeps what `Done` reports.

    A server with a reasoning parser sends the thinking as `reasoning_content` and the answer already split;
    otherwise the `<think>` tags arrive inline in `content` and the splitter finds them. Tool calls come as
    `delta.tool_calls` from a server with a tool parser, else as `<tool_call>` text in `content`: both become
    Part.TOOL_CALL tokens, the first rendered the way Qwen writes the second.
    """

    request_id: int
    emit: Callable[[EngineEvent], None]
    find_tool_calls: bool = False  # tools were offered: look for `<tool_call>` text in the answer
    splitter: ThinkingSplitter = field(init=False)
    after_reasoning: ToolCallSplitter = field(default_factory=ToolCallSplitter)  # content split by a reasoning parser
    deltas: ToolCallDeltas = field(default_factory=ToolCallDeltas)
    inline_calls: list[str] = field(default_factory=list)  # the `<tool_call>` text found in `content`
    via_reasoning: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_at: float | None = None
    last_at: float = 0.0
    chunks: int = 0
    finish: str = "stop"
    usage: dict[str, Any] = field(default_factory=dict)
    ended_properly: bool = False

    def __post_init__(self) -> None:
        self.last_at = self.started
        self.splitter = ThinkingSplitter(starts_in_thinking=False, find_tool_calls=self.find_tool_calls)

    @property
    def stream(self) -> StreamText:
        return self.splitter.text  # the answer's one copy, shared with the session and the UI

    def feed_line(self, line: str) -> bool:
        """One line of the event stream; True at its `[DONE]`."""
        if not line.startswith("data:"):
            return False
        data = line[5:].strip()
        if data == "[DONE]":
            self.ended_properly = True
            return True
        event = json.loads(data)
        if "error" in event:
            raise EndpointError(f"the server reported an error mid-answer: {_message_of_obj(event)}")
        self.usage = event.get("usage") or self.usage
        for choice in event.get("choices") or []:
            self._choice(choice)
        return False

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        text = delta.get("content")
        calls = delta.get("tool_calls") or []
        if thought or text or calls:
            now = time.perf_counter()
            self.first_at = self.first_at or now
            self.last_at = now
            self.chunks += 1
        if thought:
            self.via_reasoning = True
            self._token(Part.THINKING, thought)
        if text:
            self._answer_text(text)
        if calls:
            self._show_call(self.deltas.feed(calls))
        if choice.get("finish_reason"):
            self._show_call(self.deltas.close())
            reason = choice["finish_reason"]
            self.finish = "stop" if reason in ("tool_calls", "function_call") else reason  # the model ended: calls
            self.ended_properly = True

    def _answer_text(self, text: str) -> None:
        if not self.via_reasoning:
            self._split(self.splitter.feed(text))
        elif self.find_tool_calls:  # a reasoning parser split the thinking off, but no tool parser the calls
            self._calls_after_reasoning(self.after_reasoning.feed(text))
        else:
            self._token(Part.ANSWER, text)

    def _calls_after_reasoning(self, pieces: list[tuple[str, str]]) -> None:
        for kind, piece in pieces:
            if kind == "call":
                self.inline_calls.append(piece)
            self._token(Part.TOOL_CALL if kind == "call" else Part.ANSWER, piece)

    def _split(self, pieces: list[tuple[Part, str]]) -> None:
        """Emit what the splitter split (it has added it to the stream itself)."""
        for part, piece in pieces:
            if part is Part.TOOL_CALL:
                self.inline_calls.append(piece)
            self.emit(Token(self.request_id, part, piece, stream=self.stream))

    def _show_call(self, text: str) -> None:
        """The rendering of a call the server parsed: in the stream as a call, not among the inline ones."""
        if text:
            self._token(Part.TOOL_CALL, text)

    def _token(self, part: Part, text: str) -> None:
        self.stream.append(part, text)
        self.emit(Token(self.request_id, part, text, stream=self.stream))

    def flush(self) -> None:
        """What is still held back: the end of a call being shown, a "<" that might have begun a tag."""
        self._show_call(self.deltas.close())
        self._split(self.splitter.finish())
        self._calls_after_reasoning(self.after_reasoning.finish())

    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The calls the server parsed, then those written inline (never one twice)."""
        return merged_calls(self.deltas.calls(), parse_tool_calls("".join(self.inline_calls)))

    def done(self, n_ctx: int) -> Done:
        splitter = self.splitter
        thinking = self.stream.thinking.strip("\n") if self.via_reasoning else splitter.thinking
        answer = splitter.answer.lstrip("\n") if self.via_reasoning else splitter.answer
        calls = self.tool_calls()
        ended = time.perf_counter()
        first = self.first_at or ended
        last_at = self.last_at
        completion = int(self.usage.get("completion_tokens") or self.chunks)
        prompt_tokens = int(self.usage.get("prompt_tokens") or 0)
        return Done(
            request_id=self.request_id, finish=self.finish, thinking=thinking, answer=answer,
            saw_thinking=bool(thinking) or splitter.saw_thinking,
            thinking_closed=bool(answer) or bool(calls) or splitter.thinking_closed,
            prompt_tokens=prompt_tokens, prompt_evaluated=prompt_tokens, completion_tokens=completion,
            prompt_seconds=first - self.started, generation_seconds=last_at - first,
            context_used=prompt_tokens + completion, n_ctx=n_ctx,
            tokens_per_second=(self.chunks - 1) / (last_at - first) if self.chunks > 1 and last_at > first else 0.0,
            tool_calls=calls)


def _message_of_obj(event: dict[str, Any]) -> str:
    error = event.get("error")
    return str(error.get("message") if isinstance(error, dict) else error)
