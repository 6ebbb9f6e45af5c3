"""Qwen's tool-call protocol, byte by byte: prompts with tools against the official templates' own rendering,
and the stream splitter and call parser at every chunk boundary."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt
from qwen_chat.qwen3.thinking import Part, ThinkingSplitter
from qwen_chat.qwen3.tool_calls import ToolCall, ToolCallSplitter, parse_tool_calls

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
CALL = ToolCall("add", {"a": 2, "b": 3}, call_id="call-1").as_message_call()

SYSTEM_WITH_TOOLS = (
    "<|im_start|>system\nYou are helpful.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
    "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": '
    '{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": '
    '["a", "b"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments '
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call><|im_end|>\n")


def _template(name: str) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / name).read_text(encoding="utf-8"))


def _loop_turns() -> list[Turn]:
    return [
        Turn("system", "You are helpful."),
        Turn("user", "Hi"),
        Turn("assistant", "Hello!", thinking="an earlier thought"),
        Turn("user", "What is 2+3?"),
        Turn("assistant", "", thinking="Use add.", tool_calls=(CALL,)),
        Turn("tool", "5", tool_call_id="call-1"),
    ]


def test_a_tool_loop_renders_exactly_as_the_official_hybrid_template_does() -> None:
    prompt = build_prompt(_template("qwen3-hybrid.jinja"), _loop_turns(), enable_thinking=True, tools=[ADD])
    assert prompt == (
        SYSTEM_WITH_TOOLS
        + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"  # earlier thinking dropped
        + "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        + "<|im_start|>assistant\n<think>\nUse add.\n</think>\n\n"  # the current loop keeps its thinking
        + '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>\n'
        + "<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n"
        + "<|im_start|>assistant\n")


def test_the_thinking_2507_template_renders_the_loop_and_opens_thinking() -> None:
    prompt = build_prompt(_template("qwen3-thinking-2507.jinja"), _loop_turns(), enable_thinking=True, tools=[ADD])
    assert prompt.startswith(SYSTEM_WITH_TOOLS)
    assert prompt.endswith("<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n"
                           "<|im_start|>assistant\n<think>\n")
    assert "an earlier thought" not in prompt and "<think>\nUse add.\n</think>" in prompt


def test_parallel_calls_and_results_share_one_assistant_and_one_user_turn() -> None:
    second = ToolCall("add", {"a": 1, "b": 1}, call_id="call-2").as_message_call()
    turns = [Turn("user", "Sums?"), Turn("assistant", "Two sums.", tool_calls=(CALL, second)),
             Turn("tool", "5", tool_call_id="call-1"), Turn("tool", "2", tool_call_id="call-2")]
    prompt = build_prompt(_template("qwen3-hybrid.jinja"), turns, enable_thinking=False, tools=[ADD])
    assert prompt.endswith(
        "<|im_start|>user\nSums?<|im_end|>\n<|im_start|>assistant\nTwo sums.\n"
        '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>\n'
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n5\n</tool_response>\n<tool_response>\n2\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_without_tools_the_prompt_is_unchanged() -> None:
    template = _template("qwen3-hybrid.jinja")
    turns = [Turn("user", "Hi")]
    assert build_prompt(template, turns, enable_thinking=True, tools=()) == "<|im_start|>user\nHi<|im_end|>\n" \
        "<|im_start|>assistant\n"


REPLY = ("<think>\nI could write <tool_call>{\"name\": \"nope\"}</tool_call> here.\n</think>\n\nLet me add.\n"
         '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>\n'
         "<tool_call>\n<function=echo>\n<parameter=text>\nline one\nline two\n</parameter>\n"
         "<parameter=times>\n2\n</parameter>\n</function>\n</tool_call>")


def _split(text: str, cut: int, second_cut: int) -> dict[Part, str]:
    splitter = ThinkingSplitter(find_tool_calls=True)
    pieces = splitter.feed(text[:cut]) + splitter.feed(text[cut:second_cut]) + splitter.feed(text[second_cut:])
    pieces += splitter.finish()
    joined = {part: "".join(t for p, t in pieces if p is part) for part in Part}
    assert joined == {part: getattr(splitter.text, name) for part, name in
                      ((Part.THINKING, "thinking"), (Part.ANSWER, "answer"), (Part.TOOL_CALL, "tool_call_text"))}
    return joined


def test_calls_are_split_out_of_the_answer_at_every_chunk_boundary_and_never_out_of_thinking() -> None:
    expected = _split(REPLY, len(REPLY), len(REPLY))
    assert expected[Part.THINKING].startswith("I could write <tool_call>")  # inside thinking: not a call
    assert expected[Part.ANSWER] == "Let me add.\n\n"
    for cut in range(len(REPLY) + 1):
        for second in (cut, min(len(REPLY), cut + 7)):
            assert _split(REPLY, cut, second) == expected, (cut, second)
    calls = parse_tool_calls(expected[Part.TOOL_CALL])
    assert [(c.name, c.arguments, c.error) for c in calls] == [
        ("add", {"a": 2, "b": 3}, ""), ("echo", {"text": "line one\nline two", "times": 2}, "")]


def test_without_tools_offered_a_literal_tool_call_is_answer_text() -> None:
    splitter = ThinkingSplitter()
    pieces = splitter.feed('<tool_call>\n{"name": "add"}\n</tool_call>') + splitter.finish()
    assert {p for p, _ in pieces} == {Part.ANSWER} and not splitter.text.tool_calls()


@pytest.mark.parametrize(("body", "error"), [
    ('{"name": "add", "arguments": {"a": 2,', "not valid JSON"),
    ('["add"]', 'JSON object with a "name"'),
    ('{"name": "add", "arguments": [1, 2]}', '"arguments" must be a JSON object'),
    ('{"name": "add", "arguments": "{not json"}', "string that is not JSON"),
    ("<function>oops</function>", "must start with <function=NAME>"),
])
def test_malformed_calls_are_reported_not_guessed(body: str, error: str) -> None:
    (call,) = parse_tool_calls(f"<tool_call>\n{body}\n</tool_call>")
    assert error in call.error


def test_a_call_cut_off_by_the_end_is_malformed_and_arguments_as_a_string_are_read() -> None:
    splitter = ToolCallSplitter()
    pieces = splitter.feed('<tool_call>\n{"name": "add", "argum') + splitter.finish()
    (cut,) = parse_tool_calls("".join(t for k, t in pieces if k == "call"))
    assert cut.name == "add" and "not valid JSON" in cut.error
    (stringy,) = parse_tool_calls('<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert stringy.arguments == {"a": 1} and not stringy.error
