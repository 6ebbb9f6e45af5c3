"""Session events as Textual messages: one message class per event type, posted from any thread, in order.

Tokens are the exception: one answer brings thousands, and drawing each alone would take the CPU the model
needs. They wait in the inbox and are drawn in batches (the app paces them, see app.py); one `TokensWaiting`
says a batch is there. Order holds across the two paths: every event gets a sequence number, a message's
handler first draws the tokens that came before it, and tokens never overtake a message not yet handled.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable

from textual.message import Message

from qwen_chat.engines.protocol import Failed, Loaded, LoadProgress, Token
from qwen_chat.hub.download_queue import Job
from qwen_chat.session.events import (
    AnswerSaved,
    AnswerStarted,
    ContextTrimmed,
    Notice,
    Rewound,
    SessionEvent,
    ToolApprovalNeeded,
    ToolCallChanged,
    ToolLoopEnded,
    UserSaved,
)


class SessionMessage(Message):
    """A session event, with its place in the order of all events."""

    def __init__(self, event: object, seq: int) -> None:
        super().__init__()
        self.event = event
        self.seq = seq


class ModelProgress(SessionMessage):
    event: LoadProgress


class ModelLoaded(SessionMessage):
    event: Loaded


class ModelFailed(SessionMessage):
    event: Failed


class UserMessageSaved(SessionMessage):
    event: UserSaved


class TranscriptRewound(SessionMessage):
    event: Rewound


class ContextWasTrimmed(SessionMessage):
    event: ContextTrimmed


class AnswerBegan(SessionMessage):
    event: AnswerStarted


class AnswerFinished(SessionMessage):
    event: AnswerSaved


class NoticeArrived(SessionMessage):
    event: Notice


class DownloadChanged(SessionMessage):
    event: Job


class ToolApprovalAsked(SessionMessage):
    event: ToolApprovalNeeded


class ToolCallUpdated(SessionMessage):
    event: ToolCallChanged


class ToolLoopFinished(SessionMessage):
    event: ToolLoopEnded


class TokensWaiting(Message):
    """Tokens are in the inbox (posted once until they are drawn)."""


MESSAGE_FOR: dict[type, type[SessionMessage]] = {
    LoadProgress: ModelProgress, Loaded: ModelLoaded, Failed: ModelFailed, UserSaved: UserMessageSaved,
    Rewound: TranscriptRewound, ContextTrimmed: ContextWasTrimmed, AnswerStarted: AnswerBegan,
    AnswerSaved: AnswerFinished, Notice: NoticeArrived, Job: DownloadChanged,
    ToolApprovalNeeded: ToolApprovalAsked, ToolCallChanged: ToolCallUpdated, ToolLoopEnded: ToolLoopFinished,
}


class Inbox:
    """Where the session's and the downloads' events arrive, on their threads."""

    def __init__(self, post: Callable[[Message], object]) -> None:
        self._post = post
        self._lock = threading.Lock()
        self._seq = 0
        self._tokens: deque[tuple[int, Token]] = deque()
        self._unhandled: deque[int] = deque()  # messages posted and not yet handled, oldest first
        self._wake_posted = False

    def put(self, event: SessionEvent | Job) -> None:
        with self._lock:
            self._seq += 1
            if isinstance(event, Token):
                self._tokens.append((self._seq, event))
                if self._wake_posted:
                    return
                self._wake_posted = True
                message: Message = TokensWaiting()
            else:
                self._unhandled.append(self._seq)
                message = MESSAGE_FOR[type(event)](event, self._seq)
        self._post(message)

    @property
    def waiting(self) -> int:
        """Tokens not drawn yet."""
        return len(self._tokens)

    def take_tokens(self, before: int | None = None) -> list[Token]:
        """The tokens that may be drawn now: those that came before message `before` (while it is handled),
        else those before the oldest message not yet handled."""
        with self._lock:
            limit = before if before is not None else (self._unhandled[0] if self._unhandled else math.inf)
            taken = []
            while self._tokens and self._tokens[0][0] < limit:
                taken.append(self._tokens.popleft()[1])
            return taken

    def handled(self, message: SessionMessage) -> None:
        with self._lock:
            if message.seq in self._unhandled:
                self._unhandled.remove(message.seq)

    def drawn(self) -> bool:
        """A batch was drawn: the next token posts a new TokensWaiting. True when tokens are still waiting
        (they came during the drawing, or wait for a message): the caller schedules them."""
        with self._lock:
            self._wake_posted = bool(self._tokens)
            return self._wake_posted
