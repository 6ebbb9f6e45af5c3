"""Split a streamed Qwen3 reply into thinking and answer, whatever the chunk boundaries.

The stored texts match what the official template would keep from the raw reply: thinking is the text
between the tags with surrounding newlines stripped, the answer is what follows `</think>` with leading
newlines stripped. A reply with no think block is all answer, untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from qwen_chat.qwen3.template import THINK_CLOSE, THINK_OPEN
from qwen_chat.qwen3.tool_calls import ToolCall, ToolCallSplitter, parse_tool_calls


class Part(Enum):
    THINKING = "thinking"
    ANSWER = "answer"
    TOOL_CALL = "tool_call"  # the raw `<tool_call>...</tool_call>` blocks of the answer, tags included


class StreamText:
    """The text of one answer as it streams: the one copy of it, appended on the engine thread.

    Appends are O(1) (a list of pieces, never `str +=`, which copies the whole text each time); readers on other
    threads (the answer writer, the UI) take `thinking` / `answer` when they need the whole text. A list append
    and a `"".join` each run under the GIL in one step, so a reader sees a consistent prefix.
    """

    def __init__(self) -> None:
        self._parts: dict[Part, list[str]] = {part: [] for part in Part}
        self._lengths = dict.fromkeys(Part, 0)

    def append(self, part: Part, text: str) -> None:
        self._parts[part].append(text)
        self._lengths[part] += len(text)

    def length(self, part: Part) -> int:
        return self._lengths[part]

    @property
    def thinking(self) -> str:
        return "".join(self._parts[Part.THINKING])

    @property
    def answer(self) -> str:
        return "".join(self._parts[Part.ANSWER])

    @property
    def tool_call_text(self) -> str:
        return "".join(self._parts[Part.TOOL_CALL])

    def tool_calls(self) -> list[ToolCall]:
        return parse_tool_calls(self.tool_call_text)


class _State(Enum):
    START = 0  # nothing decided yet: a reply may open with <think>
    THINKING = 1
    ANSWER_LEAD = 2  # just after </think>: newlines here are not part of the answer
    ANSWER = 3


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag` (a tag cut by a chunk)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


@dataclass
class ThinkingSplitter:
    """Feed raw text chunks; get (part, text) pieces in order. Call `finish` at the end of the stream."""

    starts_in_thinking: bool = False
    find_tool_calls: bool = False  # only when tools were offered: otherwise a literal "<tool_call>" is just text
    text: StreamText = field(default_factory=StreamText)  # what was split so far: the answer's one copy
    saw_thinking: bool = False
    thinking_closed: bool = False
    _state: _State = _State.START
    _buffer: str = ""
    _held_newlines: str = ""  # newlines at the end of thinking so far: kept back until text follows
    _lead: bool = True  # at the very start of the thinking text (leading newlines are dropped)
    _out: list[tuple[Part, str]] = field(default_factory=list)
    _calls: ToolCallSplitter = field(default_factory=ToolCallSplitter)  # tool calls are found in the answer only

    def __post_init__(self) -> None:
        if self.starts_in_thinking:
            self.saw_thinking = True

    @property
    def thinking(self) -> str:
        return self.text.thinking

    @property
    def answer(self) -> str:
        return self.text.answer

    def feed(self, chunk: str) -> list[tuple[Part, str]]:
        self._buffer += chunk
        self._run(final=False)
        return self._take()

    def finish(self) -> list[tuple[Part, str]]:
        self._run(final=True)
        if self._state is _State.START and self._buffer:
            self._emit_answer(self._buffer)
            self._buffer = ""
        elif self._state is _State.THINKING and self._buffer:
            self._emit_thinking(self._buffer)  # a tag cut off by a stop is thinking text after all
            self._buffer = ""
        self._route(self._calls.finish())
        return self._take()

    def _take(self) -> list[tuple[Part, str]]:
        out, self._out = self._out, []
        return out

    def _run(self, final: bool) -> None:
        while self._buffer:
            before = (self._state, len(self._buffer))
            if self._state is _State.START:
                self._start(final)
            elif self._state is _State.THINKING:
                self._think(final)
            elif self._state is _State.ANSWER_LEAD:
                stripped = self._buffer.lstrip("\n")
                if stripped:
                    self._state = _State.ANSWER
                self._buffer = stripped
            else:
                self._emit_answer(self._buffer)
                self._buffer = ""
            if (self._state, len(self._buffer)) == before:
                return  # waiting for more text

    def _start(self, final: bool) -> None:
        lead = self._buffer.lstrip()
        if lead.startswith(THINK_OPEN):
            self._buffer = lead[len(THINK_OPEN) :]
            self._state = _State.THINKING
            self.saw_thinking = True
        elif not final and THINK_OPEN.startswith(lead):
            return  # maybe a cut "<thi": wait
        elif self.starts_in_thinking:
            self._state = _State.THINKING
        else:
            self._state = _State.ANSWER

    def _think(self, final: bool) -> None:
        end = self._buffer.find(THINK_CLOSE)
        if end >= 0:
            self._emit_thinking(self._buffer[:end], closing=True)
            self._buffer = self._buffer[end + len(THINK_CLOSE) :]
            self._state = _State.ANSWER_LEAD
            self.thinking_closed = True
            return
        keep = 0 if final else _partial_suffix(self._buffer, THINK_CLOSE)
        ready = self._buffer[: len(self._buffer) - keep]
        if ready:
            self._emit_thinking(ready)
            self._buffer = self._buffer[len(ready) :]

    def _emit_thinking(self, text: str, closing: bool = False) -> None:
        if self._lead:
            text = text.lstrip("\n")
            if not text:
                return
            self._lead = False
        text = self._held_newlines + text
        body = text.rstrip("\n")
        self._held_newlines = "" if closing else text[len(body) :]
        if body:
            self.text.append(Part.THINKING, body)
            self._out.append((Part.THINKING, body))

    def _emit_answer(self, text: str) -> None:
        self._route(self._calls.feed(text) if self.find_tool_calls else [("answer", text)])

    def _route(self, pieces: list[tuple[str, str]]) -> None:
        for kind, text in pieces:
            part = Part.TOOL_CALL if kind == "call" else Part.ANSWER
            self.text.append(part, text)
            self._out.append((part, text))


# Qwen3 Technical Report §4.3 (Qwen's docs variant): inserted when thinking reaches its budget.
STOP_THINKING = ("\n\nConsidering the limited time by the user, I have to give the solution based on the thinking "
                 "directly now.\n</think>\n\n")
