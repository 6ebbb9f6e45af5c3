"""The real Textual app driven with Pilot on a real SQLite file: with the scripted FakeEngine where the test is
about the UI (deterministic answers), with real llama.cpp (tiny models, the real one) where it is about the engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import Input, ListView

from qwen_chat.store.database import Store
from qwen_chat.tui.app import QwenChatApp
from qwen_chat.tui.messages import AssistantMessage, UserMessage

from fake_engine import FakeEngine, Reply
from helpers import SIZE, make_app, screen_text, status, type_and_send, wait_for

CODE_ANSWER = "Here it is:\n\n```python\ndef reverse(text: str) -> str:\n    return text[::-1]\n```\n"
NUMBERS = "\n".join(f"{n} is number {n}" for n in range(1, 400))

# wide enough that the phrases these tests look for are not wrapped across two screen lines
WIDE = (140, 36)


async def test_chat_streams_stops_and_persists(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    engine = FakeEngine.scripted([Reply(CODE_ANSWER, delay=0.03),
                                  Reply(NUMBERS, chars=8, delay=0.001, wait_for_stop=True)])
    app = make_app(db, tiny_models["none"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="model load")
        await type_and_send(pilot, "Write a Python function that reverses a string. Markup: [bold]x[/]")
        await wait_for(pilot, lambda: len(app.query(UserMessage)) == 1, what="user message shown")
        await wait_for(pilot, lambda: bool(app.query(AssistantMessage)) and
                       len(app.query_one(AssistantMessage).answer_text) > 20, what="streamed tokens")
        growing = app.query_one(AssistantMessage).answer_text
        await wait_for(pilot, lambda: app.chat.transcript.live is None, what="answer done")
        assert len(growing) < len(CODE_ANSWER) and app.query_one(AssistantMessage).answer_text == CODE_ANSWER
        transcript = app.query_one("#transcript")
        transcript.scroll_home(animate=False)
        await wait_for(pilot, lambda: "Here it is:" in screen_text(app), what="the top of the transcript")
        assert "[bold]x[/]" in screen_text(app)  # the user's markup is shown literally
        transcript.scroll_end(animate=False)
        assert "tok/s" in status(app) and "ctx " in status(app) and "no thinking" in status(app)

        # a long answer, stopped with Esc while it is still being written: the text stays, marked stopped
        await type_and_send(pilot, "Count to 400, one number per line.")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 2
                       and app.query(AssistantMessage)[-1].answer_text == NUMBERS, what="streaming")
        assert app.chat.transcript.live is not None and app.session.generating
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.chat.transcript.live is None, timeout=5, what="stop")
        await wait_for(pilot, lambda: "stopped" in screen_text(app), what="the answer marked stopped")
    store = Store(db)
    (conv,) = store.conversations()
    messages = store.messages(conv.id)
    assert [(m.role, m.status) for m in messages] == [("user", "complete"), ("assistant", "complete"),
                                                      ("user", "complete"), ("assistant", "stopped")]
    assert messages[1].content == CODE_ANSWER
    assert messages[-1].content == NUMBERS and messages[-1].tokens_per_second > 0
    store.close()

    # relaunch: the last conversation is there
    app2 = make_app(db, tiny_models["none"], engine=FakeEngine.scripted())
    async with app2.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app2.query(AssistantMessage)) == 2, what="history")
        # the transcript ends at the last answer once its Markdown is laid out (a condition, not a pause: on a
        # loaded machine the layout takes longer than any fixed wait; issue 23 saw this fail in a full run)
        await wait_for(pilot, lambda: "399 is number 399" in screen_text(app2), timeout=30,
                       what="the end of the last answer on screen")
        assert "stopped" in screen_text(app2)


async def test_model_output_markup_is_literal(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    store = Store(db)
    conv = store.create_conversation()
    store.add_user_message(conv.id, "show me markup")
    answer = store.start_answer(conv.id, "m", "think", {})
    nasty = "Here: [bold]not bold[/] [link=https://x.test]l[/link] [/] [red on blue]c[/]"
    store.finish_answer(answer.id, "complete", "[dim]thought[/dim] [/]", nasty, True)
    store.close()
    app = make_app(db, tiny_models["hybrid"], n_ctx=512)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: bool(app.query(AssistantMessage)), what="history")
        await wait_for(pilot, lambda: "Here:" in screen_text(app) and "show me markup" in screen_text(app),
                       what="the stored answer drawn")
        shown = screen_text(app)
        assert "[bold]not bold[/]" in shown and "[link=https://x.test]l[/link]" in shown
        assert "[red on blue]c[/]" in shown
        # streaming path too
        live = app.query_one(AssistantMessage)
        live.add_thinking(" [b]more[/b] \x1b[31mred\x0e")
        await live.add_answer(" [/] [i]tail[/i] \x1b]0;title\x07 \x9b2J")
        live.query_one(".thinking").collapsed = False
        await wait_for(pilot, lambda: "more" in screen_text(app) and "tail" in screen_text(app),
                       what="the opened thinking and the new answer text drawn")
        assert "[i]tail[/i]" in live.answer_text and "[/]" in screen_text(app)
        shown = screen_text(app)
        # terminal control characters are shown as symbols, never sent raw
        assert "\u241b[31mred\u240e" in shown and "\u241b]0;title\u2407" in shown
        assert not any(ch in shown for ch in "\x1b\x0e\x07\x9b")


async def test_think_commands_on_hybrid_model(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    app = make_app(db, tiny_models["hybrid"], n_ctx=512)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        assert "thinking on" in status(app)
        await type_and_send(pilot, "/no_think")
        await wait_for(pilot, lambda: "thinking off" in status(app), what="mode switch")
        assert "Thinking off for this conversation." in screen_text(app)
        assert app.session.store.conversation(app.conversation.current.id).enable_thinking is False
        await type_and_send(pilot, "hello")
        await wait_for(pilot, lambda: app.chat.transcript.live is None and len(app.query(AssistantMessage)) == 1,
                       what="answer")
        (_, answer) = app.session.store.messages(app.conversation.current.id)
        assert answer.mode == "no_think" and answer.sampling["temperature"] == 0.7  # the non-thinking preset
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: "thinking on" in status(app), what="ctrl+t")
        await type_and_send(pilot, "again")
        await wait_for(pilot, lambda: app.chat.transcript.live is None and len(app.query(AssistantMessage)) == 2,
                       what="answer 2")
        answer2 = app.session.store.messages(app.conversation.current.id)[-1]
        assert answer2.mode == "think" and answer2.sampling["temperature"] == 0.6
        assert answer2.sampling["top_p"] == 0.95 and answer2.sampling["presence_penalty"] == 0.0  # F32: unquantized


async def test_think_command_on_a_model_that_cannot_switch(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    app = make_app(tmp_path / "chat.db", tiny_models["thinking"], n_ctx=512)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        assert "always thinks" in status(app)
        await type_and_send(pilot, "/no_think")
        await wait_for(pilot, lambda: "cannot turn thinking off" in screen_text(app), what="refusal")


async def test_conversation_list_new_rename_delete(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], n_ctx=512)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        first = app.conversation.current.id
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.conversation.current.id != first, what="new chat")
        second = app.conversation.current.id
        assert len(app.query_one("#conversations", ListView).children) == 2
        await pilot.press("f2")
        await wait_for(pilot, lambda: bool(app.screen.query("#new-title")), what="the rename dialog")
        rename = app.screen.query_one("#new-title", Input)
        rename.value = "Holiday plans [b]x[/b]"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.session.store.conversation(second).title == "Holiday plans [b]x[/b]",
                       what="rename")
        await wait_for(pilot, lambda: "Holiday plans" in screen_text(app), what="the new title in the list")
        assert "Holiday plans [b]x[/b]" in screen_text(app)  # shown as typed, markup and all
        await pilot.press("ctrl+d")
        await wait_for(pilot, lambda: "Delete “" in screen_text(app), what="the delete dialog")
        assert "Delete “Holiday plans [b]x[/b]”" in screen_text(app)  # the dialog names the current title
        await pilot.press("y")
        await wait_for(pilot, lambda: app.conversation.current.id == first, what="delete")
        assert [c.id for c in app.session.store.conversations()] == [first]
        # switch back and forth through the list
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: app.conversation.current.id not in (first, second), what="another chat")
        view = app.query_one("#conversations", ListView)
        view.focus()
        view.index = [i for i, item in enumerate(view.children) if item.conversation_id == first][0]
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.conversation.current.id == first, what="switch")


async def test_killed_mid_answer_shows_interrupted(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    writer = (
        "import sys, time\nfrom pathlib import Path\nfrom qwen_chat.store.database import Store\n"
        "s = Store(Path(sys.argv[1])); c = s.create_conversation()\n"
        "s.add_user_message(c.id, 'tell me'); a = s.start_answer(c.id, 'm', 'think', {})\n"
        "s.save_partial(a.id, 'thinking so far', 'The partial answer')\nprint('ok', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ok"
    proc.kill()
    proc.wait()
    app = make_app(db, tiny_models["hybrid"], n_ctx=512)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: bool(app.query(AssistantMessage)), what="history")
        await wait_for(pilot, lambda: "The partial answer" in screen_text(app), what="the partial answer drawn")
        assert "interrupted" in screen_text(app)


REAL_WRITER = """
import sys, time
from pathlib import Path
from qwen_chat.session.chat import ChatSession
from qwen_chat.store.database import Store
store = Store(Path(sys.argv[1]))
session = ChatSession(store, lambda event: None)
session.load_model(Path(sys.argv[2]), 2048)
while not session.model.ready:
    time.sleep(0.05)
