"""The Qwen3 chat protocol as pure functions: template rendering, thinking modes, soft switches.

The prompt is always the model's own chat template (GGUF `tokenizer.chat_template`) rendered the way
Hugging Face's reference stack renders it (sandboxed Jinja2, trim_blocks, lstrip_blocks). Earlier turns are
passed with their answer only: the Qwen3 templates drop earlier thinking themselves, and passing none keeps
non-Qwen3 templates from ever seeing it either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import cached_property
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# Used when a GGUF carries no template at all (old conversions): plain ChatML, which every Qwen speaks.
CHATML_FALLBACK = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


class Variant(Enum):
    """What a model can do with thinking, read off its own template."""

    HYBRID = "hybrid"  # Qwen3 2504: thinking on/off per conversation and per message (/think, /no_think)
    # Qwen3.5 / 3.6: thinks by default and `enable_thinking` is the only switch; /think inside a message is text
    SWITCHABLE = "switchable"
    ALWAYS_THINKS = "thinking"  # Thinking-2507: the template opens <think> itself
    NO_THINKING = "instruct"  # Instruct-2507 and every non-Qwen3 model

    @property
    def can_switch(self) -> bool:
        return self in (Variant.HYBRID, Variant.SWITCHABLE)

    @property
    def has_soft_switch(self) -> bool:
        """Whether /think and /no_think inside a message switch thinking (Qwen3's hybrid models were trained to)."""
        return self is Variant.HYBRID


class TemplateRenderError(Exception):
    """The model's chat template failed to render; the message names the template error."""


@dataclass(frozen=True)
class Turn:
    """One stored message as the protocol sees it: thinking is kept apart from the answer."""

    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    thinking: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()  # an assistant's calls, as `ToolCall.as_message_call` gives them
    tool_call_id: str = ""  # a tool result: the call it answers


def _tojson(value: Any, indent: int | None = None) -> str:
    # Same output as the reference stack's filter: no ASCII escaping, keys in their given order.
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _raise(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template. Rendering never executes anything outside the Jinja2 sandbox."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source or CHATML_FALLBACK
        self.is_fallback = not source
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(self.source)
        except TemplateError as exc:
            raise TemplateRenderError(f"the model's chat template does not compile: {exc}") from exc
        self._specials = {"bos_token": bos_token, "eos_token": eos_token}

    def render(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        enable_thinking: bool,
        add_generation_prompt: bool = True,
        tools: Sequence[dict[str, Any]] = (),
    ) -> str:
        # `tools` is left undefined when there are none, as the reference stack does: templates test `if tools`
        offered = {"tools": list(tools)} if tools else {}
        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                enable_thinking=enable_thinking,
                **offered,
                **self._specials,
            )
        except Exception as exc:  # a template is model data: any failure inside it is the model's
            raise TemplateRenderError(f"the model's chat template failed: {exc}") from exc

    @cached_property
    def variant(self) -> Variant:
        probe = [{"role": "user", "content": "hi"}]
        on = self.render(probe, enable_thinking=True)
        off = self.render(probe, enable_thinking=False)
        if on != off:
            # Qwen3's hybrid template answers thinking-on with a bare assistant turn (the model opens <think>, and
            # obeys soft switches); Qwen3.5's opens <think> itself: thinking by default, no soft switch
            return Variant.SWITCHABLE if prompt_opens_thinking(on) else Variant.HYBRID
        if prompt_opens_thinking(on):
            return Variant.ALWAYS_THINKS
        return Variant.NO_THINKING


def prompt_opens_thinking(prompt: str) -> bool:
    """True when the prompt itself leaves a `<think>` block open, so the output starts inside it."""
    tail = prompt[prompt.rfind("<|im_start|>") :]
    return tail.rfind(THINK_OPEN) > tail.rfind(THINK_CLOSE)


_SWITCH = re.compile(r"(?<![\w/])/(think|no_think)\b")


def last_soft_switch(text: str) -> bool | None:
    """The last `/think` (True) or `/no_think` (False) in a message, or None."""
    found = _SWITCH.findall(text)
    return None if not found else found[-1] == "think"


def effective_thinking(variant: Variant, enable_thinking: bool, user_texts: Iterable[str]) -> bool:
    """Whether the model will think on this turn.

    Hybrid models follow the most recent soft switch in the conversation, but only while `enable_thinking`
    is on; the 2507 and Qwen3.5 models ignore switches.
    """
    if variant is Variant.ALWAYS_THINKS:
        return True
    if variant is Variant.NO_THINKING or not enable_thinking:
        return False
    if variant is Variant.SWITCHABLE:
        return True
    mode = True
    for text in user_texts:
        switch = last_soft_switch(text)
        if switch is not None:
            mode = switch
    return mode


def template_messages(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """History as sent to the template: roles and answers, never earlier turns' thinking.

    The steps of the tool loop under way (the assistant messages after the last user message) carry their
    thinking as `reasoning_content`: the official Qwen3 templates keep it there, and drop it everywhere else.
    """
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=-1)
    messages: list[dict[str, Any]] = []
    for i, turn in enumerate(turns):
        message: dict[str, Any] = {"role": turn.role, "content": turn.content}
        if turn.role == "assistant" and i > last_user and turn.thinking:
            message["reasoning_content"] = turn.thinking
        if turn.tool_calls:
            message["tool_calls"] = [dict(call) for call in turn.tool_calls]
        if turn.role == "tool":
            message["tool_call_id"] = turn.tool_call_id
        messages.append(message)
    return messages


def build_prompt(template: ChatTemplate, turns: Sequence[Turn], *, enable_thinking: bool,
                 tools: Sequence[dict[str, Any]] = ()) -> str:
    return template.render(template_messages(turns), enable_thinking=enable_thinking, tools=tools)


@dataclass(frozen=True)
class ModeChange:
    """Outcome of a `/think` or `/no_think` command: the new setting and what to tell the user."""

    enable_thinking: bool
    message: str
    changed: bool


def apply_mode_command(variant: Variant, current: bool, want: bool) -> ModeChange:
    if variant is Variant.ALWAYS_THINKS:
        return ModeChange(current, "This model always thinks (a Thinking-2507 model); it cannot turn thinking off.",
                          False)
    if variant is Variant.NO_THINKING:
        return ModeChange(current, "This model has no thinking mode (an Instruct-2507 or non-Qwen3 model); "
                          "/think and /no_think do nothing here.", False)
    word = "on" if want else "off"
    if current == want:
        return ModeChange(current, f"Thinking is already {word}.", False)
    return ModeChange(want, f"Thinking {word} for this conversation.", True)


def command_of(text: str) -> str | None:
    """`/think` or `/no_think` typed alone is a command; inside a message it is a soft switch."""
    stripped = text.strip()
    return stripped[1:] if stripped in ("/think", "/no_think") else None
