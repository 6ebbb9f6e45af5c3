"""Qwen3.5 / 3.6 speak a different protocol from Qwen3, known from the model's own template (llama.cpp's copy of
Qwen3.5-4B's, a fixture): thinking by default with `enable_thinking` as the only switch, no soft switch, XML tool
calls. Nothing here looks at a file name."""

from __future__ import annotations

import queue
from pathlib import Path

from qwen_chat.config.presets import sampling_for
from qwen_chat.qwen3.sampling import preset_name
from qwen_chat.qwen3.template import ChatTemplate, Turn, Variant, apply_mode_command, build_prompt, effective_thinking
from qwen_chat.qwen3.thinking import Part, ThinkingSplitter
from qwen_chat.qwen3.tool_calls import ToolCall, parse_tool_calls

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
QWEN35 = ChatTemplate((TEMPLATES / "qwen3.5-4b.jinja").read_text(encoding="utf-8"))
ECHO = {"type": "function", "function": {"name": "echo", "description": "Echo text.", "parameters": {
    "type": "object", "properties": {"text": {"type": "string"}, "times": {"type": "integer"}}}}}


def test_the_variant_comes_from_the_template() -> None:
    assert QWEN35.variant is Variant.SWITCHABLE and QWEN35.variant.can_switch
    assert not QWEN35.variant.has_soft_switch
    hybrid = ChatTemplate((TEMPLATES / "qwen3-hybrid.jinja").read_text(encoding="utf-8"))
    assert hybrid.variant is Variant.HYBRID and hybrid.variant.has_soft_switch


def test_thinking_is_on_by_default_and_only_enable_thinking_turns_it_off() -> None:
    assert effective_thinking(Variant.SWITCHABLE, True, ["please /no_think"]) is True  # plain text to Qwen3.5
    assert effective_thinking(Variant.SWITCHABLE, False, ["/think now"]) is False
    assert effective_thinking(Variant.HYBRID, True, ["please /no_think"]) is False  # Qwen3 obeys it
    assert apply_mode_command(Variant.SWITCHABLE, True, False).changed  # /no_think typed alone still switches
    on = build_prompt(QWEN35, [Turn("user", "Hi")], enable_thinking=True)
    off = build_prompt(QWEN35, [Turn("user", "Hi")], enable_thinking=False)
    assert on.endswith("<|im_start|>assistant\n<think>\n") and off.endswith("<think>\n\n</think>\n\n")


def test_the_presets_are_qwen35s_own() -> None:
    assert preset_name(Variant.SWITCHABLE, True) == "qwen35-thinking"
    thinking, plain = sampling_for(Variant.SWITCHABLE, True, True), sampling_for(Variant.SWITCHABLE, False, True)
    assert (thinking.temperature, thinking.top_p, thinking.top_k, thinking.presence_penalty) == (1.0, 0.95, 20, 1.5)
    assert (plain.temperature, plain.top_p, plain.top_k, plain.presence_penalty) == (0.7, 0.8, 20, 1.5)


def test_a_tool_loop_renders_xml_calls_and_the_parser_reads_them_back() -> None:
    call = ToolCall("echo", {"text": "two\nlines", "times": 2}, call_id="c1").as_message_call()
    turns = [Turn("user", "Echo"), Turn("assistant", "", thinking="Use echo.", tool_calls=(call,)),
             Turn("tool", "two\nlines\ntwo\nlines", tool_call_id="c1")]
    prompt = build_prompt(QWEN35, turns, enable_thinking=True, tools=[ECHO])
    assert prompt.startswith("<|im_start|>system\n# Tools\n\nYou have access to the following functions:\n\n<tools>\n"
                             '{"type": "function", "function": {"name": "echo"')
    rendered = ("<|im_start|>assistant\n<think>\nUse echo.\n</think>\n\n<tool_call>\n<function=echo>\n"
                "<parameter=text>\ntwo\nlines\n</parameter>\n<parameter=times>\n2\n</parameter>\n</function>\n"
                "</tool_call><|im_end|>\n")
    assert rendered in prompt
    assert prompt.endswith("<|im_start|>user\n<tool_response>\ntwo\nlines\ntwo\nlines\n</tool_response><|im_end|>\n"
                           "<|im_start|>assistant\n<think>\n")
    # what the model writes in that form is split out of its answer and read as the same call
    splitter = ThinkingSplitter(starts_in_thinking=True, find_tool_calls=True)
    reply = "Use echo.\n</think>\n\n" + rendered.split("\n\n", 1)[1].removesuffix("<|im_end|>\n")
    pieces = splitter.feed(reply) + splitter.finish()
    (parsed,) = parse_tool_calls("".join(t for p, t in pieces if p is Part.TOOL_CALL))
    assert (parsed.name, parsed.arguments, parsed.error) == ("echo", {"text": "two\nlines", "times": 2}, "")


def test_a_soft_switch_in_a_message_is_explained_once(tmp_path: Path) -> None:
    from qwen_chat.engines.protocol import Loaded
    from qwen_chat.session.chat import ChatSession
    from qwen_chat.session.events import AnswerSaved, Notice
    from qwen_chat.store.database import Store

    from fake_engine import FakeEngine
    from helpers import events_until
    from tiny_models import write_tiny_qwen3

    model = write_tiny_qwen3(tmp_path / "q35.gguf", "qwen3.5-4b.jinja")  # a tiny model with Qwen3.5's template
    events: queue.Queue = queue.Queue()
    session = ChatSession(Store(tmp_path / "c.db"), events.put, engine=FakeEngine.scripted())
    session.load_model(model, 512)
    events_until(events, lambda e: isinstance(e, Loaded), 30)
    assert session.model.variant is Variant.SWITCHABLE
    conversation = session.new_conversation()
    told = []
    for text in ("Answer fast /no_think", "And again /no_think"):
        session.send(conversation.id, text)
        told += [e for e in events_until(events, lambda e: isinstance(e, AnswerSaved), 30) if isinstance(e, Notice)]
    session.close()
    assert len(told) == 1 and "no /think or /no_think switch inside a message" in told[0].text
