"""The Qwen3 protocol, byte by byte against the official templates rendered as the reference stack does."""

from __future__ import annotations

import itertools

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from qwen_chat.qwen3.template import (
    ChatTemplate,
    Turn,
    Variant,
    apply_mode_command,
    build_prompt,
    command_of,
    effective_thinking,
    last_soft_switch,
    prompt_opens_thinking,
)
from qwen_chat.qwen3.thinking import ThinkingSplitter

from tiny_models import TEMPLATES

OFFICIAL = ["qwen3-hybrid.jinja", "qwen3-hybrid-2025-04.jinja", "qwen3-thinking-2507.jinja"]


def reference_render(template: str, messages: list[dict], enable_thinking: bool) -> str:
    """An independent renderer: llama-cpp-python's Jinja2 formatter (Transformers' behaviour)."""
    formatter = Jinja2ChatFormatter(template, eos_token="<|im_end|>", bos_token="")
    return formatter(messages=messages, enable_thinking=enable_thinking).prompt


# Each scenario: (system prompt, [(user text, raw model reply, enable_thinking for that turn)]).
# Raw replies are what the model streamed, think block included, as a reference stack would store them.
SCENARIOS = [
    ("", [("Hi there", "<think>\nThe user greets.\n</think>\n\nHello! How can I help?", True),
          ("What is 2+2?", "<think>\nSimple sum.\n\n4.\n</think>\n\n**4**", True)]),
    ("You are terse.", [
        ("Explain TCP /no_think", "<think>\n\n</think>\n\nA reliable byte stream.", True),
        ("And UDP? /think", "<think>\nContrast with TCP.\n</think>\n\nDatagrams, no delivery guarantee.", True),
        ("Thanks", "You're welcome.", False),
        ("Code please: `print('<b>[bold]x[/]</b>')`", "<think>\nJust echo.\n</think>\n\n```py\nprint(1)\n```", True),
    ]),
    ("", [("one", "<think>\nt1\n</think>\n\na1", True), ("two", "a2 without any think block", False),
          ("three", "<think>\nt3\n</think>\n\na3", True), ("four", "<think>\n\n</think>\n\na4", False)]),
]


def _answer_only(raw: str, starts_in_thinking: bool) -> tuple[str, str]:
    splitter = ThinkingSplitter(starts_in_thinking=starts_in_thinking)
    splitter.feed(raw)
    splitter.finish()
    return splitter.thinking, splitter.answer


@pytest.mark.parametrize("template_name", OFFICIAL)
@pytest.mark.parametrize("scenario", range(len(SCENARIOS)))
def test_prompts_are_byte_identical_to_reference(template_name: str, scenario: int) -> None:
    source = (TEMPLATES / template_name).read_text()
    template = ChatTemplate(source)
    system, exchanges = SCENARIOS[scenario]
    ours: list[Turn] = [Turn("system", system)] if system else []
    reference: list[dict] = [{"role": "system", "content": system}] if system else []
    for user, raw, thinking_on in exchanges:
        ours.append(Turn("user", user))
        reference.append({"role": "user", "content": user})
        prompt = build_prompt(template, ours, enable_thinking=thinking_on)
        expected = reference_render(source, reference, thinking_on)
        assert prompt == expected
        if template.variant is Variant.ALWAYS_THINKS and "</think>" not in raw:
            raw = "</think>\n\n" + raw  # a Thinking-2507 reply always closes the block the template opened
        # the model's reply is split as it streams; only the answer goes back into history
        reply = raw
        thinking, answer = _answer_only(reply, prompt_opens_thinking(prompt))
        ours.append(Turn("assistant", answer, thinking))
        reference.append({"role": "assistant", "content": raw})
    final = build_prompt(template, [*ours, Turn("user", "next")], enable_thinking=True)
    assert final == reference_render(source, [*reference, {"role": "user", "content": "next"}], True)
    # earlier thinking never reaches the model
    for _, raw, _ in exchanges:
        if "</think>" in raw:
            thought = raw.split("</think>")[0].split("<think>")[-1].strip("\n")
            if thought:
                assert thought not in final


