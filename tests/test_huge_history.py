"""A huge conversation (a 28 MB import) costs the next answer only what the context can hold, and Esc ends a turn
that is still being prepared (issue 25): through the real session and store, on FakeEngines that prepare the
prompt the way the llama.cpp engine does (engines/llama.py `_fit_prompt`, here with a stand-in tokenizer)."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from qwen_chat.engines.llama import Engine, _Loaded
from qwen_chat.engines.protocol import GenerateRequest, Loaded, LoadRequest, Trimmed
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import AnswerSaved, ContextTrimmed, Notice, UserSaved
from qwen_chat.session.prompt import AnswerInput, answer_input, sendable
from qwen_chat.store.database import Store
from qwen_chat.store.records import Attachment
from qwen_chat.store.tool_calls import NewCall

from fake_engine import FakeEngine, Reply
from helpers import events_until, next_event
from tiny_models import write_tiny_qwen3

FILLER = ("The lighthouse keeper counted the ships, wrote their names in the log and trimmed the lamp. " * 40)


class CountingStore(Store):
    """Counts the characters its queries hand to Python, and can hold the next read of messages until released."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.read = 0
        self.hold: threading.Event | None = None  # set: the next read of messages waits for it
        self.holding = threading.Event()
        query = self.connection.rows

        def rows(sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
            if self.hold is not None and "FROM messages" in sql:
                release, self.hold = self.hold, None
                self.holding.set()
                release.wait(30)
            found = query(sql, params)
            self.read += sum(len(v) for row in found for v in row.values() if isinstance(v, str))
            return found

        self.connection.rows = rows  # type: ignore[method-assign]


def fill(store: Store, conversation_id: int, pairs: int, first_question: str = "") -> None:
    """`pairs` questions and answers, as an import writes them (one transaction: the import itself is not tested)."""
    rows = []
    for i in range(pairs):
        question = first_question if i == 0 and first_question else f"Question {i}: {FILLER[: 300 + i % 50]}"
        rows += [(conversation_id, "user", question), (conversation_id, "assistant", f"Answer {i}: {FILLER}")]
    with store.connection.tx() as conn:
        conn.executemany("INSERT INTO messages (conversation_id, role, content, created_at, updated_at)"
                         " VALUES (?, ?, ?, 0, 0)", rows)


def start(tmp_path: Path, store: Store, engine: FakeEngine, n_ctx: int, events: queue.Queue | None = None,
          sink: Any = None) -> tuple[ChatSession, queue.Queue]:
    events = events or queue.Queue()
    session = ChatSession(store, sink or events.put, engine=engine)
    session.load_model(write_tiny_qwen3(tmp_path / "tiny.gguf"), n_ctx)
    next_event(events, Loaded)
    return session, events


def whole_history(store: Store, session: ChatSession, answer_id: int) -> AnswerInput:
    """The input the whole conversation gave for this answer (every message before it read and rendered, as before
    the window)."""
    assert session.model.template is not None
    conversation = store.conversation(store.message(answer_id).conversation_id)
    messages = sendable(store.messages(conversation.id))
    return answer_input(conversation, messages, session.model.template, answer_id, True)


def generations(engine: FakeEngine) -> list[GenerateRequest]:
    return [r for r in engine.requests if isinstance(r, GenerateRequest)]


def test_a_huge_history_is_read_and_rendered_only_as_far_as_the_context_reaches(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "c.db")
    conversation = store.create_conversation()
    fill(store, conversation.id, 1500, first_question="Be brief. /no_think")  # ~6 MB
    engine = FakeEngine.scripted([Reply("Next.")])
    session, events = start(tmp_path, store, engine, n_ctx=4096)  # a window of 24,576 bytes
    store.read = 0
    session.send(conversation.id, "What should we do next?")
    saved = next_event(events, AnswerSaved).message
    read = store.read
    (request,) = generations(engine)  # the engine was asked
    assert read < 100_000, f"{read:,} characters read for a 24 KB window"  # the whole history is 6 MB
    assert 24_576 <= len(request.prompt.encode()) < 40_000 and request.trim is not None and request.trim.count < 12
    assert request.prompt.endswith("<|im_start|>user\nWhat should we do next?<|im_end|>\n<|im_start|>assistant\n")
    # the window is one of the prompts the whole history offered, the oldest turns left out; the answer is recorded
    # as seeing it from there, so the next turn starts there too (the KV cache holds it as a prefix)
    whole = whole_history(store, session, saved.id)
    left_out = whole.turn_starts.index(saved.context_from_id)
    assert whole.trim is not None and left_out > 1400 and request.prompt == whole.trim.render(left_out)
    assert saved.mode == "no_think"  # the soft switch in the very first question still counts
    session.close()


def test_esc_while_the_history_is_read_ends_the_turn_before_the_engine_is_asked(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "c.db")
    conversation = store.create_conversation()
    fill(store, conversation.id, 20)
    engine = FakeEngine.scripted([Reply("Later.")])
    events: queue.Queue = queue.Queue()
    release = threading.Event()

    def sink(event: object) -> None:
        if isinstance(event, UserSaved) and event.message.content == "Go":
            store.hold = release  # the turn's own reading of the history waits until the test has pressed Esc
        events.put(event)

    session, _ = start(tmp_path, store, engine, 4096, events, sink)
    sender = threading.Thread(target=session.send, args=(conversation.id, "Go"), daemon=True)
    sender.start()
    try:
        assert store.holding.wait(30), "the turn never read the history"
        session.stop()
    finally:
        release.set()
    saved = next_event(events, AnswerSaved, timeout=30).message
    sender.join(30)
    assert (saved.status, saved.content) == ("stopped", "") and generations(engine) == []
    assert store.messages(conversation.id)[-2].content == "Go"  # the question is kept
    session.send(conversation.id, "And now?")  # the session is free, and the stop did not outlive its turn
    assert next_event(events, AnswerSaved, timeout=30).message.content == "Later."
    session.close()


class BlockedFit(FakeEngine):
    """Fits the prompt as the real engine does, shorter prompt after shorter prompt, but only once released: until
    then it is "tokenizing" (what llama.cpp cannot be interrupted in)."""

    fitting: threading.Event
    release: threading.Event
    rendered: list[int]

    def _generate(self, request: GenerateRequest) -> None:
        if request.trim is not None and not self.release.is_set():
            self.fitting.set()
            self.release.wait(30)
            for dropped in range(1, request.trim.count):
                self.rendered.append(len(request.trim.render(dropped)))
        super()._generate(request)


def test_esc_while_the_engine_fits_the_prompt_ends_the_turn_without_waiting_for_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conversation = store.create_conversation()
    fill(store, conversation.id, 20)
    engine = BlockedFit.scripted([Reply("Later.")])
    engine.fitting, engine.release, engine.rendered = threading.Event(), threading.Event(), []
    session, events = start(tmp_path, store, engine, 4096)
    try:
        session.send(conversation.id, "Go")
        assert engine.fitting.wait(30)
        session.stop()
        saved = next_event(events, AnswerSaved, timeout=10).message  # while the engine is still busy with it
    finally:
        engine.release.set()
    assert (saved.status, saved.content) == ("stopped", "")
    session.send(conversation.id, "And now?")  # queued behind what the engine still does for the stopped answer
    later = events_until(events, lambda e: isinstance(e, AnswerSaved), 30)
    assert later[-1].message.content == "Later." and not [e for e in later if isinstance(e, Notice) and e.error]
    assert engine.rendered == []  # the engine's trimming ended at its first shorter prompt after the stop
    assert store.message(saved.id).status == "stopped"  # what the engine sent late changed nothing
    session.close()


class Tokens:
    """llama.cpp's tokenizer as `_fit_prompt` uses it, stood in for: 4 bytes a token (real text takes 2 to 5.3);
    keeps the size of every prompt it was given."""

    def __init__(self, n_ctx: int) -> None:
        self.context = n_ctx
        self.tokenized: list[int] = []

    def n_ctx(self) -> int:
        return self.context

    def tokenize(self, data: bytes, add_bos: bool = False, special: bool = True) -> list[int]:
        self.tokenized.append(len(data))
        return [0] * (len(data) // 4)


def fit(request: GenerateRequest, tokens: Tokens) -> tuple[str, list[int], int]:
    """What the llama.cpp engine makes of the request before decoding: (prompt, tokens, oldest turns dropped)."""
    fitted = Engine(on_event=lambda event: None)._fit_prompt(_Loaded(tokens, LoadRequest(Path("x"), 0)), request)
    assert not isinstance(fitted, str), fitted
    return fitted


class FittingEngine(FakeEngine):
    """Fits each prompt as the real engine does (`fit`), reports the trim as it does, then answers."""

    tokens: Tokens
    fitted: tuple[str, list[int], int]

    def _generate(self, request: GenerateRequest) -> None:
        self.tokens = Tokens(self.n_ctx)
        self.fitted = fit(request, self.tokens)
        if self.fitted[2]:
            self._emit(Trimmed(request.request_id, self.fitted[2], len(self.fitted[1]), self.n_ctx))
        super()._generate(request)


def add_turns(store: Store, pairs: int) -> int:
    """A conversation with a system prompt, a file, a tool call and its result, then `pairs` turns."""
    conversation = store.create_conversation(system_prompt="You are terse.")
    store.add_user_message(conversation.id, "Read this.", files=(Attachment("a.txt", "alpha\n" * 40, 60),))
    answer = store.start_answer(conversation.id, "m", "think", {})
    store.finish_answer(answer.id, "complete", "", "Calling a tool.", True)
    store.add_tool_calls(answer.id, [NewCall("c1", "echo", {"text": "hi"}, status="ok", result="hi " * 30)])
    fill(store, conversation.id, pairs)
    return int(conversation.id)


def test_the_prompt_is_the_whole_historys_and_the_engine_tokenizes_only_the_window(tmp_path: Path) -> None:
    """Where the whole conversation fits, the request is byte for byte the one the whole history gives; where it
    does not, the engine ends up with the same prompt and the same context start, having tokenized only the window
    (6 bytes a token of the context: 49,152 bytes at 8,192)."""
    store = Store(tmp_path / "c.db")
    engine = FittingEngine.scripted()
    session, events = start(tmp_path, store, engine, n_ctx=8192)
    for pairs in (1, 4, 10, 120):  # 1 and 4 fit; 10 must be trimmed but is read whole; 120 is ten windows
        conversation = add_turns(store, pairs)
        session.send(conversation, "Sum it up.")
        seen: list = []
        saved = next_event(events, AnswerSaved, seen=seen).message
        request = generations(engine)[-1]
        whole = whole_history(store, session, saved.id)
        reference = Tokens(8192)
        expected = fit(GenerateRequest(0, whole.prompt, request.sampling, trim=whole.trim), reference)
        assert engine.fitted[0] == expected[0], pairs
        assert whole.trim is not None and request.trim is not None
        if pairs <= 10:  # read whole: the very same request as before
            assert (request.prompt, request.messages, request.trim.count) == (whole.prompt, whole.messages,
                                                                             whole.trim.count)
            assert [request.trim.render(i) for i in (1, 2)] == [whole.trim.render(i) for i in (1, 2)]
        else:
            assert max(engine.tokens.tokenized) < 2 * 49_152 < max(reference.tokenized), engine.tokens.tokenized
        if expected[2]:  # trimmed: the context starts where the whole history's trim would have started it
            (trimmed,) = [e for e in seen if isinstance(e, ContextTrimmed)]
            assert (trimmed.from_message_id, trimmed.dropped_turns) == (whole.turn_starts[expected[2]], expected[2])
            assert store.message(saved.id).context_from_id == whole.turn_starts[expected[2]]
        else:
            assert saved.context_from_id is None and pairs < 10
    session.close()
