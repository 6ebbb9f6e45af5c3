"""Snapshot tests: the main screens of the TUI, each in both shipped themes (qwen-dark and qwen-light).

Each test saves an SVG screenshot under tests/__snapshots__/test_snapshots/ and fails when the screen
changes. After an intended UI change, regenerate them, look at the changed SVGs, and commit them:

    /work/venv/bin/python -m pytest tests/test_snapshots.py -q -p no:logging --snapshot-update

(outside this checkout: `python -m pytest tests/test_snapshots.py --snapshot-update`). A failing run
writes snapshot_report.html (old and new side by side) in the folder pytest was started from.

Everything shown is fixed: a seeded store with a counting clock, a model path that does not exist (the
same load-failure notice everywhere, no temporary paths), a fixed Machine for the models screen,
fixed download jobs, and the input cursors steady instead of blinking.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TextArea

from qwen_chat.config.settings import save_theme
from qwen_chat.hub.download_queue import Job
from qwen_chat.store.database import Store
from qwen_chat.system.hardware import Device, Machine
from qwen_chat.tui import models_screen
from qwen_chat.tui.app import QwenChatApp
from qwen_chat.tui.messages import AssistantMessage, NoticeLine
from qwen_chat.tui.search_screen import HitItem
from qwen_chat.tui.streaming_markdown import Segment

from helpers import make_app, screen_text, status, wait_for

THEMES = ["qwen-dark", "qwen-light"]
SIZE = (110, 36)  # the terminal the saved snapshots were taken in
GiB = 1 << 30
# Never exists: the app shows the same load-failure notice and status every run, and needs no model.
MODEL = Path("/nonexistent/Qwen3-8B-Q4_K_M.gguf")
# A fixed machine for the models screen (its verdicts depend on RAM and GPU): 32 GB RAM and a 12 GB card.
MACHINE = Machine(
    ram_total=32 * GiB, ram_available=24 * GiB, physical_cores=8, logical_cores=16,
    gpus=(Device("CUDA0", "NVIDIA GeForce RTX 4070", "gpu", 11 * GiB, 12 * GiB, "nvidia"),),
    gpu_offload=True, backend="CUDA0, CPU")

ANSWER = """Use slicing with a step of `-1`:

```python
def reverse(text: str) -> str:
    return text[::-1]
```

It works for any sequence, lists and tuples too."""


def seed(db: Path) -> None:
    """Three conversations; the latest (opened at start) has a question and an answer with thinking."""
    clock = itertools.count(1_700_000_000)
    store = Store(db, clock=lambda: float(next(clock)))
    sea = store.create_conversation(title="Sea stories")
    store.add_user_message(sea.id, "Tell me about lighthouses and storms")
    answer = store.start_answer(sea.id, "Qwen3-8B-Q4_K_M.gguf", "no_think", {})
    store.finish_answer(answer.id, "complete", "", "Lighthouse keepers tended the lamp through every storm.", True)
    cooking = store.create_conversation()
    store.add_user_message(cooking.id, "A crêpes recipe for four people")
    chat = store.create_conversation()
    store.add_user_message(chat.id, "How do I reverse a string in Python?")
    answer = store.start_answer(chat.id, "Qwen3-8B-Q4_K_M.gguf", "think", {})
    store.finish_answer(answer.id, "complete", "The user wants the reversed string. Slicing with step -1 is the "
                        "idiomatic way.", ANSWER, True)
    store.close()


@pytest.fixture
def themed_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], QwenChatApp]]:
    """A QwenChatApp on a seeded store, started in `theme` (saved in settings.toml, as a user would)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "Qwen3-0.6B-Q8_0.gguf").write_bytes(b"")  # shows as downloaded (✓) on the models screen
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(models))
    # The seam for the models screen: it calls `detect()` from its own module namespace.
    monkeypatch.setattr(models_screen, "detect", lambda: MACHINE)
    db = tmp_path / "chat.db"
    seed(db)
    stores: list[Store] = []

    def make(theme: str) -> QwenChatApp:
        save_theme(theme)
        stores.append(Store(db))
        return make_app(stores[-1], MODEL, n_ctx=4096)

    yield make
    for store in stores:
        store.close()


