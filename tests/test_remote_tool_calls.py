"""Tool calls through the OpenAI-compatible engine: what it sends (the `tools` field, calls and results in the
wire shape) and what it reads back, from a server's tool parser (`delta.tool_calls`, streamed in pieces) or from
Qwen's `<tool_call>` text in `content` (a server without one), against the replaying loopback server and
llama-cpp-python's own server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qwen_chat.engines.http import RemoteEngine
from qwen_chat.engines.http_tool_calls import ToolCallDeltas, merged_calls, wire_messages
from qwen_chat.engines.protocol import Done, GenerateRequest, Loaded, LoadRequest, Token
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.thinking import Part
from qwen_chat.qwen3.tool_calls import ToolCall, parse_tool_calls
from replay_server import ReplayServer

from helpers import Recorder

ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


# ---- scripts the replay server streams ----------------------------------------------------------------------


def chunk(finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def call(index: int, call_id: str | None = None, name: str | None = None, arguments: str | None = None,
         **extra: Any) -> dict[str, Any]:
    """One `delta.tool_calls` entry, with only the fields given (as the servers send them)."""
    entry: dict[str, Any] = {"index": index, **extra}
    if call_id is not None:
        entry.update(id=call_id, type="function")
    function = {key: value for key, value in (("name", name), ("arguments", arguments)) if value is not None}
    if function:
        entry["function"] = function
    return entry


def calls(*entries: dict[str, Any]) -> dict[str, Any]:
    return chunk(tool_calls=list(entries))


USAGE = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 30}}

# vLLM --tool-call-parser hermes: the name in the first piece, the arguments in fragments, one call after another
SEQUENTIAL = [chunk(role="assistant"), chunk(content="Adding both."),
              calls(call(0, "call-a", "add")), calls(call(0, arguments='{"a"')), calls(call(0, arguments=": 2, ")),
              calls(call(0, arguments='"b": 3}')),
              calls(call(1, "call-b", "add", "")), calls(call(1, arguments='{"a": 1,')),
              calls(call(1, arguments=' "b": 1}')),
              chunk("tool_calls"), USAGE]
# two parallel calls whose pieces alternate, in one chunk and across chunks
INTERLEAVED = [chunk(role="assistant"),
               calls(call(0, "call-a", "add"), call(1, "call-b", "get_weather")),
               calls(call(0, arguments='{"a": 2')), calls(call(1, arguments='{"city": ')),
               calls(call(0, arguments=', "b": 3}'), call(1, arguments='"Zürich"}')),
               chunk("tool_calls")]
# llama-cpp-python: the id and name again in every piece
REPEATING = [chunk(role="assistant", content=None, tool_calls=None),
             *(calls(call(0, "call_0_get_weather", "get_weather", piece)) for piece in ['{"', "city", '": "', "Paris",
                                                                                        '"}', ""]),
             chunk("tool_calls", tool_calls=None)]
BROKEN = [chunk(role="assistant"), calls(call(0, "call-x", "add", '{"a": 2,')), calls(call(0, arguments=' "b": }')),
          chunk("tool_calls")]
# no tool parser: Qwen's text inline, tags cut by the chunks
INLINE_TEXT = [chunk(role="assistant"), chunk(content="<think>\nUse add.\n</think>\n\nLet me add.\n<tool_"),
               chunk(content='call>\n{"name": "add", "arguments": {"a": 2, '), chunk(content='"b": 3}}\n</tool_c'),
               chunk(content="all>"), chunk("stop")]
# a reasoning parser but no tool parser: the thinking apart, the calls still inline in content
REASONING_INLINE = [chunk(role="assistant"), chunk(reasoning_content="Use add."),
                    chunk(content="\n\nLet me add.\n<tool_call>\n"),
                    chunk(content='{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'), chunk("stop")]


# ---- the engine against the replay server ------------------------------------------------------------------


def connected(url: str, recorder: Recorder, engine_type: type[RemoteEngine] = RemoteEngine) -> RemoteEngine:
    engine = engine_type(recorder, url).start()
    engine.load(LoadRequest(Path(url), 0))
    events, _ = recorder.until(Loaded)
    assert isinstance(events[-1], Loaded), events[-1]
    return engine


def request(tools: tuple[dict[str, Any], ...] = (ADD,), messages: tuple[dict[str, Any], ...] | None = None,
            max_tokens: int = 100) -> GenerateRequest:
    return GenerateRequest(1, "", Sampling(temperature=0.0, max_tokens=max_tokens, seed=1),
                           messages=messages or ({"role": "user", "content": "What is 2+3?"},), tools=tools)


def answer(replay: ReplayServer, script: list[dict[str, Any]], tools: tuple[dict[str, Any], ...] = (ADD,),
           ) -> tuple[Done, list[Token]]:
    """The engine's Done for `script` (and the tokens before it)."""
    replay.script = script
    recorder = Recorder()
    engine = connected(replay.url, recorder)
    try:
        engine.generate(request(tools))
        events, _ = recorder.until(Done)
    finally:
        engine.shutdown()
    done = events[-1]
    assert isinstance(done, Done), done
    tokens = [e for e in events if isinstance(e, Token)]
    stream = tokens[-1].stream if tokens else None
    if stream is not None:  # the shared text is exactly what the tokens said
        for part in Part:
            assert "".join(t.text for t in tokens if t.part is part) == "".join(stream._parts[part]), part
    return done, tokens


