"""What the session tells its UI, besides the engine's own events (progress, tokens, load failures).

Every event is a frozen value, sent through the session's sink from the engine or writer thread, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen_chat.engines.protocol import Done, Failed, Loaded, LoadProgress, Token
from qwen_chat.store.records import Message, ToolCallRecord


@dataclass(frozen=True)
class Notice:
    """Something to tell the user that is not a model message (mode changes, refusals)."""

    text: str
    error: bool = False


@dataclass(frozen=True)
class UserSaved:
    """The user's message is on disk; it reaches the UI through the same queue as the answer, in order."""

    message: Message


@dataclass(frozen=True)
class AnswerStarted:
    message: Message


@dataclass(frozen=True)
class Rewound:
    """An edit or a regeneration: from this message on, the transcript is replaced (the old turns are kept
    in the store as an earlier version)."""

    conversation_id: int
    from_message_id: int


@dataclass(frozen=True)
class ContextTrimmed:
    """The oldest turns no longer fit: from `from_message_id` on is what the model sees for this answer."""

    conversation_id: int
    answer_id: int
    from_message_id: int
    dropped_turns: int
    n_ctx: int


@dataclass(frozen=True)
class AnswerSaved:
    """The final state of an answer is on disk."""

    message: Message
    done: Done | None
    # False when the tool loop goes on (its calls run next): the turn then ends with a later AnswerSaved or
    # ToolLoopEnded. `ask` waits for the end of the turn, not for an answer without calls.
    ends_turn: bool = True


@dataclass(frozen=True)
class ToolApprovalNeeded:
    """A call waits for the user: Allow once / Always allow this tool / Always allow this server / Deny
    (`ChatSession.decide`). Esc (`stop`) answers it too."""

    conversation_id: int
    call: ToolCallRecord
    server: str
    description: str


@dataclass(frozen=True)
class ToolCallChanged:
    """A call was approved, started, finished, denied or stopped: its record as stored now."""

    call: ToolCallRecord


@dataclass(frozen=True)
class ToolLoopEnded:
    """A turn with tool calls ended without a final answer (stopped, or too many rounds): the session is free."""

    conversation_id: int
    reason: str


# A Failed with a request id never reaches the UI: the session turns it into AnswerSaved and a Notice.
SessionEvent = LoadProgress | Loaded | Failed | Token | Notice | UserSaved | AnswerStarted | AnswerSaved | Rewound \
    | ContextTrimmed | ToolApprovalNeeded | ToolCallChanged | ToolLoopEnded
