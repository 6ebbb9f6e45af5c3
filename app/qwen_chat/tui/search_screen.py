"""Search every conversation as you type; Enter opens the conversation at that message."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, ListItem, ListView

from qwen_chat.session.conversation import MARK_END, MARK_START, SearchHit
from qwen_chat.store.records import StoreError
from qwen_chat.tui.printable import printable, printable_line


def highlighted(snippet: str) -> Text:
    """The snippet as plain text with the matches in reverse video: model text is never markup."""
    text = Text()
    marked = False
    flat = " ".join(snippet.split())  # newlines and runs of spaces: one line per hit
    for piece in flat.replace(MARK_END, MARK_START).split(MARK_START):
        text.append(printable(piece), style="reverse" if marked else "")  # markers first, then controls
        marked = not marked
    return text


class HitItem(ListItem):
    def __init__(self, hit: SearchHit) -> None:
        line = Text(f"{printable_line(hit.title)[:30]:30} ", style="bold") + Text(f"{hit.role:9} ", style="dim")
        super().__init__(Label(line + highlighted(hit.snippet), markup=False))
        self.hit = hit


class SearchScreen(ModalScreen[SearchHit | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close"), Binding("down", "focus_results", "Results", show=False)]

    def __init__(self, search: Callable[[str], list[SearchHit]]) -> None:
        super().__init__()
        self.search = search

    def compose(self) -> ComposeResult:
        with Vertical(classes="models-dialog"):
            yield Label("Search all conversations (Enter opens, Esc closes)", markup=False)
            yield Input(placeholder="words…", id="search-input")
            yield ListView(id="search-results")

    @on(Input.Changed, "#search-input")
    def _changed(self, event: Input.Changed) -> None:
        self._search(event.value)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _search(self, text: str) -> None:
        try:
            hits = self.search(text)
        except StoreError as exc:
            self.app.call_from_thread(self.app.notify, printable(str(exc)), severity="error", markup=False)
            return
        self.app.call_from_thread(self._show, text, hits)

    def _show(self, text: str, hits: list[SearchHit]) -> None:
        if self.query_one("#search-input", Input).value != text:
            return  # an older search finished after a newer one
        results = self.query_one("#search-results", ListView)
        results.clear()
        results.extend(HitItem(hit) for hit in hits)

    @on(Input.Submitted, "#search-input")
    def _first(self) -> None:
        results = self.query_one("#search-results", ListView)
        if results.children:
            item = results.children[0]
            if isinstance(item, HitItem):
                self.dismiss(item.hit)

    @on(ListView.Selected, "#search-results")
    def _chosen(self, event: ListView.Selected) -> None:
        if isinstance(event.item, HitItem):
            self.dismiss(event.item.hit)

    def action_focus_results(self) -> None:
        self.query_one("#search-results", ListView).focus()