def test_hybrid_prompt_bytes_golden() -> None:
    template = ChatTemplate((TEMPLATES / "qwen3-hybrid.jinja").read_text())
    turns = [Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", "Hello!", "greeting"),
             Turn("user", "Bye /no_think")]
    assert build_prompt(template, turns, enable_thinking=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye /no_think<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert build_prompt(template, turns, enable_thinking=True).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(("name", "variant"), [
    ("qwen3-hybrid.jinja", Variant.HYBRID),
    ("qwen3-hybrid-2025-04.jinja", Variant.HYBRID),
    ("qwen3-thinking-2507.jinja", Variant.ALWAYS_THINKS),
])
def test_variant_read_off_the_template(name: str, variant: Variant) -> None:
    assert ChatTemplate((TEMPLATES / name).read_text()).variant is variant


def test_models_without_template_or_thinking() -> None:
    fallback = ChatTemplate(None)
    assert fallback.is_fallback and fallback.variant is Variant.NO_THINKING
    assert build_prompt(fallback, [Turn("user", "hi")], enable_thinking=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    # an Instruct-2507 style template: the hybrid template without the enable_thinking branch
    instruct = (TEMPLATES / "qwen3-hybrid.jinja").read_text().replace(
        "enable_thinking is defined and enable_thinking is false", "false")
    assert ChatTemplate(instruct).variant is Variant.NO_THINKING


def test_sandbox_blocks_template_escapes() -> None:
    evil = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(Exception, match="template"):
        evil.render([{"role": "user", "content": "x"}], enable_thinking=True)


def test_soft_switches_and_commands() -> None:
    assert last_soft_switch("do it /no_think please /think") is True
    assert last_soft_switch("path/think is not a switch") is None
    assert command_of("  /no_think ") == "no_think"
    assert command_of("/think about this") is None
    hybrid = Variant.HYBRID
    assert effective_thinking(hybrid, True, ["a", "b /no_think", "c"]) is False
    assert effective_thinking(hybrid, True, ["a /no_think", "b /think"]) is True
    assert effective_thinking(hybrid, False, ["/think"]) is False  # switches are inert with enable_thinking off
    assert effective_thinking(Variant.ALWAYS_THINKS, False, ["/no_think"]) is True
    assert effective_thinking(Variant.NO_THINKING, True, ["/think"]) is False


def test_mode_commands_say_when_they_cannot_work() -> None:
    assert apply_mode_command(Variant.HYBRID, True, False).changed
    same = apply_mode_command(Variant.HYBRID, True, True)
    assert not same.changed and "already on" in same.message
    always = apply_mode_command(Variant.ALWAYS_THINKS, True, False)
    assert not always.changed and "always thinks" in always.message
    never = apply_mode_command(Variant.NO_THINKING, False, True)
    assert not never.changed and "no thinking mode" in never.message


RAW_HYBRID = ("<think>\nLet me think: </thinking> is not the tag.\n\nStill thinking\n</think>\n\n"
              "Answer with <think> and [bold]x[/]")


def _split_all_ways(raw: str, starts_in_thinking: bool) -> set[tuple[str, str, bool]]:
    results = set()
    for cut_a, cut_b in itertools.combinations(range(1, len(raw)), 2):
        splitter = ThinkingSplitter(starts_in_thinking=starts_in_thinking)
        pieces = [raw[:cut_a], raw[cut_a:cut_b], raw[cut_b:]]
        streamed = {"thinking": "", "answer": ""}
        for piece in pieces:
            for part, text in splitter.feed(piece):
                streamed[part.value] += text
        for part, text in splitter.finish():
            streamed[part.value] += text
        assert streamed["thinking"] == splitter.thinking and streamed["answer"] == splitter.answer
        results.add((splitter.thinking, splitter.answer, splitter.thinking_closed))
    return results


def test_splitter_hybrid_any_chunking() -> None:
    assert _split_all_ways(RAW_HYBRID, False) == {(
        "Let me think: </thinking> is not the tag.\n\nStill thinking", "Answer with <think> and [bold]x[/]", True)}


def test_splitter_thinking_2507_starts_inside() -> None:
    raw = "The template opened the block.\n</think>\n\nDone."
    assert _split_all_ways(raw, True) == {("The template opened the block.", "Done.", True)}


def test_splitter_no_thinking_model_keeps_text_untouched() -> None:
    raw = "\nPlain answer </th ink> <thi"
    assert _split_all_ways(raw, False) == {(raw and "", raw, False)}


def test_splitter_tag_cut_across_chunks() -> None:
    splitter = ThinkingSplitter()
    out = splitter.feed("<thi") + splitter.feed("nk>\nidea</th") + splitter.feed("ink>\n\nyes")
    assert [(p.value, t) for p, t in out] == [("thinking", "idea"), ("answer", "yes")]


def test_splitter_unterminated_thinking_when_stopped() -> None:
    splitter = ThinkingSplitter()
    splitter.feed("<think>\nhalf a thought </th")
    splitter.finish()
    assert splitter.thinking == "half a thought </th"
    assert splitter.answer == "" and not splitter.thinking_closed and splitter.saw_thinking


def test_splitter_empty_think_block_of_no_think() -> None:
    splitter = ThinkingSplitter()
    splitter.feed("<think>\n\n</think>\n\nQuick answer.")
    splitter.finish()
    assert (splitter.thinking, splitter.answer, splitter.thinking_closed) == ("", "Quick answer.", True)