def shown(tokens: list[Token], part: Part = Part.TOOL_CALL) -> str:
    return "".join(t.text for t in tokens if t.part is part)


def summary(done: Done) -> list[tuple[str, dict[str, Any], str, str]]:
    return [(c.name, c.arguments, c.call_id, c.error) for c in done.tool_calls]


def test_tools_and_the_tool_loop_go_in_the_openai_wire_shape(replay: ReplayServer) -> None:
    replay.script = [chunk(content="5."), chunk("stop")]
    step = ToolCall("get_weather", {"city": "Zürich"}, call_id="call-1").as_message_call()
    messages = ({"role": "user", "content": "Weather in Zürich?"},
                {"role": "assistant", "content": "", "reasoning_content": "Ask the tool.", "tool_calls": [step]},
                {"role": "tool", "content": "Sunny, 21 °C", "tool_call_id": "call-1"})
    recorder = Recorder()
    engine = connected(replay.url, recorder)
    try:
        engine.generate(request((ADD, WEATHER), messages))
        recorder.until(Done)
        engine.generate(request(()))
        recorder.until(Done)
    finally:
        engine.shutdown()
    with_tools, without = replay.requests[-2:]
    assert with_tools["tools"] == [ADD, WEATHER]
    assert with_tools["messages"] == [
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "", "reasoning_content": "Ask the tool.",
         "tool_calls": [{"id": "call-1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}}]},
        {"role": "tool", "content": "Sunny, 21 °C", "tool_call_id": "call-1"}]
    assert step["function"]["arguments"] == {"city": "Zürich"}  # the request's own messages are left as they were
    assert "tools" not in without and without["messages"] == [{"role": "user", "content": "What is 2+3?"}]


def test_calls_streamed_in_pieces_one_after_another(replay: ReplayServer) -> None:
    done, tokens = answer(replay, SEQUENTIAL)
    assert summary(done) == [("add", {"a": 2, "b": 3}, "call-a", ""), ("add", {"a": 1, "b": 1}, "call-b", "")]
    assert (done.finish, done.answer, done.completion_tokens) == ("stop", "Adding both.", 30)
    rendering = shown(tokens)  # the calls as Qwen writes them, while they stream
    assert rendering == ('<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
                         '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1}}\n</tool_call>')
    assert [(c.name, c.arguments) for c in parse_tool_calls(rendering)] == [("add", {"a": 2, "b": 3}),
                                                                           ("add", {"a": 1, "b": 1})]
    first_call = next(i for i, t in enumerate(tokens) if t.part is Part.TOOL_CALL)
    assert len([t for t in tokens[first_call:] if t.part is Part.TOOL_CALL]) >= 6  # shown piece by piece
    assert done.tool_calls[0].raw == '\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n'


def test_parallel_calls_interleaved_by_index_assemble_apart(replay: ReplayServer) -> None:
    done, tokens = answer(replay, INTERLEAVED, (ADD, WEATHER))
    assert summary(done) == [("add", {"a": 2, "b": 3}, "call-a", ""),
                             ("get_weather", {"city": "Zürich"}, "call-b", "")]
    assert done.finish == "stop" and done.answer == ""
    # shown one at a time: the second waits until the first one's arguments have closed
    assert shown(tokens) == ('<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
                             '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>')


def test_a_server_repeating_the_id_and_name_in_every_piece(replay: ReplayServer) -> None:
    done, tokens = answer(replay, REPEATING, (WEATHER,))
    assert summary(done) == [("get_weather", {"city": "Paris"}, "call_0_get_weather", "")]
    assert shown(tokens) == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_arguments_that_are_not_json_give_a_call_with_the_error(replay: ReplayServer) -> None:
    done, _ = answer(replay, BROKEN)
    (broken,) = done.tool_calls
    assert (broken.name, broken.arguments, broken.call_id) == ("add", {}, "call-x")
    assert "not valid JSON" in broken.error and "at character" in broken.error
    assert done.finish == "stop"


@pytest.mark.parametrize(("script", "thinking"), [(INLINE_TEXT, "Use add."), (REASONING_INLINE, "Use add.")],
                         ids=["inline-think", "reasoning-parser"])
def test_call_text_in_content_from_a_server_without_a_tool_parser(replay: ReplayServer, script: list,
                                                                  thinking: str) -> None:
    done, tokens = answer(replay, script)
    assert [(c.name, c.arguments, c.error) for c in done.tool_calls] == [("add", {"a": 2, "b": 3}, "")]
    assert (done.thinking, done.answer.strip(), done.finish) == (thinking, "Let me add.", "stop")
    assert shown(tokens) == '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    assert "tool_call" not in shown(tokens, Part.ANSWER)


def test_without_tools_call_text_is_just_answer_text(replay: ReplayServer) -> None:
    done, tokens = answer(replay, INLINE_TEXT, tools=())
    assert done.tool_calls == () and not shown(tokens)
    assert done.answer == 'Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    assert "tools" not in replay.requests[-1]


def test_a_call_both_parsed_and_passed_on_as_text_is_kept_once(replay: ReplayServer) -> None:
    script = [chunk(role="assistant"), calls(call(0, "call-a", "add", '{"a": 2, "b": 3}')),
              chunk(content='<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>\n'
                            '<tool_call>\n{"name": "add", "arguments": {"a": 7, "b": 7}}\n</tool_call>'),
              chunk("tool_calls")]
    done, _ = answer(replay, script)
    assert summary(done) == [("add", {"a": 2, "b": 3}, "call-a", ""), ("add", {"a": 7, "b": 7}, "", "")]


@pytest.mark.parametrize("end", [[chunk("length")], []], ids=["length", "no-finish-reason"])
def test_a_call_cut_off_by_the_end_is_closed_and_reported(replay: ReplayServer, end: list) -> None:
    done, tokens = answer(replay, [chunk(role="assistant"), calls(call(0, "c1", "get_weather")),
                                   calls(call(0, arguments='{"city": "Os')), *end], (WEATHER,))
    (cut,) = done.tool_calls
    assert (cut.name, cut.call_id, done.finish) == ("get_weather", "c1", "length" if end else "stop")
    assert "not valid JSON" in cut.error
    assert shown(tokens) == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Os}\n</tool_call>'


# ---- the assembly on its own ----------------------------------------------------------------------------------


def test_pieces_without_an_index_or_arguments() -> None:
    deltas = ToolCallDeltas()
    text = deltas.feed([{"id": "x", "function": {"name": "ping"}}])
    text += deltas.feed([{"id": "y", "function": {"name": "add", "arguments": '"{\\"a\\": 1}"'}}])  # JSON twice
    text += deltas.close()
    assert [(c.name, c.arguments, c.call_id) for c in deltas.calls()] == [("ping", {}, "x"), ("add", {"a": 1}, "y")]
    assert text == ('<tool_call>\n{"name": "ping", "arguments": {}}\n</tool_call>'
                    '<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1}"}\n</tool_call>')
    assert deltas.calls()[1].raw.startswith('\n{"name": "add"')


def test_a_call_without_a_name_or_with_arguments_not_an_object() -> None:
    deltas = ToolCallDeltas()
    assert deltas.feed([{"index": 0, "function": {"arguments": "{}"}},
                        {"index": 1, "id": "z", "function": {"name": "add", "arguments": "[1, 2]"}}]).startswith(
        '<tool_call>\n{"name": "add"')  # a call shows once it has a name
    nameless, listed = deltas.calls()
    assert nameless.name == "" and "without a function name" in nameless.error
    assert (listed.name, listed.error) == ("add", '"arguments" must be a JSON object')


def test_a_call_whose_arguments_never_close_holds_the_next_one_back_until_the_end() -> None:
    deltas = ToolCallDeltas()
    text = deltas.feed([call(0, "a", "add", '{"a": 1, "note": "a } in a string \\" still"')])
    text += deltas.feed([call(1, "b", "add", '{"a": 2}')])
    assert text == '<tool_call>\n{"name": "add", "arguments": {"a": 1, "note": "a } in a string \\" still"'
    assert deltas.close() == ('}\n</tool_call><tool_call>\n{"name": "add", "arguments": {"a": 2}}\n</tool_call>')
    assert deltas.close() == ""
    assert [c.error != "" for c in deltas.calls()] == [True, False]


def test_wire_messages_and_merging() -> None:
    messages = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]}]
    assert wire_messages(messages) == messages  # arguments already a string stay as they are
    same = ToolCall("add", {"a": 1}, call_id="c")
    assert merged_calls([same], [ToolCall("add", {"a": 1}), ToolCall("add", {"a": 1})]) == (
        same, ToolCall("add", {"a": 1}))  # one of the two inline ones is the parsed call, the other one more


