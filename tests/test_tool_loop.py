"""The session's tool loop with a scripted model and a real MCP server (tests/mcp_servers/stdio_server.py over
stdio, through the SDK): calls are stored, approved or refused, run, answered; Esc stops it anywhere; the
store keeps all of it through a crash."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwen_chat.config.mcp_config import ServerEntry
from qwen_chat.config.tool_settings import load_tool_settings
from qwen_chat.engines.protocol import Loaded
from qwen_chat.session.chat import ChatSession
from qwen_chat.session.events import AnswerSaved, ToolApprovalNeeded, ToolCallChanged, ToolLoopEnded
from qwen_chat.session.tool_loop import DENIED
from qwen_chat.store.database import Store
from qwen_chat.store.export import from_json, to_json, to_markdown
from qwen_chat.tools.mcp_hub import McpHub

from fake_engine import FakeEngine, Reply
from helpers import events_until, write_settings

SERVER = Path(__file__).parent / "mcp_servers" / "stdio_server.py"


def call(name: str, **arguments: object) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpHub]:
    log = tmp_path_factory.mktemp("mcp") / "servers.log"
    running = McpHub([ServerEntry("test", "stdio", sys.executable, (str(SERVER),))], log_path=log)
    running.start()
    assert running.wait_ready(60), running.states()
    yield running
    running.close()


def session_with(hub: McpHub | None, replies: list[Reply], tiny_models: dict[str, Path], db: Path,
                 events: queue.Queue) -> tuple[ChatSession, FakeEngine]:
    engine = FakeEngine.scripted(replies)
    session = ChatSession(Store(db), events.put, engine=engine, tools=hub)
    session.load_model(tiny_models["hybrid"], 2048)
    events_until(events, lambda e: isinstance(e, Loaded), 30)
    return session, engine


def until(events: queue.Queue, kind: type, timeout: float = 30) -> list:
    return events_until(events, lambda e: isinstance(e, kind), timeout, what=kind.__name__)


def approve_next(events: queue.Queue, session: ChatSession, decision: str = "once") -> ToolApprovalNeeded:
    asked = until(events, ToolApprovalNeeded)[-1]
    assert session.decide(asked.call.id, decision)  # type: ignore[arg-type]
    return asked


def test_an_approved_call_runs_on_the_server_and_the_model_answers_from_its_result(
        hub: McpHub, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    events: queue.Queue = queue.Queue()
    session, engine = session_with(hub, [Reply("Let me add.\n" + call("add", a=2, b=3)), Reply("It is 5.")],
                                   tiny_models, tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "What is 2+3?")
    first = until(events, AnswerSaved)[-1].message
    assert [(c.name, c.arguments, c.status) for c in first.tool_calls] == [("add", {"a": 2, "b": 3}, "pending")]
    assert first.content == "Let me add.\n" and "<tool_call>" not in first.content
    assert session.busy()  # the loop holds the session until it ends
    asked = approve_next(events, session)
    assert asked.server == "test" and asked.call.name == "add"
    final = until(events, AnswerSaved)[-1].message
    session.close()
    assert final.content == "It is 5." and not final.tool_calls and not session.busy()
    stored = Store(tmp_path / "c.db").messages(conversation.id)
    assert [m.role for m in stored] == ["user", "assistant", "assistant"]
    assert [(c.status, c.result, c.server) for c in stored[1].tool_calls] == [("ok", "5", "test")]
    offered = [t["function"]["name"] for t in engine.requests[-1].tools]
    assert {"echo", "add", "fail", "hang"} <= set(offered)
    # the second round's prompt is the first one with the answer, its call and the result appended
    first_prompt, second_prompt = engine.requests[1].prompt, engine.requests[2].prompt
    assert second_prompt.startswith(first_prompt)
    assert second_prompt[len(first_prompt):] == (
        'Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_denied_invalid_unknown_and_failing_calls_are_told_to_the_model_and_never_run(
        hub: McpHub, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    events: queue.Queue = queue.Queue()
    calls = (call("echo", text="secret") + call("add", a="two", b=3) + call("nope") + call("fail", message="boom")
             + '<tool_call>\n{"name": "echo", "arguments": {\n</tool_call>')
    session, engine = session_with(hub, [Reply(calls), Reply("Sorry.")], tiny_models, tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "Go")
    approve_next(events, session, "deny")  # echo
    approve_next(events, session, "once")  # fail: it runs and fails on the server
    answer = until(events, AnswerSaved)[-1].message
    session.close()
    assert answer.content == "Sorry."
    calls_stored = Store(tmp_path / "c.db").messages(conversation.id)[1].tool_calls
    statuses = [(c.name, c.status) for c in calls_stored]
    assert statuses == [("echo", "denied"), ("add", "error"), ("nope", "error"), ("fail", "error"),
                        ("echo", "error")]
    assert "schema" in calls_stored[1].result and "no tool named 'nope'" in calls_stored[2].result
    assert "boom" in calls_stored[3].result and "not valid JSON" in calls_stored[4].result
    prompt = engine.requests[-1].prompt
    assert DENIED in prompt and "Error: " in prompt and "secret" not in prompt.split("<tool_response>", 1)[1]


def test_always_allow_a_tool_saves_a_rule_and_the_next_call_runs_without_asking(
        hub: McpHub, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    events: queue.Queue = queue.Queue()
    replies = [Reply(call("echo", text="one")), Reply(call("echo", text="two")), Reply("done")]
    session, _ = session_with(hub, replies, tiny_models, tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "Echo twice")
    approve_next(events, session, "tool")
    seen = events_until(events, lambda e: isinstance(e, AnswerSaved) and e.message.content == "done", 30)
    session.close()
    assert not any(isinstance(e, ToolApprovalNeeded) for e in seen)  # the second echo was not asked about
    assert load_tool_settings().allow_tools == ("test/echo",)
    results = [c.result for m in Store(tmp_path / "c.db").messages(conversation.id) for c in m.tool_calls]
    assert results == ["one", "two"]


def test_esc_at_the_approval_prompt_stops_the_loop_and_frees_the_session(
        hub: McpHub, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    events: queue.Queue = queue.Queue()
    session, engine = session_with(hub, [Reply(call("echo", text="a") + call("echo", text="b")), Reply("ok")],
                                   tiny_models, tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "Go")
    until(events, ToolApprovalNeeded)
    session.stop()
    ended = until(events, ToolLoopEnded)[-1]
    assert ended.reason.startswith("Stopped") and not session.busy()
    stored = Store(tmp_path / "c.db").messages(conversation.id)[1].tool_calls
    assert [c.status for c in stored] == ["stopped", "stopped"]
    assert len(engine.requests) == 2  # the load and the one answer: no further round
    session.send(conversation.id, "Next question")  # the session takes a new message at once
    until(events, AnswerSaved)
    session.close()


def test_esc_while_a_call_hangs_cancels_it(hub: McpHub, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    events: queue.Queue = queue.Queue()
    session, _ = session_with(hub, [Reply(call("hang", seconds=600))], tiny_models, tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "Wait")
    approve_next(events, session)
    events_until(events, lambda e: isinstance(e, ToolCallChanged) and e.call.status == "running", 30)
    session.stop()
    changed = events_until(events, lambda e: isinstance(e, ToolCallChanged) and e.call.status != "running", 15)
    assert changed[-1].call.status == "stopped"
    until(events, ToolLoopEnded)
    assert hub.call("test", "echo", {"text": "still up"}).text == "still up"  # the server serves the next call
    session.close()


def test_a_call_that_times_out_is_an_error_the_model_is_told(hub: McpHub, tiny_models: dict[str, Path],
                                                              tmp_path: Path) -> None:
    write_settings('[tools]\ncall_timeout = 1\nallow_servers = ["test"]\n')
    events: queue.Queue = queue.Queue()
    session, engine = session_with(hub, [Reply(call("hang", seconds=30)), Reply("It timed out.")], tiny_models,
                                   tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "Wait")
    seen = events_until(events, lambda e: isinstance(e, AnswerSaved) and e.message.content == "It timed out.", 30)
    session.close()
    assert not any(isinstance(e, ToolApprovalNeeded) for e in seen)  # the server rule allowed it
    (hung,) = Store(tmp_path / "c.db").messages(conversation.id)[1].tool_calls
    assert hung.status == "error" and "timed out" in hung.result
    assert "Error: " in engine.requests[-1].prompt


def test_the_round_limit_ends_a_loop_that_never_stops(hub: McpHub, tiny_models: dict[str, Path],
                                                       tmp_path: Path) -> None:
    write_settings('[tools]\nmax_rounds = 3\nallow_tools = ["test/echo"]\n')
    events: queue.Queue = queue.Queue()
    session, engine = session_with(hub, [Reply(call("echo", text=str(i))) for i in range(10)], tiny_models,
                                   tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "Loop")
    ended = until(events, ToolLoopEnded)[-1]
    session.close()
    assert "3 rounds" in ended.reason and len(engine.requests) == 1 + 3


def test_regenerate_replaces_the_whole_loop_and_keeps_it_as_a_version(
        hub: McpHub, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    write_settings('[tools]\nallow_servers = ["test"]\n')
    events: queue.Queue = queue.Queue()
    session, _ = session_with(hub, [Reply(call("echo", text="x")), Reply("first"), Reply("second")], tiny_models,
                              tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "Q")
    events_until(events, lambda e: isinstance(e, AnswerSaved) and e.message.content == "first", 30)
    session.regenerate(conversation.id)
    events_until(events, lambda e: isinstance(e, AnswerSaved) and e.message.content == "second", 30)
    session.close()
    store = Store(tmp_path / "c.db")
    assert [m.content for m in store.messages(conversation.id)] == ["Q", "second"]
    versions = store.earlier_versions(store.messages(conversation.id)[1].id)
    assert any(c.result == "x" for version in versions for m in version for c in m.tool_calls)


def test_tool_calls_are_exported_imported_and_searchable(hub: McpHub, tiny_models: dict[str, Path],
                                                         tmp_path: Path) -> None:
    write_settings('[tools]\nallow_servers = ["test"]\n')
    events: queue.Queue = queue.Queue()
    session, _ = session_with(hub, [Reply(call("echo", text="zanzibar marmalade")), Reply("Done.")], tiny_models,
                              tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "Q")
    events_until(events, lambda e: isinstance(e, AnswerSaved) and e.message.content == "Done.", 30)
    session.close()
    store = Store(tmp_path / "c.db")
    hits = store.search("zanzibar")
    assert hits and hits[0].snippet.startswith("echo: ")
    markdown = to_markdown(store, store.conversation(conversation.id))
    assert "**Tool call:** `echo` on test (ok)" in markdown and "zanzibar marmalade" in markdown
    copy = from_json(store, to_json(store, store.conversation(conversation.id)))
    (call_back,) = store.messages(copy.id)[1].tool_calls
    assert (call_back.name, call_back.server, call_back.result, call_back.status) == \
        ("echo", "test", "zanzibar marmalade", "ok")


def test_a_call_left_waiting_by_a_killed_process_is_marked_interrupted(tmp_path: Path) -> None:
    """A child process stores an answer with a pending call and is killed -9; the next start marks the call."""
    db = tmp_path / "c.db"
    script = textwrap.dedent(f"""
        import os, sys, time
        from qwen_chat.store.database import Store
        from qwen_chat.store.tool_calls import NewCall
        store = Store({str(db)!r})
        c = store.create_conversation()
        store.add_user_message(c.id, "q")
        a = store.start_answer(c.id, "m", "", {{}})
        store.finish_answer(a.id, "complete", "", "", True)
        store.add_tool_calls(a.id, [NewCall("c1", "echo", {{}}), NewCall("c2", "echo", {{}}, status="running")])
        print("ready", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = Store(db)
    assert store.recovered == 2
    calls = store.messages(store.conversations()[0].id)[1].tool_calls
    assert [c.status for c in calls] == ["interrupted", "interrupted"]
    assert "did not run" in calls[0].result and "may or may not" in calls[1].result


def test_a_huge_result_is_kept_whole_and_cut_for_the_model_with_a_note(tiny_models: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    from qwen_chat.session.tool_loop import STORE_LIMIT

    write_settings('[tools]\nallow_servers = ["test"]\nresult_limit = 5000\n')
    big = McpHub([ServerEntry("test", "stdio", sys.executable, (str(SERVER),))], log_path=tmp_path / "mcp.log",
                 result_limit=STORE_LIMIT)
    big.start()
    assert big.wait_ready(60)
    events: queue.Queue = queue.Queue()
    session, engine = session_with(big, [Reply(call("big", size=300_000)), Reply("Long.")], tiny_models,
                                   tmp_path / "c.db", events)
    try:
        conversation = session.new_conversation()
        session.send(conversation.id, "Big")
        events_until(events, lambda e: isinstance(e, AnswerSaved) and e.message.content == "Long.", 30)
    finally:
        session.close()
        big.close()
    (stored,) = Store(tmp_path / "c.db").messages(conversation.id)[1].tool_calls
    assert stored.result == "x" * 300_000  # whole in the store
    prompt = engine.requests[-1].prompt
    assert "x" * 5000 in prompt and "x" * 5001 not in prompt
    assert "[the result was cut here: it is 300,000 characters, the first 5,000 shown]" in prompt


def test_esc_while_the_model_writes_a_call_keeps_it_stopped_and_runs_nothing(
        hub: McpHub, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    events: queue.Queue = queue.Queue()
    session, engine = session_with(hub, [Reply(call("echo", text="never"), wait_for_stop=True)], tiny_models,
                                   tmp_path / "c.db", events)
    conversation = session.new_conversation()
    session.send(conversation.id, "Go")
    events_until(events, lambda e: getattr(e, "part", None) is not None and e.part.value == "tool_call", 30)
    session.stop()
    saved = until(events, AnswerSaved)[-1].message
    session.close()
    assert saved.status == "stopped" and [c.status for c in saved.tool_calls] == ["stopped"]
    assert not session.busy() and len(engine.requests) == 2  # the load and the answer: nothing more
