"""What the model is sent for one answer: the history it sees, the rendered prompt and the shorter ones to fall
back on when the whole conversation does not fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qwen_chat.engines.protocol import Trim
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt, last_soft_switch, template_messages
from qwen_chat.session.attachments import with_files
from qwen_chat.session.tool_loop import model_result
from qwen_chat.store.records import Conversation, Message


@dataclass(frozen=True)
class AnswerInput:
    prompt: str  # the rendered template ("" for a server: it renders `messages` itself)
    messages: tuple[dict[str, Any], ...]
    trim: Trim | None
    context_from_id: int | None  # the first message the model sees (None: the whole conversation)
    turn_starts: tuple[int, ...]  # the first message id of each turn sent, oldest first (for trimming)


def sendable(messages: list[Message]) -> list[Message]:
    """What the model sees of the history: questions, answers and the steps of tool loops; empty answers
    (stopped while thinking) and failed ones without text are left out."""
    return [m for m in messages if m.role == "user" or (m.role == "assistant" and (m.content or m.tool_calls))]


def turns_of(m: Message, result_limit: int) -> list[Turn]:
    """One stored message as the template's turns: a question with its files, an answer, or an answer that
    called tools followed by one tool turn per call (its result, cut to `result_limit`)."""
    if m.role == "user":
        return [Turn("user", with_files(m.content, m.attachments))]
    if not m.tool_calls:
        return [Turn(m.role, m.content)]
    calls = tuple({"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                  for c in m.tool_calls)
    # the text before a call, as the template renders it (it puts the newline before <tool_call> itself)
    answer = Turn("assistant", m.content.rstrip(), thinking=m.thinking, tool_calls=calls)
    return [answer, *(Turn("tool", model_result(c, result_limit), tool_call_id=c.call_id) for c in m.tool_calls)]


def carried_start(rows: list[Message], fresh_context: bool) -> int | None:
    """Where the last answer's view began when its oldest turns had to be left out: the next answer starts there
    too (the KV cache still holds the rest as a prefix), unless the context is fresh. None: the whole history."""
    return None if fresh_context else next((m.context_from_id for m in reversed(rows) if m.role == "assistant"), None)


def answer_input(conversation: Conversation, rows: list[Message], template: ChatTemplate | None,
                 replaces: int | None, fresh_context: bool, tools: tuple[dict[str, Any], ...] = (),
                 result_limit: int = 20_000, cut_before: int | None = None) -> AnswerInput:
    """The input for the answer to the last user message in `rows` (sendable messages, oldest first).

    Without a template the answer comes from a server. A regeneration (`replaces`) leaves out the old answer
    and what followed it. The oldest turns that had to be left out for the last answer stay out (see
    `carried_start`). `cut_before`: `rows` begin at this message because the older ones were never read (they
    could not fit, session/prepare.py); the answer is then recorded as seeing only these.
    """
    if replaces is not None:
        rows = [m for m in rows if m.id < replaces]
    start = carried_start(rows, fresh_context)
    if cut_before is not None and (start is None or start < cut_before):
        start = cut_before
    if start is not None:
        rows = [m for m in rows if m.id >= start]
    last_user = max(i for i, m in enumerate(rows) if m.role == "user")
    history, current = rows[:last_user], rows[last_user:]  # the question, and the tool loop under way after it
    groups: list[list[Message]] = []
    for m in history:
        if m.role == "user" or not groups:
            groups.append([])
        groups[-1].append(m)
    system = [Turn("system", conversation.system_prompt)] if conversation.system_prompt else []

    def turns_without(dropped: int) -> list[Turn]:
        kept = [t for group in groups[dropped:] for m in group for t in turns_of(m, result_limit)]
        return [*system, *kept, *(t for m in current for t in turns_of(m, result_limit))]

    messages = template_messages(turns_without(0))
    question = current[0]
    starts = tuple(g[0].id for g in groups) + (question.id,)
    if template is None:
        if not conversation.enable_thinking and last_soft_switch(question.content) is None:
            at = len(messages) - sum(len(turns_of(m, result_limit)) for m in current)  # the question: servers
            # without chat_template_kwargs read the switch there
            messages[at] = {**messages[at], "content": f"{messages[at]['content']} /no_think"}
        return AnswerInput("", tuple(messages), None, start, starts)
    enable = conversation.enable_thinking
    prompt = build_prompt(template, turns_without(0), enable_thinking=enable, tools=tools)
    trim = Trim(lambda dropped: build_prompt(template, turns_without(dropped), enable_thinking=enable, tools=tools),
                len(groups) + 1)
    return AnswerInput(prompt, tuple(messages), trim, start, starts)