conv = session.new_conversation()
session.seed = 0  # the model counts on ("1 2 3 ... 30 ..."): far past 40 characters before it ends
session.send(conv.id, "Count from 1 to 2000, separated by spaces, nothing else.")
while True:
    answer = store.messages(conv.id)[-1]
    if answer.status != "streaming":
        break
    if len(answer.content) > 40:
        print("partial saved", flush=True)
        time.sleep(60)
    time.sleep(0.05)
print("the answer ended before a partial save", flush=True)
"""


async def test_kill_9_during_real_generation(real_model: Path, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    proc = subprocess.Popen([sys.executable, "-c", REAL_WRITER, str(db), str(real_model)],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "partial saved"
    finally:
        proc.kill()
        proc.wait()
    app = make_app(db, real_model, n_ctx=2048)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: bool(app.query(AssistantMessage)), what="history")
        answer = app.query(AssistantMessage)[-1]
        assert len(answer.answer_text) > 40
        await wait_for(pilot, lambda: "interrupted" in screen_text(app), what="the answer marked interrupted")
        assert app.session.store.messages(app.conversation.current.id)[-1].status == "interrupted"


async def test_thinking_is_collapsed_and_streams_once_opened(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from textual.containers import VerticalScroll

    from qwen_chat.tui.thinking_title import ThinkingTitle

    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], n_ctx=512)
    async with app.run_test(size=SIZE) as pilot:
        transcript = app.query_one("#transcript", VerticalScroll)
        live = AssistantMessage()
        await transcript.mount(live)
        box = live.query_one(".thinking", ThinkingTitle)
        assert not box.display  # no thinking yet: no empty block
        live.add_thinking("Let me consider the question. " * 3)
        await wait_for(pilot, lambda: "Thinking…" in screen_text(app), what="the thinking block drawn")
        # collapsed while it streams (drawing a long thinking would take the CPU the model needs)
        assert box.display and box.collapsed and box.title == "Thinking…"
        assert "Let me consider the question." not in screen_text(app)
        box.collapsed = False  # opened while thinking: it shows what was thought so far, then follows
        await wait_for(pilot, lambda: "Let me consider the question." in screen_text(app), what="the opened thinking")
        live.add_thinking(" Next: the follow-up thought.")
        await wait_for(pilot, lambda: "the follow-up thought" in screen_text(app), what="the thinking following")
        await live.add_answer("The answer.")
        await wait_for(pilot, lambda: "The answer." in screen_text(app), what="the answer drawn")
        assert box.title == "Thinking"


async def test_auto_scroll_follows_until_the_user_scrolls_up(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from textual.containers import VerticalScroll

    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], n_ctx=512)
    async with app.run_test(size=SIZE) as pilot:
        transcript = app.query_one("#transcript", VerticalScroll)
        live = AssistantMessage()
        await transcript.mount(live)
        for i in range(60):
            await live.add_answer(f"line {i}\n\n")
        await wait_for(pilot, lambda: "line 59" in screen_text(app), what="the last line drawn")
        assert transcript.max_scroll_y > 0 and transcript.scroll_y == transcript.max_scroll_y
        transcript.scroll_home(animate=False)  # the user scrolls up to read
        await wait_for(pilot, lambda: "line 0" in screen_text(app), what="the top of the answer")
        height = transcript.max_scroll_y
        for i in range(60, 90):
            await live.add_answer(f"line {i}\n\n")
        await wait_for(pilot, lambda: transcript.max_scroll_y > height, what="the longer answer laid out")
        await pilot.pause()  # one more refresh: a scroll that follows the new lines would have happened by now
        assert transcript.scroll_y == 0 and "line 0" in screen_text(app)


async def test_every_action_has_a_key_in_the_footer_and_a_palette_entry(tiny_models: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], n_ctx=512)
    async with app.run_test(size=(200, 36)) as pilot:  # 21 actions with F1's help (F1 lists them at any width)
        await wait_for(pilot, lambda: "palette" in screen_text(app).splitlines()[-1], what="footer")
        palette = {c.callback.__name__ for c in app.get_system_commands(app.screen)}
        footer = screen_text(app).splitlines()[-1]
        for binding in QwenChatApp.BINDINGS:
            if binding.action != "quit":  # Textual's own palette has Quit
                assert f"action_{binding.action}" in palette, binding.action
            assert binding.description in footer, binding.description


async def test_models_screen_verdicts_and_loading_a_downloaded_model(
        tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from textual.widgets import DataTable

    models = tmp_path / "models"
    models.mkdir()
    # a stand-in for a downloaded Qwen3-0.6B: the tiny qwen3 model under the catalog's file name
    shutil.copy(tiny_models["hybrid"], models / "Qwen3-0.6B-Q8_0.gguf")
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(models))
    app = make_app(tmp_path / "chat.db", tiny_models["thinking"], n_ctx=512)
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        assert "CPU · RAM" in status(app)  # where it runs and what it takes
        await pilot.press("f3")
        await wait_for(pilot, lambda: bool(app.screen.query(DataTable)) and
                       app.screen.query_one(DataTable).row_count > 40, what="catalog rows")
        table = app.screen.query_one(DataTable)
        rows = {str(key.value): [str(c) for c in table.get_row(key)] for key in table.rows}
        assert rows["qwen3-235b-a22b:Q4_K_M"][4] == "too big"  # on this 24 GB CPU-only machine
        assert rows["qwen3-0.6b:Q8_0"][0] == "★✓" and rows["qwen3-0.6b:Q8_0"][4] == "CPU only"
        for model_id in {key.split(":")[0] for key in rows}:
            mine = [r for key, r in rows.items() if key.split(":")[0] == model_id]
            stars = sum(r[0].startswith("★") for r in mine)
            runnable = any(r[4] != "too big" for r in mine)
            assert stars == (1 if runnable else 0), model_id  # one pick per model that runs here
        table.move_cursor(row=table.get_row_index("qwen3-0.6b:Q8_0"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Qwen3-0.6B-Q8_0.gguf" in status(app) and "ready" in status(app),
                       what="the chosen model loaded")
        assert "thinking on" in status(app)  # the stand-in has the hybrid template


async def test_starts_and_chats_offline_with_sockets_blocked(tiny_models: dict[str, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from textual.widgets import DataTable

    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], n_ctx=512)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        await type_and_send(pilot, "/no_think")
        await type_and_send(pilot, "hello")
        await wait_for(pilot, lambda: app.chat.transcript.live is None and len(app.query(AssistantMessage)) == 1,
                       what="answer")
        await pilot.press("f3")  # the models screen works offline too
        await wait_for(pilot, lambda: bool(app.screen.query(DataTable)) and
                       app.screen.query_one(DataTable).row_count > 40, what="catalog rows")
    assert attempts == []  # nothing tried to reach the network


async def test_search_jumps_to_the_message(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from qwen_chat.tui.search_screen import HitItem

    db = tmp_path / "chat.db"
    store = Store(db)
    first = store.create_conversation(title="Sea stories")
    store.add_user_message(first.id, "Tell me about lighthouses and [b]storms[/b]")
    answer = store.start_answer(first.id, "m", "", {})
    store.finish_answer(answer.id, "complete", "", "Lighthouse keepers tended the lamp.", True)
    second = store.create_conversation(title="Cooking")
    store.add_user_message(second.id, "crêpes recipe")
    store.close()
    app = make_app(db, tiny_models["hybrid"], n_ctx=512)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.conversation.current is not None
                       and app.conversation.current.title == "Cooking", what="latest open")
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: bool(app.screen.query("#search-input")), what="search screen")
        await pilot.press(*"lamp")
        await wait_for(pilot, lambda: len(app.screen.query(HitItem)) == 1, what="one hit")
        shown = screen_text(app)
        assert "lamp" in shown and "\u2402" not in shown and "\u2403" not in shown  # markers became highlighting
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.conversation.current.title == "Sea stories", what="jump")
        await wait_for(pilot, lambda: bool(app.query(".found")), what="the message marked")
        assert app.query_one(".found", AssistantMessage).message_id == answer.id


async def test_themes_shipped_user_broken_and_saved(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    config = Path(os.environ["QWEN_CHAT_CONFIG_DIR"])
    (config / "themes").mkdir(parents=True)
    (config / "themes" / "mine.toml").write_text('name = "mine"\nprimary = "#ff00aa"\ndark = true\n')
    (config / "themes" / "broken.toml").write_text('name = "broken"\nprimary = \n')
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], n_ctx=512)
    settings = config / "settings.toml"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="the app started")
        assert app.theme == "qwen-dark"
        assert {"qwen-dark", "qwen-light", "mine"} <= set(app.available_themes) and "broken" not in app.available_themes
        assert any("broken.toml was skipped" in n.message for n in app._notifications)
        app.theme = "qwen-light"
        await wait_for(pilot, lambda: settings.is_file() and 'theme = "qwen-light"' in settings.read_text(),
                       what="the theme saved")
    again = make_app(tmp_path / "chat.db", tiny_models["hybrid"], n_ctx=512)
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(again), what="the app started")
        assert again.theme == "qwen-light"


async def test_a_stored_answer_removed_while_it_mounts_does_not_crash_the_app(tiny_models: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    """Ctrl+N right after the start redraws the transcript while the stored answers are still mounting (seen
    in tmux as a NoMatches traceback that ended the app)."""
    from textual.containers import VerticalScroll

    from fake_engine import FakeEngine

    db = tmp_path / "chat.db"
    store = Store(db)
    conversation = store.create_conversation()
    store.add_user_message(conversation.id, "q")
    answer = store.start_answer(conversation.id, "m", "think", {})
    store.finish_answer(answer.id, "complete", "some thought", "the answer", True)
    app = make_app(store, tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        transcript = app.query_one("#transcript", VerticalScroll)
        for _ in range(5):
            app.chat.transcript.show_conversation()  # removes and mounts again without waiting, as a quick Ctrl+N does
        await wait_for(pilot, lambda: "the answer" in screen_text(app), what="the stored answer drawn")
        # the four earlier drawings are pruned after their removal's messages run (later on a loaded machine)
        await wait_for(pilot, lambda: len(transcript.query(AssistantMessage)) == 1, what="one answer left")
        assert app.is_running and "the answer" in screen_text(app)
    store.close()


async def test_a_long_history_opens_with_its_last_messages_and_shows_the_rest_on_request(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """A conversation of 200 turns and one 2-million-character answer opens fast: the last 60 messages drawn,
    the huge one cut for drawing (kept whole for copy and export), the earlier ones one Enter away."""
    import time as clock

    from textual.containers import VerticalScroll

    from qwen_chat.tui.messages import MAX_DRAWN_CHARS, EarlierMessages

    from fake_engine import FakeEngine

    db = tmp_path / "chat.db"
    store = Store(db)
    conversation = store.create_conversation()
    huge = "word " * 400_000
    for turn in range(100):
        store.add_user_message(conversation.id, f"question {turn}")
        answer = store.start_answer(conversation.id, "m", "no_think", {})
        store.finish_answer(answer.id, "complete", "", huge if turn == 99 else f"answer {turn}", True)
    app = make_app(store, tiny_models["none"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        started = clock.monotonic()
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 30, what="the last messages")
        assert clock.monotonic() - started < 20  # generous: it took about 40 s before this change
        transcript = app.query_one("#transcript", VerticalScroll)
        last = app.query(AssistantMessage)[-1]
        assert last.answer_text == huge  # the whole answer is kept (Ctrl+Y copies it)
        note = f"{len(huge) - MAX_DRAWN_CHARS:,} more characters are not drawn"  # only its start is drawn
        await wait_for(pilot, lambda: note in " ".join(screen_text(app).split()), timeout=30, what="the note")
        earlier = transcript.query_one(EarlierMessages)
        assert "140 earlier messages" in str(earlier.render())
        earlier.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.query(AssistantMessage)) == 100, what="all messages")
        assert not transcript.query(EarlierMessages)
    store.close()