async def steady_cursors(pilot: Pilot) -> None:
    """A blinking cursor would make the screenshot depend on timing: show it steadily instead."""
    for box in [*pilot.app.screen.query(Input), *pilot.app.screen.query(TextArea)]:
        box.cursor_blink = False
    await pilot.pause()


async def chat_ready(pilot: Pilot) -> None:
    """The transcript is on screen (its Markdown parsed) and the load-failure notice has arrived (it comes last)."""
    app = pilot.app
    assert isinstance(app, QwenChatApp)
    await wait_for(pilot, lambda: "load failed" in status(app) and bool(app.query(NoticeLine))
                   and any(s._lines for m in app.query(AssistantMessage) for s in m.query(Segment)),
                   what="the transcript and the load-failure notice")


def then(*steps: Callable[[Pilot], Awaitable[None]]) -> Callable[[Pilot], Awaitable[None]]:
    async def run(pilot: Pilot) -> None:
        for step in steps:
            await step(pilot)
        await steady_cursors(pilot)

    return run


@pytest.mark.parametrize("theme", THEMES)
def test_chat_screen(snap_compare, themed_app, theme: str) -> None:
    """Sidebar with three chats; user message, answer with collapsed thinking and a code block; notice; status."""
    app = themed_app(theme)
    assert snap_compare(app, terminal_size=SIZE, run_before=then(chat_ready))
    assert app.theme == theme


@pytest.mark.parametrize("theme", THEMES)
def test_models_screen(snap_compare, themed_app, theme: str) -> None:
    """F3: the catalog with the verdicts for a fixed machine (32 GB RAM, a 12 GB NVIDIA card)."""

    async def models(pilot: Pilot) -> None:
        await pilot.press("f3")
        await wait_for(pilot, lambda: bool(pilot.app.screen.query("#models-table"))
                       and pilot.app.screen.query_one(DataTable).row_count > 40, what="the catalog rows")
        # the table sizes its columns on a later refresh than the one that adds rows (seen once in CI: the
        # first rows drawn with the narrow widths): wait until every column is as wide as its widest cell
        table = pilot.app.screen.query_one(DataTable)
        await wait_for(pilot, lambda: all(c.content_width >= max((len(str(v)) for v in table.get_column(c.key)),
                                                                  default=0) for c in table.columns.values()),
                       what="the columns sized")
        # and until the screen shows it: the cursor row was once still drawn with the old widths
        await wait_for(pilot, lambda: "qwen3-0.6b" in pilot.app.export_screenshot(), what="the first row redrawn")
        # the draft line under the table comes from a worker thread (it may read GGUF headers)
        await wait_for(pilot, lambda: "4B and up" in screen_text(pilot.app), what="the first row's draft line")

    app = themed_app(theme)
    assert snap_compare(app, terminal_size=(130, 40), run_before=then(chat_ready, models))


@dataclass
class FixedQueue:
    """Stands in for the app's DownloadQueue: the jobs the downloads screen shows, no network, no thread."""

    fixed: list[Job]

    def jobs(self) -> list[Job]:
        return list(self.fixed)

    def add(self, ref: str) -> Job:
        raise AssertionError("no download is started in the snapshot tests")

    def pause(self, job_id: int) -> None: ...

    def resume(self, job_id: int) -> None: ...

    def cancel(self, job_id: int) -> None: ...

    def close(self) -> None: ...


