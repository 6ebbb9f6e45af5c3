"""What the model is sent for one answer: the history it sees, the rendered prompt and the shorter ones to fall
back on when the whole conversation does not fit."""

from __future__ import annotations

from dataclasses import dataclass

from qwen_chat.engines.protocol import Trim
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt, last_soft_switch, template_messages
from qwen_chat.session.attachments import with_files
from qwen_chat.store.records import Conversation, Message


@dataclass(frozen=True)
class AnswerInput:
    prompt: str  # the rendered template ("" for a server: it renders `messages` itself)
    messages: tuple[dict[str, str], ...]
    trim: Trim | None
    context_from_id: int | None  # the first message the model sees (None: the whole conversation)
    turn_starts: tuple[int, ...]  # the first message id of each turn sent, oldest first (for trimming)


def sendable(messages: list[Message]) -> list[Message]:
    """What the model sees of the history: questions and answers; empty answers (stopped while thinking) and
    failed ones without text are left out."""
    return [m for m in messages if m.role == "user" or (m.role == "assistant" and m.content)]


def answer_input(conversation: Conversation, rows: list[Message], template: ChatTemplate | None,
                 replaces: int | None, fresh_context: bool) -> AnswerInput:
    """The input for the answer to the last user message in `rows` (sendable messages, oldest first).

    Without a template the answer comes from a server. A regeneration (`replaces`) leaves out the old answer
    and what followed it. The oldest turns that had to be left out for the last answer stay out (the KV cache
    still holds the rest as a prefix), unless the context is fresh.
    """
    if replaces is not None:
        rows = [m for m in rows if m.id < replaces]
    start = None if fresh_context else next(
        (m.context_from_id for m in reversed(rows) if m.role == "assistant"), None)
    if start is not None:
        rows = [m for m in rows if m.id >= start]
    *history, current = rows
    groups: list[list[Message]] = []
    for m in history:
        if m.role == "user" or not groups:
            groups.append([])
        groups[-1].append(m)
    system = [Turn("system", conversation.system_prompt)] if conversation.system_prompt else []

    def turns_without(dropped: int) -> list[Turn]:
        kept = [Turn(m.role, with_files(m.content, m.attachments)) for group in groups[dropped:] for m in group]
        return [*system, *kept, Turn("user", with_files(current.content, current.attachments))]

    messages = template_messages(turns_without(0))
    starts = tuple(g[0].id for g in groups) + (current.id,)
    if template is None:
        if not conversation.enable_thinking and last_soft_switch(current.content) is None:
            messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']} /no_think"}  # servers w/o kwargs
        return AnswerInput("", tuple(messages), None, start, starts)
    enable = conversation.enable_thinking
    prompt = build_prompt(template, turns_without(0), enable_thinking=enable)
    trim = Trim(lambda dropped: build_prompt(template, turns_without(dropped), enable_thinking=enable),
                len(groups) + 1)
    return AnswerInput(prompt, tuple(messages), trim, start, starts)
