"""Qwen's tool calls as pure functions: finding them in a streamed answer and reading them.

Qwen3 (and Qwen2.5) write each call as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` in the
answer; Qwen3-Coder and Qwen3.5 write the XML form `<tool_call><function=NAME><parameter=K>V</parameter>
</function></tool_call>`. Both are read here. The splitter runs on the answer only (the thinking splitter feeds
it), so a call written inside thinking is never a call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"


@dataclass(frozen=True)
class ToolCall:
    """One call as the model wrote it. `error` is set when it cannot be run as written (the model is told why)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    raw: str = ""  # the text between the tags, as generated
    call_id: str = ""  # the server's id for it (OpenAI tool_calls), else given by the session

    def as_message_call(self) -> dict[str, Any]:
        """The call as an assistant message's `tool_calls` entry (the shape the chat templates read)."""
        return {"id": self.call_id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def _partial_suffix(text: str, tag: str) -> int:
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ToolCallSplitter:
    """Feed answer text in any chunks; get ("answer" | "call", text) pieces in order. The call pieces are the
    whole blocks, tags included, streamed as they come; `finish` releases a tag that was cut off by the end."""

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False

    def feed(self, chunk: str) -> list[tuple[str, str]]:
        self._buffer += chunk
        out: list[tuple[str, str]] = []
        while True:
            tag = CALL_CLOSE if self._inside else CALL_OPEN
            found = self._buffer.find(tag)
            if found < 0:  # all of it but a tag that may be cut by the chunk
                ready = len(self._buffer) - _partial_suffix(self._buffer, tag)
                self._put(out, self._buffer[:ready])
                self._buffer = self._buffer[ready:]
                return out
            end = found + len(tag) if self._inside else found  # an opening tag goes out with its call
            self._put(out, self._buffer[:end])
            self._buffer = self._buffer[end:]
            self._inside = not self._inside

    def _put(self, out: list[tuple[str, str]], text: str) -> None:
        if text:
            out.append(("call" if self._inside else "answer", text))

    def finish(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._put(out, self._buffer)
        self._buffer = ""
        return out


_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.DOTALL)
_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|\Z)", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.DOTALL)


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every call in the text of the call blocks (what the splitter routed to "call"), in order."""
    return [_parse_block(body) for body in _BLOCK.findall(text)]


def _parse_block(body: str) -> ToolCall:
    stripped = body.strip()
    if stripped.startswith("<"):  # the XML form: <function=NAME><parameter=K>V</parameter>...</function>
        return _parse_xml(stripped, body)
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        return ToolCall(_name_guess(stripped), error=f"the tool call is not valid JSON ({exc.msg} at character "
                        f"{exc.pos})", raw=body)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return ToolCall("", error='a tool call must be a JSON object with a "name" string', raw=body)
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return ToolCall(value["name"], error='"arguments" is a string that is not JSON', raw=body)
    if not isinstance(arguments, dict):
        return ToolCall(value["name"], error='"arguments" must be a JSON object', raw=body)
    return ToolCall(value["name"], arguments, raw=body)


def _name_guess(text: str) -> str:
    found = re.search(r'"name"\s*:\s*"([^"]+)"', text)
    return found.group(1) if found else ""


def _parse_xml(text: str, body: str) -> ToolCall:
    function = _FUNCTION.match(text)
    if function is None:
        return ToolCall("", error="a tool call in XML form must start with <function=NAME>", raw=body)
    arguments = {key: _xml_value(value) for key, value in _PARAMETER.findall(function.group(2))}
    return ToolCall(function.group(1), arguments, raw=body)


def _xml_value(text: str) -> Any:
    """A parameter's value: JSON when it reads as JSON (numbers, objects, true), else the text itself. Qwen's
    XML form puts the value on its own lines, so one leading and one trailing newline are not part of it."""
    if text.startswith("\n"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
