"""What the store hands out: its records (a conversation, a message, a persona, an answer's statistics) and its
one error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STATUSES = ("complete", "streaming", "stopped", "failed", "interrupted")
# a tool call: waiting for the user, running, done (ok / error), refused, cancelled, or cut off by a crash
TOOL_STATUSES = ("pending", "running", "ok", "error", "denied", "stopped", "interrupted")


class StoreError(Exception):
    """The database cannot be used right now; the message says why and what to do."""


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str
    enable_thinking: bool
    system_prompt: str
    created_at: float
    updated_at: float
    thinking_budget: int | None = None  # set with /budget; None: the sampling preset's default
    tools_off: tuple[str, ...] = ()  # servers ("name") and tools ("server/tool") turned off in this conversation

    def tool_on(self, server: str, tool: str) -> bool:
        return server not in self.tools_off and f"{server}/{tool}" not in self.tools_off


@dataclass(frozen=True)
class Attachment:
    """A file's text as it was attached (the file itself is never read again)."""

    name: str
    content: str
    tokens: int = 0  # an estimate, shown on the chip and checked against the context


@dataclass(frozen=True)
class ToolCallRecord:
    """One call an answer made, and what came of it. `result` is what the model was (or will be) sent back."""

    id: int
    message_id: int
    position: int
    call_id: str
    name: str
    server: str
    arguments: dict[str, Any]
    raw: str
    status: str
    result: str = ""
    truncated: bool = False

    @property
    def finished(self) -> bool:
        return self.status not in ("pending", "running")


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    thinking: str
    thinking_closed: bool
    status: str
    error: str
    model: str
    mode: str
    sampling: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    prompt_seconds: float
    generation_seconds: float
    tokens_per_second: float
    created_at: float
    superseded_by: int | None = None  # None: active; else the id of the message that replaced it
    thinking_budget: int = 0  # 0: no budget
    thinking_cut_at: int | None = None  # offset in `thinking` where the budget's stop instruction begins
    context_from_id: int | None = None  # None: whole conversation sent; else the oldest message still sent
    attachments: tuple[Attachment, ...] = ()  # user messages: files sent with it, in order
    tool_calls: tuple[ToolCallRecord, ...] = ()  # assistant messages: the calls it ended with, in order


@dataclass(frozen=True)
class Persona:
    id: int
    name: str
    prompt: str


@dataclass(frozen=True)
class Stats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    tokens_per_second: float = 0.0


def conversation_from_row(row: dict[str, Any]) -> Conversation:
    return Conversation(row["id"], row["title"], row["model"], bool(row["enable_thinking"]),
                        row["system_prompt"], row["created_at"], row["updated_at"], row["thinking_budget"],
                        tuple(json.loads(row["tools_off"] or "[]")))


def message_from_row(row: dict[str, Any]) -> Message:
    return Message(
        id=row["id"], conversation_id=row["conversation_id"], role=row["role"], content=row["content"],
        thinking=row["thinking"], thinking_closed=bool(row["thinking_closed"]), status=row["status"],
        error=row["error"], model=row["model"], mode=row["mode"], sampling=json.loads(row["sampling"] or "{}"),
        prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
        prompt_seconds=row["prompt_seconds"], generation_seconds=row["generation_seconds"],
        tokens_per_second=row["tokens_per_second"], created_at=row["created_at"],
        superseded_by=row["superseded_by"], thinking_budget=row["thinking_budget"],
        thinking_cut_at=row["thinking_cut_at"], context_from_id=row["context_from_id"])