JOBS = [
    Job(1, "qwen3-8b:Q4_K_M", "downloading", "Qwen3-8B-Q4_K_M.gguf", done=2_100_000_000, total=5_030_000_000,
        speed=12_500_000.0, file_done=2_100_000_000, file_total=5_030_000_000),
    Job(2, "qwen3-14b:Q4_K_M", "queued"),
    Job(3, "qwen3-4b:Q8_0", "paused", "Qwen3-4B-Q8_0.gguf", done=1_000_000_000, total=4_280_000_000,
        file_done=1_000_000_000, file_total=4_280_000_000),
    Job(4, "qwen3-0.6b:Q8_0", "done", "Qwen3-0.6B-Q8_0.gguf", done=639_000_000, total=639_000_000,
        message="downloaded and verified"),
]


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("jobs", [[], JOBS], ids=["empty", "jobs"])
def test_downloads_screen(snap_compare, themed_app, theme: str, jobs: list[Job]) -> None:
    """F4: the download manager, empty and with one job in each of four states."""
    app = themed_app(theme)
    app.downloads.close()  # the real queue's worker thread is not needed
    app.downloads = FixedQueue(jobs)  # type: ignore[assignment]

    async def downloads(pilot: Pilot) -> None:
        await pilot.press("f4")
        await wait_for(pilot, lambda: bool(pilot.app.screen.query("#downloads-table"))
                       and len(pilot.app.screen.query_one(DataTable).columns) == 7
                       and pilot.app.screen.query_one(DataTable).row_count == len(jobs), what="the downloads table")

    assert snap_compare(app, terminal_size=SIZE, run_before=then(chat_ready, downloads))


@pytest.mark.parametrize("theme", THEMES)
def test_search_screen(snap_compare, themed_app, theme: str) -> None:
    """Ctrl+F with "lamp" typed: one hit, the match highlighted."""

    async def search(pilot: Pilot) -> None:
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: bool(pilot.app.screen.query("#search-input")), what="the search screen")
        await pilot.press(*"lamp")
        await wait_for(pilot, lambda: len(pilot.app.screen.query(HitItem)) == 1, what="one hit")

    app = themed_app(theme)
    assert snap_compare(app, terminal_size=SIZE, run_before=then(chat_ready, search))


@pytest.mark.parametrize("theme", THEMES)
def test_rename_dialog(snap_compare, themed_app, theme: str) -> None:
    """F2: the rename dialog over the chat, with the current title in the box."""

    async def rename(pilot: Pilot) -> None:
        await pilot.press("f2")
        await wait_for(pilot, lambda: bool(pilot.app.screen.query("#new-title"))
                       and pilot.app.focused is pilot.app.screen.query_one("#new-title"), what="the rename dialog")

    app = themed_app(theme)
    assert snap_compare(app, terminal_size=SIZE, run_before=then(chat_ready, rename))


@pytest.mark.parametrize("theme", THEMES)
def test_presets_screen(snap_compare, themed_app, theme: str) -> None:
    """F5: the sampling preset in use (Qwen's instruct-2507, as no model is loaded), each field with its range."""
    from qwen_chat.tui.presets_screen import PresetsScreen

    async def presets(pilot: Pilot) -> None:
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, PresetsScreen)
                       and len(pilot.app.screen.query(Input)) >= 6, what="the presets screen")

    app = themed_app(theme)
    assert snap_compare(app, terminal_size=SIZE, run_before=then(chat_ready, presets))


@pytest.mark.parametrize("theme", THEMES)
def test_personas_screen(snap_compare, themed_app, theme: str) -> None:
    """F6: the saved personas, "no persona" marked as the one in use."""
    from textual.widgets import OptionList

    from qwen_chat.tui.conversation_screens import PersonasScreen

    app = themed_app(theme)
    app.session.store.save_persona("Reviewer", "You review Python code for bugs first, style second.")
    app.session.store.save_persona("Terse", "Answer in at most five words.")

    async def personas(pilot: Pilot) -> None:
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, PersonasScreen)
                       and pilot.app.screen.query_one(OptionList).option_count == 3, what="the personas list")

    assert snap_compare(app, terminal_size=SIZE, run_before=then(chat_ready, personas))
