"""Streamed Markdown and thinking in the real Textual app: each batch costs the same however long the answer
is (nothing is parsed from the start again), thinking costs nothing while it is collapsed, and what streamed
looks the same as the stored answer drawn anew."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll

from qwen_chat.engines.protocol import Token
from qwen_chat.qwen3.thinking import Part, StreamText
from qwen_chat.session.events import AnswerSaved, AnswerStarted
from qwen_chat.store.database import Store
from qwen_chat.tui import streaming_markdown
from qwen_chat.tui.messages import AssistantMessage
from qwen_chat.tui.segments import SEGMENT_CHARS
from qwen_chat.tui.streaming_markdown import MERGE_EVERY, StreamingMarkdown

from helpers import SIZE, make_app, status, wait_for
from markdown_samples import CODE, LIST, PROSE, TABLE

LONGEST_BLOCK = 450  # a segment ends at a block boundary: it may run on past SEGMENT_CHARS to the end of one


class Host(App[None]):
    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="transcript")


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Markdown source the widgets parse, in order."""
    seen: list[str] = []
    real = streaming_markdown.ChatMarkdown

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, source: str, **options: object) -> None:
            seen.append(source)
            super().__init__(source, **options)

    monkeypatch.setattr(streaming_markdown, "ChatMarkdown", Counting)
    return seen


async def stream(pilot, message: AssistantMessage, text: str, part: Part = Part.ANSWER, chunk: int = 7) -> None:
    for at in range(0, len(text), chunk):
        if part is Part.ANSWER:
            await message.add_answer(text[at:at + chunk])
        else:
            message.add_thinking(text[at:at + chunk])
        if at % (chunk * 12) == 0:
            await pilot.pause()  # a frame now and then, as the app's pacing gives


def lines_of(widget: StreamingMarkdown) -> list[str]:
    return [strip.text.rstrip() for strip in widget.drawn_lines()]


@pytest.mark.parametrize("text", [LIST, CODE, TABLE, PROSE], ids=["list", "code", "table", "prose"])
async def test_no_batch_parses_the_answer_from_the_start(text: str, parses: list[str]) -> None:
    app = Host()
    async with app.run_test(size=(100, 40)) as pilot:
        live = AssistantMessage()
        await app.query_one("#transcript").mount(live)
        await stream(pilot, live, text)
        await pilot.pause()
        assert live.answer_text == text
        longest = max(len(source) for source in parses)
        assert longest <= SEGMENT_CHARS + LONGEST_BLOCK, longest  # only the live segment is ever parsed again
        assert len(live.query_one(".answer").children) > 1  # cut into segments
        before = len(parses)
        await stream(pilot, live, "\n\nOne more paragraph at the end.\n")
        await pilot.pause()
        assert 0 < len(parses) - before <= 6  # the new text's segment, not the answer again


async def test_a_long_answer_keeps_few_widgets(tmp_path: Path) -> None:
    """Textual walks every widget on each layout: 5,000 list items must not become 500 widgets."""
    text = "".join(f"{i}. Fruit number {i}\n" for i in range(1, 5001))
    app = Host()
    async with app.run_test(size=(100, 40)) as pilot:
        live = AssistantMessage()
        await app.query_one("#transcript").mount(live)
        await stream(pilot, live, text, chunk=200)
        answer = live.query_one(".answer", StreamingMarkdown)
        await wait_for(pilot, lambda: answer.settled, what="drawn")
        await pilot.pause()
        assert len(answer.children) <= 2 * MERGE_EVERY
        numbers = [line.split()[0] for line in lines_of(answer) if line.strip()]
        assert numbers == [str(i) for i in range(1, 5001)]  # every item once, in order, after the merges


