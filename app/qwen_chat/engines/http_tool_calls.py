"""Tool calls over the OpenAI wire: the chat messages that carry them to a server, and the calls a server with a
tool parser streams back as `delta.tool_calls` (vLLM `--tool-call-parser hermes`, SGLang `qwen25`,
llama-server `--jinja`).

A streamed call arrives in pieces keyed by `index`: the first carries its `id` and `function.name`, the next
ones fragments of `function.arguments`, a JSON text. Some servers (llama-cpp-python's) repeat the id and name in
every piece. While the pieces arrive the call is shown the way Qwen writes it inline,
`<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, so the UI shows both kinds alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qwen_chat.qwen3.tool_calls import CALL_CLOSE, CALL_OPEN, ToolCall


def wire_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages in the OpenAI wire shape: a call's `function.arguments` is a JSON string there (the
    engines' messages hold it as a dict, the shape the chat templates read). The servers require the string:
    llama-server reads it into a std::string, SGLang's and llama-cpp-python's message models type it `str`, and
    vLLM parses it back into a dict for the template.

    `reasoning_content` on an assistant message is sent as it is: the session sets it only on the steps of the
    tool loop under way, which the official Qwen3 templates render with their thinking. llama-server
    (common_chat_msgs_parse_oaicompat) and SGLang (ChatCompletionMessageGenericParam) read it into the template,
    recent vLLM too (as `reasoning` or `reasoning_content`); older vLLM and other servers ignore the unknown key.
    """
    wired = []
    for message in messages:
        out = dict(message)
        if message.get("tool_calls"):
            out["tool_calls"] = [_wire_call(call) for call in message["tool_calls"]]
        wired.append(out)
    return wired


def _wire_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {"id": call.get("id", ""), "type": call.get("type", "function"),
            "function": {"name": function.get("name", ""), "arguments": arguments}}


@dataclass
class _Call:
    index: int
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)  # the fragments of the JSON text, as they came
    complete: bool = False  # the arguments' outermost object has closed
    closed: bool = False  # its rendering has ended
    _depth: int = 0
    _in_string: bool = False
    _escaped: bool = False

    def absorb(self, delta: dict[str, Any]) -> str:
        """One piece of the call; returns its arguments fragment ("" for none)."""
        if not self.call_id and isinstance(delta.get("id"), str):
            self.call_id = delta["id"]
        function = delta.get("function") or {}
        name = function.get("name")
        if isinstance(name, str) and name != self.name:  # once (OpenAI), repeated (llama-cpp-python) or in parts
            self.name = name if not self.name or name.startswith(self.name) else self.name + name
        fragment = function.get("arguments")
        if fragment is None or fragment == "":
            return ""
        text = fragment if isinstance(fragment, str) else json.dumps(fragment, ensure_ascii=False)
        self.arguments.append(text)
        self._scan(text)
        return text

    def _scan(self, text: str) -> None:
        """Follow the nesting of the JSON text (outside its strings): one pass over each fragment."""
        for char in text:
            if self._in_string:
                self._escaped, self._in_string = (False, True) if self._escaped else (char == "\\", char != '"')
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                self.complete = self.complete or self._depth <= 0

    @property
    def argument_text(self) -> str:
        return "".join(self.arguments)

    def opening(self) -> str:
        return f'{CALL_OPEN}\n{{"name": {json.dumps(self.name, ensure_ascii=False)}, "arguments": {self.argument_text}'

    def closing(self) -> str:
        self.closed = True
        return ("" if self.arguments else "{}") + "}\n" + CALL_CLOSE

    def tool_call(self) -> ToolCall:
        text = self.argument_text
        raw = f'\n{{"name": {json.dumps(self.name, ensure_ascii=False)}, "arguments": {text.strip() or "{}"}}}\n'
        if not self.name:
            return ToolCall("", error="the server sent a tool call without a function name", raw=raw,
                            call_id=self.call_id)
        arguments, error = _arguments(text)
        return ToolCall(self.name, arguments, error=error, raw=raw, call_id=self.call_id)


def _arguments(text: str) -> tuple[dict[str, Any], str]:
    """The arguments a call's JSON text holds, or ({}, why not) in the words `parse_tool_calls` uses."""
    if not text.strip():
        return {}, ""
    try:
        value = json.loads(text)
        if isinstance(value, str):  # arguments encoded twice
            value = json.loads(value) if value.strip() else {}
    except json.JSONDecodeError as exc:
        return {}, f"the tool call's arguments are not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(value, dict):
        return {}, '"arguments" must be a JSON object'
    return value, ""


class ToolCallDeltas:
    """Assembles the `delta.tool_calls` of one answer by index, and renders the calls as they are written.

    One call is shown at a time, from the moment its name is known until its arguments' object closes; the next
    call (by index, among those with a name) is shown then, with what it already holds. So calls whose pieces
    interleave still show whole and apart; a call whose arguments never close holds the ones after it back until
    the answer ends (`close`), which shows everything not shown yet.
    """

    def __init__(self) -> None:
        self._calls: dict[int, _Call] = {}
        self._shown: _Call | None = None

    def feed(self, deltas: Sequence[Any]) -> str:
        """One chunk's `tool_calls` list; returns the text to show for it ("" for none)."""
        shown: list[str] = []
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            index = self._index_of(delta)
            call = self._calls.setdefault(index, _Call(index))
            fragment = call.absorb(delta)
            if call is self._shown:
                shown.append(fragment)
            shown.append(self._advance(at_end=False))
        return "".join(shown)

    def _index_of(self, delta: dict[str, Any]) -> int:
        index = delta.get("index")
        if isinstance(index, int):
            return index
        last = max(self._calls, default=None)  # no index: the last call, unless the id says it is a new one
        if last is None:
            return 0
        new_id = delta.get("id")
        return last + 1 if new_id and self._calls[last].call_id and new_id != self._calls[last].call_id else last

    def _advance(self, at_end: bool) -> str:
        """Close the call shown once it is whole (any at the end), and open the next one."""
        text: list[str] = []
        while True:
            if self._shown is not None:
                if not (self._shown.complete or at_end):
                    break
                text.append(self._shown.closing())
            self._shown = next((c for _, c in sorted(self._calls.items()) if c.name and not c.closed), None)
            if self._shown is None:
                break
            text.append(self._shown.opening())
        return "".join(text)

    def close(self) -> str:
        """At the end of the answer: the rest of every call not fully shown yet ("" for none)."""
        return self._advance(at_end=True)

    def calls(self) -> list[ToolCall]:
        return [self._calls[index].tool_call() for index in sorted(self._calls)]


def merged_calls(streamed: list[ToolCall], inline: list[ToolCall]) -> tuple[ToolCall, ...]:
    """The calls the server parsed, then those the model wrote inline that are not among them (a server that
    both parses a call and passes its text on would otherwise run it twice)."""
    left = [(call.name, call.arguments) for call in streamed]
    extra = []
    for call in inline:
        if (call.name, call.arguments) in left:
            left.remove((call.name, call.arguments))
        else:
            extra.append(call)
    return (*streamed, *extra)
