"""An answer's events in OpenAI's shapes: stream chunks as they come and the whole response at the end.

Thinking goes out as `reasoning_content`, the answer as `content`, Qwen's `<tool_call>` blocks as `tool_calls`
(each one as soon as its block closes, with an id). Stop strings cut the answer where they begin; the text that
might be the start of one is held back until it is clear. `usage` and llama-server's `timings` come with the last
chunk and with every whole response.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from qwen_chat.engines.protocol import Done, Token
from qwen_chat.qwen3.thinking import Part
from qwen_chat.qwen3.tool_calls import CALL_CLOSE, ToolCall, parse_tool_calls

_FINISH = {"stop": "stop", "stopped": "stop", "length": "length"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


class StopStrings:
    """Finds the first stop string in streamed text; holds back an end that may begin one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = stops
        self._held = ""
        self.hit = False

    def feed(self, text: str) -> str:
        """The text that is safe to send now ("" after a hit: the rest is cut)."""
        if not self._stops or self.hit:
            return "" if self.hit else text
        text = self._held + text
        found = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if found:
            self.hit, self._held = True, ""
            return text[: min(found)]
        keep = max((_partial_end(text, s) for s in self._stops), default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.hit else held


def _partial_end(text: str, stop: str) -> int:
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0


@dataclass
class AnswerBuilder:
    """Collects one chat answer from the engine's events and says what to send for each."""

    model: str
    stops: StopStrings
    id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=lambda: int(time.time()))
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    _call_text: list[str] = field(default_factory=list)
    _closed_calls: int = 0

    def token(self, event: Token) -> dict[str, Any] | None:
        """The delta for a piece of text, or None when there is nothing to send yet."""
        if event.part is Part.THINKING:
            self.reasoning.append(event.text)
            return {"reasoning_content": event.text}
        if event.part is Part.TOOL_CALL:
            self._call_text.append(event.text)
            if event.text.count(CALL_CLOSE) == 0:
                return None
            return self._new_calls(parse_tool_calls("".join(self._call_text)))
        text = self.stops.feed(event.text)
        if not text:
            return None
        self.content.append(text)
        return {"content": text}

    def finish(self, done: Done) -> list[dict[str, Any]]:
        """The last deltas: text held back for a stop string, calls whose block the end cut off."""
        deltas = []
        if held := self.stops.flush():
            self.content.append(held)
            deltas.append({"content": held})
        if len(done.tool_calls) > len(self.calls) and (late := self._new_calls(list(done.tool_calls))):
            deltas.append(late)
        return deltas

    def _new_calls(self, parsed: list[ToolCall]) -> dict[str, Any] | None:
        fresh = [ToolCall(c.name, c.arguments, c.error, c.raw, new_id("call")) for c in parsed[len(self.calls):]]
        if not fresh:
            return None
        start = len(self.calls)
        self.calls.extend(fresh)
        return {"tool_calls": [{"index": start + i, **wire_call(c)} for i, c in enumerate(fresh)]}

    def finish_reason(self, done: Done) -> str:
        return "tool_calls" if self.calls else _FINISH.get(done.finish, "stop")

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def response(self, done: Done) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = [wire_call(c) for c in self.calls]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason(done)}],
                **accounting(done)}


def wire_call(call: ToolCall) -> dict[str, Any]:
    """A call in OpenAI's form: arguments as a JSON string (the text as written when it was not JSON)."""
    arguments = json.dumps(call.arguments, ensure_ascii=False) if not call.error else call.raw.strip()
    return {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def accounting(done: Done) -> dict[str, Any]:
    """`usage` (OpenAI's, with the prompt tokens found in the KV cache) and `timings` (llama-server's)."""
    cached = done.prompt_tokens - done.prompt_evaluated
    prompt_ms = done.prompt_seconds * 1000
    predicted_ms = done.generation_seconds * 1000
    return {
        "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                  "total_tokens": done.prompt_tokens + done.completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": cached},
                  "completion_tokens_details": {"reasoning_tokens": done.thinking_tokens}},
        "timings": {"cache_n": cached, "prompt_n": done.prompt_evaluated, "prompt_ms": round(prompt_ms, 3),
                    "prompt_per_second": round(done.prompt_evaluated / done.prompt_seconds, 3)
                    if done.prompt_seconds > 0 else 0.0,
                    "predicted_n": done.completion_tokens, "predicted_ms": round(predicted_ms, 3),
                    "predicted_per_second": round(done.tokens_per_second, 3)},
    }


class RawText:
    """A plain completion is raw text: thinking the engine split off gets its tags back around it."""

    def __init__(self) -> None:
        self._thinking: bool | None = None  # None: no thinking seen; True: inside it; False: after it

    def piece(self, event: Token) -> str:
        if event.part is Part.THINKING:
            opened, self._thinking = self._thinking is None, True
            return ("<think>\n" if opened else "") + event.text
        if self._thinking:
            self._thinking = False
            return "\n</think>\n\n" + event.text
        return event.text
