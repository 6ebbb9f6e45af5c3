"""A client's chat as the model sees it: the same turns, template, thinking rule, presets and budget as the app.

The messages become the app's `Turn`s and are rendered by `build_prompt` (qwen3/template.py), so the prompt is the
model's official template byte for byte, tools and tool results included. Earlier answers reach the template
without their thinking (whether the client sent it back as `reasoning_content` or inline in `<think>`), as in the
app; the steps of a tool loop under way keep theirs, as the official templates want.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from qwen_chat.config.presets import sampling_for, thinking_budget_for
from qwen_chat.engines.protocol import GenerateRequest
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.template import (
    ChatTemplate,
    TemplateRenderError,
    Turn,
    Variant,
    build_prompt,
    effective_thinking,
    prompt_opens_thinking,
)
from qwen_chat.qwen3.thinking import ThinkingSplitter
from qwen_chat.serve.wire import BadRequest, ChatParams, CompletionParams, SamplingFields

CONTEXT_HINT = "send a shorter conversation, or restart `qwen-chat serve` with a larger --ctx"
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


@dataclass(frozen=True)
class ModelFacts:
    """What the prompt depends on, of the loaded model."""

    template: ChatTemplate
    variant: Variant
    quantized: bool
    drafting: bool = True  # speculative decoding ([engine] speculative, read once when the server starts)


def chat_request(request_id: int, params: ChatParams, model: ModelFacts, seed: int | None) -> GenerateRequest:
    """The engine request for a chat completion; BadRequest when the messages cannot be rendered."""
    turns = [turn for i, m in enumerate(params.messages) for turn in _turns(i, m)]
    if not any(t.role == "user" for t in turns):
        raise BadRequest("the messages hold no user message to answer")
    # a last assistant message is continued: its text begins the answer (llama-server's "assistant prefill")
    prefill = turns.pop().content if turns[-1].role == "assistant" and not turns[-1].tool_calls else ""
    thinking = effective_thinking(model.variant, params.enable_thinking, [t.content for t in turns if t.role == "user"])
    try:
        prompt = build_prompt(model.template, turns, enable_thinking=params.enable_thinking, tools=params.tools)
    except TemplateRenderError as exc:
        raise BadRequest(f"the messages do not fit the model's chat template: {exc}") from None
    budget = params.thinking_budget
    if budget is None:
        budget = thinking_budget_for(model.variant, thinking, model.quantized)
    sampling = _sampling(params.sampling, model, thinking, seed)
    return GenerateRequest(request_id, prompt, sampling, prompt_opens_thinking(prompt),
                           enable_thinking=params.enable_thinking, thinking_budget=budget if thinking else 0,
                           context_hint=CONTEXT_HINT, tools=params.tools, prefill=prefill, drafting=model.drafting)


def completion_request(request_id: int, params: CompletionParams, model: ModelFacts,
                       seed: int | None) -> GenerateRequest:
    """The engine request for a plain completion: the prompt as given, the non-thinking preset."""
    sampling = _sampling(params.sampling, model, False, seed)
    return GenerateRequest(request_id, params.prompt, sampling, context_hint=CONTEXT_HINT, drafting=model.drafting)


def _sampling(fields: SamplingFields, model: ModelFacts, thinking: bool, seed: int | None) -> Sampling:
    """Qwen's preset for the mode (with the user's edits in settings.toml), under what the request set."""
    preset = sampling_for(model.variant, thinking, model.quantized, seed=seed)
    changes = fields.given()
    if fields.max_tokens is not None:
        changes["max_tokens"] = fields.max_tokens
    return dataclasses.replace(preset, **changes)


def _turns(index: int, message: dict[str, Any]) -> list[Turn]:
    role = _ROLES.get(message["role"])
    if role is None:
        raise BadRequest(f'messages[{index}].role must be one of {", ".join(_ROLES)} (got {message["role"]!r})')
    content = _text(index, message.get("content"))
    if role == "tool":
        return [Turn("tool", content, tool_call_id=str(message.get("tool_call_id") or ""))]
    if role != "assistant":
        return [Turn(role, content)]
    thinking = message.get("reasoning_content")
    thinking = thinking if isinstance(thinking, str) else ""
    if "<think>" in content or "</think>" in content:  # a client that kept the thinking inline
        splitter = ThinkingSplitter(starts_in_thinking="<think>" not in content)
        splitter.feed(content)
        splitter.finish()
        content, thinking = splitter.answer, thinking or splitter.thinking
    calls = _calls(index, message.get("tool_calls"))
    # the text before a call, as the app sends it (the template puts the newline before <tool_call> itself)
    return [Turn("assistant", content.rstrip() if calls else content, thinking=thinking, tool_calls=calls)]


def _text(index: int, content: Any) -> str:
    """A message's content: a string, null, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise BadRequest(f"messages[{index}].content: only text parts are supported (got {kind!r})")
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"messages[{index}].content must be a string or a list of text parts")


def _calls(index: int, calls: Any) -> tuple[dict[str, Any], ...]:
    """An assistant's `tool_calls` as the app stores them: arguments as an object (a JSON string is read)."""
    if not calls:
        return ()
    if not isinstance(calls, list):
        raise BadRequest(f"messages[{index}].tool_calls must be a list")
    out = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(f'messages[{index}].tool_calls[{j}] must have a "function" with a "name"')
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                raise BadRequest(f"messages[{index}].tool_calls[{j}].function.arguments is not JSON") from None
        out.append({"id": str(call.get("id") or ""), "type": "function",
                    "function": {"name": function["name"], "arguments": arguments}})
    return tuple(out)
