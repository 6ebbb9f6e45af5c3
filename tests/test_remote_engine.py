"""The OpenAI-compatible engine against a replaying loopback server and llama-cpp-python's real server."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from qwen_chat.engines.http import RemoteEngine
from qwen_chat.engines.protocol import Done, EngineEvent, Failed, GenerateRequest, Loaded, LoadRequest, Token
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.thinking import Part
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import AnswerSaved
from qwen_chat.store.database import Store
from replay_server import ERROR_MIDSTREAM, INLINE, REASONING, ReplayServer

from helpers import wait_until


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[float, EngineEvent]] = []
        self.lock = threading.Lock()

    def __call__(self, event: EngineEvent) -> None:
        with self.lock:
            self.items.append((time.perf_counter(), event))

    def wait_for(self, kind: type, timeout: float = 30) -> EngineEvent:
        """The first `kind` or Failed event, taken out of the list."""
        def take() -> EngineEvent | None:
            with self.lock:
                for item in self.items:
                    if isinstance(item[1], kind | Failed):
                        self.items.remove(item)
                        return item[1]
            return None

        return wait_until(take, timeout=timeout, what=kind.__name__, interval=0.005)

    def tokens(self) -> list[Token]:
        return [e for _, e in self.items if isinstance(e, Token)]


def connected(url: str, events: Events, model: str | None = None) -> RemoteEngine:
    engine = RemoteEngine(events, url, model=model).start()
    engine.load(LoadRequest(Path(url), 0))
    loaded = events.wait_for(Loaded)
    assert isinstance(loaded, Loaded), loaded
    return engine


def request(rid: int = 1, thinking: bool = True) -> GenerateRequest:
    return GenerateRequest(rid, "", Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, presence_penalty=1.5,
                                             max_tokens=100), messages=({"role": "user", "content": "hi"},),
                           enable_thinking=thinking)


def test_reasoning_content_and_the_request_fields(replay: ReplayServer) -> None:
    events = Events()
    engine = connected(replay.url, events)
    try:
        assert engine.model == "Qwen/Qwen3-30B-A3B" and engine.n_ctx == 32768
        engine.generate(request(thinking=False))
        done = events.wait_for(Done)
        assert isinstance(done, Done)
        assert (done.thinking, done.answer) == ("The user wants a greeting.", "Hello there!")
        assert done.prompt_tokens == 12 and done.completion_tokens == 9
        parts = {t.part for t in events.tokens()}
        assert parts == {Part.THINKING, Part.ANSWER}
        sent = replay.requests[-1]
        assert sent["chat_template_kwargs"] == {"enable_thinking": False}
        assert (sent["top_k"], sent["min_p"], sent["presence_penalty"], sent["stream"]) == (20, 0.0, 1.5, True)
    finally:
        engine.shutdown()


def test_inline_think_tags_are_split_the_same_way(replay: ReplayServer) -> None:
    replay.script = INLINE
    events = Events()
    engine = connected(replay.url, events)
    try:
        engine.generate(request())
        done = events.wait_for(Done)
        assert isinstance(done, Done)
        assert (done.thinking, done.answer) == ("Pondering.", "Hi [bold]there[/]")
    finally:
        engine.shutdown()


@pytest.mark.parametrize(("mode", "script", "expected"), [
    ("sse", ERROR_MIDSTREAM, "error mid-answer: CUDA out of memory"),
    ("status500", REASONING, "answered 500: model is overloaded"),
    ("json", REASONING, "does not speak the OpenAI streaming protocol"),
    ("drop", REASONING, "connection"),
])
def test_failures_are_clear_and_keep_the_partial(replay: ReplayServer, mode: str, script: list, expected: str) -> None:
    replay.mode, replay.script = mode, script
    events = Events()
    engine = connected(replay.url, events)
    try:
        engine.generate(request())
        failed = events.wait_for(Done)
        assert isinstance(failed, Failed) and expected in failed.message and "partial answer is kept" in failed.message
        if script is ERROR_MIDSTREAM:
            assert "".join(t.text for t in events.tokens()) == "Partial answer"
    finally:
        engine.shutdown()


def test_unreachable_or_wrong_model(replay: ReplayServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    events = Events()
    engine = RemoteEngine(events, f"http://127.0.0.1:{port}/v1").start()
    engine.load(LoadRequest(Path("x"), 0))
    failed = events.wait_for(Loaded)
    assert isinstance(failed, Failed) and "cannot reach" in failed.message and "/v1" in failed.message
    engine.shutdown()
    engine = RemoteEngine(events, replay.url, model="nope").start()
    engine.load(LoadRequest(Path("x"), 0))
    failed = events.wait_for(Loaded)
    assert isinstance(failed, Failed) and "does not serve nope" in failed.message and "Qwen3-30B-A3B" in failed.message
    engine.shutdown()


def test_stop_closes_the_stream_promptly(replay: ReplayServer) -> None:
    replay.mode = "slow"
    events = Events()
    engine = connected(replay.url, events)
    try:
        engine.generate(request())
        wait_until(lambda: len(events.tokens()) >= 3, timeout=10, what="3 tokens", interval=0.005)
        asked = time.perf_counter()
        engine.stop()
        done = events.wait_for(Done)
        elapsed = time.perf_counter() - asked
        assert isinstance(done, Done) and done.finish == "stopped" and done.answer.startswith("word0 word1 word2")
        assert elapsed < 0.2, f"stop took {elapsed:.3f}s"
    finally:
        engine.shutdown()


def test_session_over_http_stores_the_split_and_sends_no_thinking_back(replay: ReplayServer, tmp_path: Path) -> None:
    saved: list[AnswerSaved] = []
    session = ChatSession(Store(tmp_path / "c.db"), lambda e: saved.append(e) if isinstance(e, AnswerSaved) else None)
    session.connect(replay.url)
    wait_until(lambda: session.model.ready, timeout=10, what="the session ready")
    conversation = session.new_conversation()
    session.send(conversation.id, "Say hello")
    wait_until(lambda: saved, what="the answer saved")
    message = saved[-1].message
    assert (message.thinking, message.content, message.status) == ("The user wants a greeting.", "Hello there!",
                                                                   "complete")
    session.send(conversation.id, "/no_think")
    session.send(conversation.id, "Again")
    wait_until(lambda: len(saved) >= 2, what="the second answer saved")
    sent = replay.requests[-1]
    assert sent["messages"] == [{"role": "user", "content": "Say hello"},
                                {"role": "assistant", "content": "Hello there!"},
                                {"role": "user", "content": "Again /no_think"}]
    assert sent["chat_template_kwargs"] == {"enable_thinking": False} and sent["temperature"] == 0.7
    session.close()


def test_real_llama_cpp_server_streams_an_answer(llama_server: str) -> None:
    events = Events()
    engine = connected(llama_server, events)
    try:
        assert engine.model == "qwen-test"
        engine.generate(GenerateRequest(1, "", Sampling(temperature=0.0, max_tokens=20, seed=1),
                                        messages=({"role": "user", "content": "Reply with just the word: hello"},)))
        done = events.wait_for(Done, timeout=60)
        assert isinstance(done, Done) and "hello" in done.answer.lower()
        assert "".join(t.text for t in events.tokens()) == done.answer
    finally:
        engine.shutdown()
