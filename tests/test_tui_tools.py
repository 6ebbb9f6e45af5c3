"""Tool calls in the Textual app, driven with Pilot: the scripted FakeEngine writes the calls, the real MCP hub
runs them on the real test server (tests/mcp_servers/stdio_server.py) over stdio. The approval prompt (allow once,
deny, always allow), Esc at the prompt and during a running call, a reopened conversation, escape codes in a result,
and the tools panel (F9, /tools)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Button, Collapsible, Static

from qwen_chat.config.mcp_config import ServerEntry, add_server, load_servers, remove_server
from qwen_chat.config.tool_settings import add_rule, rules
from qwen_chat.engines.protocol import GenerateRequest
from qwen_chat.session.events import ToolApprovalNeeded
from qwen_chat.session.tool_loop import DENIED
from qwen_chat.store.database import Store
from qwen_chat.store.records import Stats
from qwen_chat.store.tool_calls import NewCall
from qwen_chat.tools.mcp_hub import McpHub
from qwen_chat.tui.app import QwenChatApp
from qwen_chat.tui.composer import Composer
from qwen_chat.tui.messages import AssistantMessage, UserMessage
from qwen_chat.tui.tool_calls_view import ApprovalBar, ToolCallView
from qwen_chat.tui.tools_screen import RestartButton, RevokeButton, ToolsScreen, ToolSwitch

from fake_engine import FakeEngine, Reply
from helpers import SIZE, make_app, screen_text, status, type_and_send, wait_for

SERVER = str(Path(__file__).parent / "mcp_servers" / "stdio_server.py")


def call(name: str, **arguments: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


@pytest.fixture
def mcp_hub() -> Iterator[McpHub]:
    """The real hub with the test server, connected; a second server that crashes at start (for the panel). Both
    are in mcp.json, as the app's hub's servers always are: the panel reads it again when it opens."""
    for entry in (ServerEntry("test", "stdio", command=sys.executable, args=(SERVER,)),
                  ServerEntry("broken", "stdio", command=sys.executable, args=(SERVER, "--crash"))):
        add_server(entry)
    hub = McpHub(load_servers()[0])
    hub.start()
    assert hub.wait_ready(30)
    try:
        yield hub
    finally:
        hub.close()


def views(app: QwenChatApp) -> list[ToolCallView]:
    return list(app.query(ToolCallView))


def requests(engine: FakeEngine) -> list[GenerateRequest]:
    return [r for r in engine.requests if isinstance(r, GenerateRequest)]


def idle(app: QwenChatApp) -> bool:
    return app.session.busy() is None and "ready" in status(app)


async def send_and_wait_for_approval(pilot, app: QwenChatApp, text: str) -> ToolCallView:  # noqa: ANN001
    await wait_for(pilot, lambda: "ready" in status(app), what="model load")
    await type_and_send(pilot, text)
    return await wait_for(pilot, lambda: next((v for v in views(app) if v.asking), None), what="approval prompt")


async def test_allow_once_runs_the_call_shows_its_result_and_the_loop_goes_on(
        tiny_models: dict[str, Path], tmp_path: Path, mcp_hub: McpHub) -> None:
    engine = FakeEngine.scripted([Reply("Let me check.\n" + call("echo", text="hi there"), delay=0.03),
                                  Reply("The tool said hi there.")])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine, tools=mcp_hub)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await type_and_send(pilot, "say hi")
        # while the call streams: one compact line, never the raw call in the answer's Markdown
        preparing = await wait_for(pilot, lambda: next((w for w in app.query(".tool-preparing") if w.display), None),
                                   what="the preparing line")
        assert "preparing a" in str(preparing.render())
        assert "<tool_call>" not in app.query_one(AssistantMessage).answer_text
        view = await wait_for(pilot, lambda: next((v for v in views(app) if v.asking), None), what="approval")
        await wait_for(pilot, lambda: "Deny (d)" in screen_text(app), what="the approval prompt drawn")
        shown = screen_text(app)
        assert "Allow once (a)" in shown and "Always allow this tool (t)" in shown and "Deny (d)" in shown
        assert "waiting for your approval" in shown and '"text": "hi there"' in shown and "· test" in shown
        assert "<tool_call>" not in shown and "Return the text unchanged." in shown  # the tool's description
        assert app.focused is app.query_one("#prompt")  # the prompt never takes the keyboard by itself
        assert "approval" in status(app)

        await pilot.press("shift+tab")  # the deliberate move to the prompt; no button is focused there
        assert isinstance(app.focused, ApprovalBar) and not isinstance(app.focused, Button)
        await pilot.press("enter")  # no default answer
        await wait_for(pilot, lambda: any("Enter does not answer" in str(n.message) for n in app._notifications),
                       what="the note that Enter answers nothing")
        assert view.asking and view.call.status == "pending"
        await pilot.press("a")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 2 and idle(app), what="the second reply")
        assert view.call.status == "ok" and not view.asking
        assert app.query(AssistantMessage)[-1].answer_text == "The tool said hi there."
        box = view.query_one(".tool-result", Collapsible)
        assert box.collapsed and box.title.startswith("Result: ok · 8 characters")
        assert isinstance(app.focused, type(app.query_one("#prompt")))  # back to the prompt
        box.collapsed = False
        await wait_for(pilot, lambda: view.query_one(".tool-result-text").size.height > 0, what="the result opened")
        assert "hi there" in str(view.query_one(".tool-result-text").render())
        assert "<tool_call>" not in screen_text(app)
    # the model was sent the result
    assert "hi there" in requests(engine)[-1].prompt and "<tool_response>" in requests(engine)[-1].prompt


async def test_deny_tells_the_model_and_the_answer_goes_on(tiny_models: dict[str, Path], tmp_path: Path,
                                                           mcp_hub: McpHub) -> None:
    engine = FakeEngine.scripted([Reply(call("echo", text="secret"), delay=0.05), Reply("OK, I will not.")])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine, tools=mcp_hub)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await type_and_send(pilot, "echo secret")
        prompt = app.query_one("#prompt", Composer)
        prompt.value = "a draft"  # typing while the answer streams: the approval does not take the keys
        view = await wait_for(pilot, lambda: next((v for v in views(app) if v.asking), None), what="approval")
        await wait_for(pilot, lambda: "Deny (d)" in screen_text(app), what="the approval prompt drawn")
        assert app.focused is prompt and prompt.value == "a draft"
        await pilot.press("shift+tab")  # what the notification says reaches the prompt
        assert isinstance(app.focused, ApprovalBar)
        await pilot.press("d")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 2 and idle(app), what="the second reply")
        assert view.call.status == "denied" and prompt.value == "a draft"
        assert view.query_one(".tool-result", Collapsible).title.startswith("denied ·")
    assert DENIED in requests(engine)[-1].prompt


async def test_always_allow_this_tool_saves_the_rule_and_the_next_call_runs_without_asking(
        tiny_models: dict[str, Path], tmp_path: Path, mcp_hub: McpHub) -> None:
    engine = FakeEngine.scripted([Reply(call("add", a=2, b=3)), Reply("5."),
                                  Reply(call("add", a=4, b=5)), Reply("9.")])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine, tools=mcp_hub)
    asked: list[ToolApprovalNeeded] = []
    async with app.run_test(size=SIZE) as pilot:
        sink = app.session.sink
        app.session.sink = lambda event: (asked.append(event) if isinstance(event, ToolApprovalNeeded) else None,
                                          sink(event))[-1]
        await send_and_wait_for_approval(pilot, app, "2+3?")
        await pilot.press("shift+tab", "t")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 2 and idle(app), what="the second reply")
        assert rules() == ["test/add"]
        assert "test/add" in (Path(tmp_path / "config" / "settings.toml")).read_text()
        await type_and_send(pilot, "4+5?")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 4 and idle(app), what="the fourth reply")
        assert [v.call.status for v in views(app)] == ["ok", "ok"] and len(asked) == 1
        assert views(app)[-1].call.result == "9" and app.query(AssistantMessage)[-1].answer_text == "9."


async def test_a_sentence_typed_while_a_call_waits_runs_nothing_saves_nothing_and_stays_in_the_composer(
        tiny_models: dict[str, Path], tmp_path: Path, mcp_hub: McpHub) -> None:
    """The audit's case: with the message box empty, "sure, go ahead" then Enter ran the call (the prompt had the
    focus) and its "s" saved "always allow this server"."""
    engine = FakeEngine.scripted([Reply(call("echo", text="rm -rf /home"), delay=0.03), Reply("Not run.")])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine, tools=mcp_hub)
    async with app.run_test(size=SIZE) as pilot:
        view = await send_and_wait_for_approval(pilot, app, "clean up")
        prompt = app.query_one("#prompt", Composer)
        assert prompt.value == "" and app.focused is prompt
        await pilot.press(*"sure, go ahead", "enter")
        await pilot.press(*" ok", "enter", "space", "y", "a", "t", "s", "d")
        await wait_for(pilot, lambda: prompt.value == "sure, go ahead ok yatsd", what="every key in the prompt")
        await pilot.pause()  # one more refresh: an answer those keys set off would have reached the call by now
        assert view.asking and view.call.status == "pending" and app.session.busy()
        assert prompt.value == "sure, go ahead ok yatsd" and app.focused is prompt
        assert rules() == [] and not (tmp_path / "config" / "settings.toml").exists()
        # at the prompt itself, a key that answers nothing goes back to the message with the focus
        await pilot.press("shift+tab")
        assert isinstance(app.focused, ApprovalBar)
        await pilot.press("x")
        assert app.focused is prompt and prompt.value.endswith("yatsdx") and view.asking
        await pilot.press("escape")
        await wait_for(pilot, lambda: idle(app), timeout=10, what="idle after Esc")
        assert view.call.status == "stopped" and prompt.value.endswith("yatsdx")
    assert len(requests(engine)) == 1


async def test_always_allow_this_server_runs_the_same_answers_next_call_without_asking(
        tiny_models: dict[str, Path], tmp_path: Path, mcp_hub: McpHub) -> None:
    engine = FakeEngine.scripted([Reply(call("add", a=1, b=2) + "\n" + call("echo", text="two")), Reply("Both ran.")])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine, tools=mcp_hub)
    asked: list[ToolApprovalNeeded] = []
    async with app.run_test(size=SIZE) as pilot:
        sink = app.session.sink
        app.session.sink = lambda event: (asked.append(event) if isinstance(event, ToolApprovalNeeded) else None,
                                          sink(event))[-1]
        view = await send_and_wait_for_approval(pilot, app, "add, then echo")
        await wait_for(pilot, lambda: "Deny (d)" in screen_text(app), what="the buttons drawn, to click")
        # a click answers too (the buttons take no focus, so only the mouse or the prompt's own keys reach them)
        assert await pilot.click(next(b for b in view.query(Button) if b.name == "server"))
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 2 and idle(app), what="the second reply")
        assert [v.call.status for v in views(app)] == ["ok", "ok"] and len(asked) == 1
        assert rules() == ["test"]


async def test_esc_at_the_approval_prompt_stops_the_call_and_the_app_is_idle(
        tiny_models: dict[str, Path], tmp_path: Path, mcp_hub: McpHub) -> None:
    engine = FakeEngine.scripted([Reply(call("echo", text="x"), delay=0.05), Reply("Answered after the stop.")])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine, tools=mcp_hub)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await type_and_send(pilot, "echo x")
        await pilot.press("f9")  # the panel is open when the approval comes: the prompt waits in the chat
        await wait_for(pilot, lambda: isinstance(app.screen, ToolsScreen), what="panel")
        view = await wait_for(pilot, lambda: next((v for v in views(app) if v.asking), None), what="approval")
        await pilot.press("escape")  # closes the panel (Esc there is the panel's)
        await wait_for(pilot, lambda: not isinstance(app.screen, ToolsScreen), what="panel closed")
        assert view.asking and view.query_one(ApprovalBar).display and app.session.busy()
        await pilot.press("escape")
        await wait_for(pilot, lambda: idle(app), timeout=10, what="idle after Esc")
        assert view.call.status == "stopped" and not view.asking and not view.query_one(ApprovalBar).display
        assert len(requests(engine)) == 1  # the loop ended: no next answer
        await type_and_send(pilot, "and now?")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 2 and idle(app), what="a new answer")
        assert app.query(AssistantMessage)[-1].answer_text == "Answered after the stop."


async def test_esc_while_a_call_runs_cancels_it(tiny_models: dict[str, Path], tmp_path: Path,
                                                mcp_hub: McpHub) -> None:
    engine = FakeEngine.scripted([Reply(call("hang", seconds=3600))])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine, tools=mcp_hub)
    async with app.run_test(size=SIZE) as pilot:
        view = await send_and_wait_for_approval(pilot, app, "wait forever")
        await pilot.press("shift+tab", "a")
        await wait_for(pilot, lambda: view.call.status == "running", what="the call to run")
        assert "running the tool hang" in status(app)
        started = time.monotonic()
        await pilot.press("escape")
        await wait_for(pilot, lambda: idle(app), timeout=10, what="idle after Esc")
        assert time.monotonic() - started < 5
        assert view.call.status == "stopped" and "cancelled" in view.call.result
        assert len(requests(engine)) == 1


async def test_a_reopened_conversation_draws_its_calls_and_escape_codes_stay_visible_symbols(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    store = Store(db)
    conv = store.create_conversation()
    store.add_user_message(conv.id, "run things")
    answer = store.start_answer(conv.id, "m", "no_think", {})
    store.finish_answer(answer.id, "complete", "", "", True, Stats())
    nasty = "\x1b[2J\x1b]0;pwned\x07\x1b[31mred\x1b[0m [bold]not markup[/]\n" + "\n".join(f"line {n}"
                                                                                     for n in range(1, 500))
    store.add_tool_calls(answer.id, [NewCall("c0", "echo", {"text": "\x1b[31m"}), NewCall("c1", "fail", {}),
                                     NewCall("c2", "echo", {"text": "later"})])
    first, second, third = store.message(answer.id).tool_calls
    store.set_tool_call(first.id, "ok", nasty, server="test")
    store.set_tool_call(second.id, "error", "it broke", server="test")
    store.set_tool_call(third.id, "interrupted", "The app ended while this call was running.")
    store.close()
    app = make_app(db, tiny_models["hybrid"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(views(app)) == 3, what="the stored calls")
        ok, failed, cut = views(app)
        assert [v.call.status for v in views(app)] == ["ok", "error", "interrupted"]
        titles = [v.query_one(".tool-result", Collapsible).title for v in views(app)]
        assert titles[0].startswith("Result: ok · ") and "500 lines" in titles[0]
        assert titles[1].startswith("Result: error") and titles[2].startswith("interrupted")
        assert all(v.query_one(".tool-result", Collapsible).collapsed for v in views(app))
        await wait_for(pilot, lambda: "echo · interrupted" in screen_text(app), what="the calls drawn")
        shown = screen_text(app)
        assert "echo · test · done" in shown and "fail · test · failed" in shown and "echo · interrupted" in shown
        assert "the model ended its answer without any text" not in shown  # an answer of calls only
        ok.query_one(".tool-result", Collapsible).collapsed = False
        await wait_for(pilot, lambda: ok.query_one(".tool-result-text").size.height > 0, what="the result opened")
        drawn = str(ok.query_one(".tool-result-text").render())
        assert "\x1b" not in drawn and "\x07" not in drawn and "␛[2J" in drawn
        assert "[bold]not markup[/]" in drawn  # literal: never markup
        assert "line 199" in drawn and "line 300" not in drawn and "not shown here" in drawn
        app.query_one("#transcript").scroll_home(animate=False)
        await wait_for(pilot, lambda: "echo · test · done" in screen_text(app), what="the first call's head drawn")
        assert "\x1b" not in screen_text(app) and "␛[31m" in screen_text(app)


async def test_the_tools_panel_turns_a_tool_off_for_this_conversation(tiny_models: dict[str, Path],
                                                                      tmp_path: Path, mcp_hub: McpHub) -> None:
    engine = FakeEngine.scripted([Reply("No tools needed.")])
    add_rule("test", "fail")
    restarted: list[str] = []
    restart = mcp_hub.restart
    mcp_hub.restart = lambda name, entry=None: (restarted.append(name), restart(name, entry))[-1]  # type: ignore[method-assign]
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine, tools=mcp_hub)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await type_and_send(pilot, "/tools")  # typed: opens the panel, nothing is sent
        screen = await wait_for(pilot, lambda: isinstance(app.screen, ToolsScreen) and app.screen, what="panel")
        await wait_for(pilot, lambda: bool(screen.query(ToolSwitch)), what="the switches")
        shown = screen_text(app)
        count = len(next(s for s in mcp_hub.states() if s.name == "test").tools)
        assert f"up · {count} tools" in shown and "down: the server exited" in shown and "Restart" in shown
        assert "the tool test/fail" in shown
        assert not app.query(UserMessage)
        echo = next(s for s in screen.query(ToolSwitch) if s.key == "test/echo")
        echo.focus()
        await pilot.press("space")
        await wait_for(pilot, lambda: app.session.store.conversation(app.conversation.current.id).tools_off
                       == ("test/echo",),
                       what="the switch saved")
        screen.query_one(RestartButton).press()
        await wait_for(pilot, lambda: restarted == ["broken"], what="restart")
        screen.query_one(RevokeButton).press()
        await wait_for(pilot, lambda: rules() == [], what="revoked")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ToolsScreen), what="panel closed")
        await type_and_send(pilot, "hello")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 1 and idle(app), what="the answer")
        await pilot.press("f9")  # the key opens it too
        await wait_for(pilot, lambda: isinstance(app.screen, ToolsScreen), what="panel by F9")
    offered = {spec["function"]["name"] for spec in requests(engine)[-1].tools}
    assert "echo" not in offered and {"add", "fail", "hang"} <= offered


async def test_without_servers_the_panel_says_how_to_add_one(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await pilot.press("f9")
        await wait_for(pilot, lambda: isinstance(app.screen, ToolsScreen), what="panel")
        await wait_for(pilot, lambda: "mcp.json" in screen_text(app), what="the panel drawn")
        shown = screen_text(app)
        assert "qwen-chat mcp add NAME -- COMMAND" in shown and "mcp.json" in shown


async def test_f9_picks_up_mcp_json_changes_without_a_restart(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Issue 23: no servers at start (the app's hub made, not started, as `qwen-chat` makes it); a server added
    to mcp.json connects on `r`; one added while the panel is closed connects when F9 opens it again, the first
    staying connected; a removed one stops."""
    hub = McpHub([])
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=FakeEngine.scripted(), tools=hub)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "ready" in status(app), what="model load")
            await pilot.press("f9")
            await wait_for(pilot, lambda: isinstance(app.screen, ToolsScreen) and any(
                "then press r here" in str(w.render()) for w in app.screen.query(Static)), what="how to add one")
            add_server(ServerEntry("test", "stdio", command=sys.executable, args=(SERVER,)))
            await pilot.press("r")
            await wait_for(pilot, lambda: " tools" in screen_text(app) and "up · " in screen_text(app),
                           what="the new server up")
            first = hub._connections["test"]
            await pilot.press("escape")
            add_server(ServerEntry("second", "stdio", command=sys.executable, args=(SERVER,)))
            await pilot.press("f9")
            await wait_for(pilot, lambda: [(s.name, s.status) for s in hub.states()] == [("test", "up"),
                                                                                         ("second", "up")],
                           what="the second server up")
            assert hub._connections["test"] is first  # unchanged: kept connected, not restarted
            assert any(n.message == "mcp.json reloaded: added second." for n in app._notifications)
            remove_server("test")
            await pilot.press("r")
            await wait_for(pilot, lambda: [s.name for s in hub.states()] == ["second"], what="test removed")
            await wait_for(pilot, lambda: "test" not in hub._connections, what="its connection closed")
            assert any(n.message == "mcp.json reloaded: removed test." for n in app._notifications)
    finally:
        hub.close()