# ---- llama-cpp-python's own server ----------------------------------------------------------------------------


class NamedToolEngine(RemoteEngine):
    """Asks for a call of `get_weather` by name: llama-cpp-python's server then constrains the answer to the
    function's arguments with a grammar and streams it as `delta.tool_calls`. (With the default "auto" it passes
    the answer on as content, and the 0.5B test model answers with a bare JSON object, no `<tool_call>` tags.)"""

    def _body(self, request: GenerateRequest) -> dict[str, Any]:
        body = super()._body(request)
        if request.tools:
            body["tool_choice"] = {"type": "function", "function": {"name": "get_weather"}}
        return body


def test_real_llama_cpp_server_streams_a_call_and_reads_its_result(llama_server: str) -> None:
    recorder = Recorder()
    engine = connected(llama_server, recorder, NamedToolEngine)
    question = {"role": "user", "content": "What is the weather in Paris?"}
    try:
        engine.generate(request((WEATHER, ADD), (question,), max_tokens=40))
        events, _ = recorder.until(Done, timeout=120)
        done = events[-1]
        assert isinstance(done, Done), done
        (weather,) = done.tool_calls
        assert (weather.name, weather.arguments, weather.error, done.finish) == ("get_weather", {"city": "Paris"},
                                                                                 "", "stop")
        assert weather.call_id
        tokens = [e for e in events if isinstance(e, Token)]
        assert json.loads(shown(tokens).removeprefix("<tool_call>").removesuffix("</tool_call>")) == {
            "name": "get_weather", "arguments": {"city": "Paris"}}
        # the call and its result go back in the wire shape, and the server answers from them
        loop = (question, {"role": "assistant", "content": "", "tool_calls": [weather.as_message_call()]},
                {"role": "tool", "content": "Sunny, 21 degrees", "tool_call_id": weather.call_id})
        engine.generate(request((), loop, max_tokens=30))
        events, _ = recorder.until(Done, timeout=120)
        assert isinstance(events[-1], Done), events[-1]
        assert events[-1].answer and not events[-1].tool_calls
    finally:
        engine.shutdown()
