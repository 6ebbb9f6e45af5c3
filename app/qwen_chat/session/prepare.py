"""Preparing one answer's input in bounded time, and stopping it (Esc) at any point.

Only the newest turns that can fit the context are read and rendered: a 28 MB imported conversation was read,
rendered and then tokenized whole for every answer, which kept the first answer after the import waiting ~95 s
(tokenizing is ~0.3-1 MB/s) before anything happened, and Esc could not cut into it. The window is chosen so that it
surely holds more than the context (`BYTES_PER_TOKEN`): the engine still trims it exactly, as it trimmed the whole
conversation, so the prompt is the one the whole history would have given.

A stop during preparation ends the answer at once, stopped and empty, like an answer stopped before its first token:
on the session's side between queries, on the engine's side by `EarlyStop` (the engine's tokenizer cannot be
interrupted, so the session does not wait for it and drops what it still sends for that answer).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qwen_chat.engines.protocol import ChatEngine, Done, EngineEvent, Failed, Token, Trim, Trimmed
from qwen_chat.qwen3.template import ChatTemplate, last_soft_switch
from qwen_chat.qwen3.thinking import StreamText
from qwen_chat.session.prompt import AnswerInput, answer_input, carried_start, sendable
from qwen_chat.store.database import Store
from qwen_chat.store.recent import questions_with, recent, since_last_question
from qwen_chat.store.records import Conversation, Message
from qwen_chat.tools.mcp_results import ToolSpec

# A Qwen token covers at most ~5.3 bytes of real text (measured with Qwen2's tokenizer: JSON 2.2, code 3.6-4.6,
# English 4.7-5.0, Chinese 5.1, Russian 5.25). At 6 a window of n_ctx * 6 bytes is more tokens than the context
# holds, so the turns it leaves out could never have been sent; only text made of long runs of one character
# (128 spaces can be one token) packs tighter, and then the answer sees fewer old turns than would have fit.
BYTES_PER_TOKEN = 6
SWITCHES = ("/think", "/no_think")


class PreparationStopped(Exception):
    """Raised into the engine's trimming (from `Trim.render`) when Esc came while it fitted the prompt."""


@dataclass(frozen=True)
class Prepared:
    built: AnswerInput | None  # None: Esc came while it was prepared
    left_out: int = 0  # questions before the window that the whole history would have offered (the trim marker)

    @property
    def context_from_id(self) -> int | None:
        return self.built.context_from_id if self.built else None

    @property
    def turn_starts(self) -> tuple[int, ...]:
        return self.built.turn_starts if self.built else ()


def prepare(store: Store, conversation: Conversation, template: ChatTemplate | None, replaces: int | None,
            fresh_context: bool, tools: tuple[dict[str, Any], ...], result_limit: int, n_ctx: int,
            stop: threading.Event) -> Prepared:
    """The input for the next answer, from the newest turns that can fit `n_ctx` (0: unknown, all of them); none
    when `stop` was set meanwhile."""
    budget = n_ctx * BYTES_PER_TOKEN if n_ctx > 0 else None
    window = recent(store.connection, conversation.id, budget, replaces, stop.is_set)
    if window is None:
        return Prepared(None)
    rows = sendable(window.messages)
    first = window.messages[0].id if window.cut else None
    built = answer_input(conversation, rows, template, replaces, fresh_context, tools, result_limit, first)
    if stop.is_set():
        return Prepared(None)
    left_out = 0 if first is None else window.questions_since(carried_start(rows, fresh_context))
    trim = built.trim and Trim(_stoppable(built.trim.render, stop), built.trim.count)
    return Prepared(dataclasses.replace(built, trim=trim), left_out)


def _stoppable(render: Callable[[int], str], stop: threading.Event) -> Callable[[int], str]:
    """The engine renders and tokenizes one shorter prompt after another until one fits: a stop ends that there."""

    def render_unless_stopped(dropped: int) -> str:
        if stop.is_set():
            raise PreparationStopped("stopped while the prompt was fitted to the context")
        return render(dropped)

    return render_unless_stopped


def last_switch(store: Store, conversation_id: int) -> list[str]:
    """The newest question with a soft switch (/think, /no_think) in it, alone in a list; empty when none has one.
    The latest switch decides, so the rest of a long history need not be read."""
    for text in questions_with(store.connection, conversation_id, SWITCHES):
        if last_soft_switch(text) is not None:
            return [text]
    return []


@dataclass
class Streaming:
    """The answer in flight, from its preparation to its final save (ChatSession's one answer slot)."""

    message_id: int
    conversation_id: int
    text: StreamText = field(default_factory=StreamText)  # the engine's own when it shares it
    last_save: float = 0.0
    turn_starts: tuple[int, ...] = ()  # the first message id of each turn sent, oldest first (for trimming)
    tools: dict[str, ToolSpec] = field(default_factory=dict)  # what this answer was offered, by the model's names
    thinking: bool = False
    rounds: int = 0  # tool rounds before this answer in its turn
    left_out: int = 0  # older turns never read for it (they could not fit): added to what the engine drops


class EarlyStop:
    """Esc before the engine began an answer. In a turn each answer is "preparing" (not yet sent: the default),
    then "sent" (the engine has it), then "began" (its first event came) or "ended" (stopped before that). One
    ended after it was sent is abandoned: the engine may still be tokenizing its prompt; what it sends later is
    dropped."""

    def __init__(self) -> None:
        self.turn = threading.Event()  # set by Esc; a new one for every turn
        self._lock = threading.Lock()
        self._stage: dict[int, str] = {}  # this turn's answers past "preparing"
        self._abandoned: set[int] = set()

    def new_turn(self) -> None:
        with self._lock:
            self.turn = threading.Event()
            self._stage.clear()

    def send(self, answer_id: int) -> bool:
        """Whether the answer goes to the engine now (not when it was stopped meanwhile)."""
        with self._lock:
            go = answer_id not in self._stage and not self.turn.is_set()
            if go:
                self._stage[answer_id] = "sent"
            return go

    def end(self, answer_id: int) -> bool:
        """Esc: the turn stops; True (once) when answer `answer_id` (0: none yet) had not begun, which the caller
        then saves as stopped."""
        with self._lock:
            self.turn.set()
            stage = self._stage.get(answer_id, "preparing") if answer_id else "none"
            if stage not in ("preparing", "sent"):
                return False
            self._stage[answer_id] = "ended"
            if stage == "sent":
                self._abandoned.add(answer_id)
            return True

    def late(self, event: EngineEvent, engine: ChatEngine | None) -> bool:
        """True for an event of an abandoned answer, which must change nothing; a first event begins an answer."""
        request_id = getattr(event, "request_id", None)
        if request_id is None:  # a load's events
            return False
        with self._lock:
            if request_id not in self._abandoned:
                if self._stage.get(request_id) == "sent":
                    self._stage[request_id] = "began"
                return False
            if isinstance(event, Done | Failed):
                self._abandoned.discard(request_id)
        if isinstance(event, Token | Trimmed) and engine is not None:
            engine.stop()  # it took the answer off its queue after the stop, which it then forgot: stop it again
        return True


def stopped_done(answer_id: int) -> Done:
    """How an answer stopped before its first token ends: as the engine reports one (nothing generated)."""
    return Done(answer_id, "stopped", "", "", False, False, 0, 0, 0, 0.0, 0.0, 0, 0, 0.0)


def answer_to_replace(store: Store, conversation_id: int) -> Message | None:
    """The answer a regeneration replaces, with every step of its tool loop: the first after the last question."""
    return next((m for m in since_last_question(store.connection, conversation_id) if m.role == "assistant"), None)