async def test_collapsed_thinking_is_not_drawn_and_open_thinking_streams(parses: list[str]) -> None:
    app = Host()
    async with app.run_test(size=(100, 40)) as pilot:
        live = AssistantMessage()
        await app.query_one("#transcript").mount(live)
        thought = PROSE * 8  # about 150 KB, 40,000 tokens: as long as a Thinking-2507 model thinks
        await stream(pilot, live, thought, Part.THINKING, chunk=400)
        await pilot.pause()
        assert live.thinking_text == thought
        assert not any("dragon" in source for source in parses)  # collapsed: nothing parsed or drawn
        live.query_one(".thinking").collapsed = False
        thinking = live.query_one(".thinking-text", StreamingMarkdown)
        await wait_for(pilot, lambda: thinking.settled and len(thinking.drawn_lines()) > 200, what="thinking drawn")
        await pilot.pause()
        opened = len(parses)
        assert opened > 0 and max(len(s) for s in parses) <= SEGMENT_CHARS + LONGEST_BLOCK
        await stream(pilot, live, "Then one more thought about the oven.\n\n", Part.THINKING)
        await pilot.pause()
        assert all(len(s) <= SEGMENT_CHARS + LONGEST_BLOCK for s in parses[opened:])
        assert "one more thought about the oven" in " ".join(lines_of(live.query_one(".thinking-text")))  # wrapped


@pytest.mark.parametrize("text", [LIST, CODE, TABLE, PROSE], ids=["list", "code", "table", "prose"])
async def test_a_streamed_answer_looks_like_the_stored_one(text: str, tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    conversation = store.create_conversation()
    store.add_user_message(conversation.id, "q")
    answer = store.start_answer(conversation.id, "m", "no_think", {})
    store.finish_answer(answer.id, "complete", "", text, True)
    app = Host()
    async with app.run_test(size=(100, 40)) as pilot:
        live = AssistantMessage()
        await app.query_one("#transcript").mount(live)
        await stream(pilot, live, text)
        await live.finish(store.message(answer.id))
        reopened = AssistantMessage(store.message(answer.id))
        await app.query_one("#transcript").mount(reopened)
        await wait_for(pilot, lambda: all(w.settled for w in app.query(StreamingMarkdown)), what="drawn")
        await pilot.pause()
        streamed, stored = lines_of(live.query_one(".answer")), lines_of(reopened.query_one(".answer"))
        assert streamed == stored and len(stored) > 20


async def test_a_burst_of_tokens_is_drawn_in_few_frames(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """50,000 tokens arrive at once (a fast GPU, or a UI that fell behind): they are coalesced into a few
    renders, none is lost, and the inbox is empty afterwards."""
    db = tmp_path / "chat.db"
    store = Store(db)
    conversation = store.create_conversation()
    store.add_user_message(conversation.id, "q")
    message = store.start_answer(conversation.id, "m", "think", {})
    app = make_app(db, tiny_models["hybrid"], n_ctx=512)
    renders = [0]
    async with app.run_test(size=SIZE) as pilot:
        real_render = app.chat.transcript.pacer.draw_tokens

        async def counted() -> None:
            renders[0] += 1
            await real_render()

        app.chat.transcript.pacer.draw_tokens = counted  # type: ignore[method-assign]
        await wait_for(pilot, lambda: "ready" in status(app), what="load")
        app.inbox.put(AnswerStarted(message))
        await wait_for(pilot, lambda: app.chat.transcript.live is not None, what="answer started")
        before, text = renders[0], StreamText()

        def engine() -> None:
            for i in range(50_000):
                piece = f"w{i} " if i % 50 else f"w{i}\n\n"
                text.append(Part.THINKING, piece)
                app.inbox.put(Token(message.id, Part.THINKING, piece, i, stream=text))

        thread = threading.Thread(target=engine)
        thread.start()
        thread.join()
        await wait_for(pilot, lambda: not app.inbox.waiting, what="inbox drained")
        assert gc.get_freeze_count() > 0  # full collections held while the answer streams (gc_pause.py)
        assert renders[0] - before < 60  # not one render per token: batches grew while rendering
        assert app.chat.transcript.live.thinking_text == text.thinking  # the engine's own text, not a copy
        assert "Thinking… 49,999 tokens" in str(app.chat.transcript.live.query_one(".thinking").title)
        store.finish_answer(message.id, "stopped", text.thinking, "", False)
        app.inbox.put(AnswerSaved(store.message(message.id), None))
        await wait_for(pilot, lambda: app.chat.transcript.live is None, what="answer saved")
        await wait_for(pilot, lambda: gc.get_freeze_count() == 0, what="collections released when idle")
