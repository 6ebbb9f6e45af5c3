"""The tools panel (F9, /tools): the MCP servers with their state and tools, each on or off for this
conversation, a Restart for a server that is down, and the standing approvals of settings.toml with a Revoke each.
mcp.json is read again when the panel opens and on `r`: new servers connect, removed ones stop, changed ones
restart, the others stay connected (tools/mcp_hub.py's reload).

Server names, tool names and descriptions come from mcp.json and the servers: drawn as text, never as markup.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalGroup, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Footer, Label, Static

from qwen_chat.config.tool_settings import remove_rule, rules
from qwen_chat.session.tool_loop import ToolBox
from qwen_chat.store.records import StoreError
from qwen_chat.system.paths import config_dir
from qwen_chat.tui.printable import printable_line

if TYPE_CHECKING:
    from qwen_chat.config.mcp_config import ServerEntry
    from qwen_chat.tools.mcp_hub import Reloaded
    from qwen_chat.tools.mcp_results import ServerState, ToolSpec

POLL_EVERY = 0.5  # seconds between looks at the servers' states (a server connecting, going down)


class ToolsOffBook(Protocol):
    """Where a conversation's switched-off tools are kept (session/conversation.py's OpenConversation)."""

    def tools_off(self, conversation_id: int) -> tuple[str, ...]: ...

    def set_tools_off(self, conversation_id: int, names: tuple[str, ...]) -> None: ...


@runtime_checkable
class ServerBox(Protocol):
    """What the panel reads of the tools layer beyond a ToolBox (tools.mcp_hub.McpHub has it)."""

    def states(self) -> list[ServerState]: ...
    def restart(self, name: str) -> None: ...


@runtime_checkable
class ReloadableBox(Protocol):
    """A tools layer that can take a re-read mcp.json (tools.mcp_hub.McpHub)."""

    def reload(self, entries: list[ServerEntry]) -> Reloaded: ...


def how_to_add(reloadable: bool = True) -> str:
    then = "then press r here (or open this panel again)" if reloadable else "then start qwen-chat again"
    return ("No MCP tool servers are set up. Add one from a shell:\n\n"
            "    qwen-chat mcp add NAME -- COMMAND [ARGS...]\n\n"
            f"or write mcp.json in {config_dir()} (the \"mcpServers\" format of Claude Desktop, Cursor and "
            f"LM Studio works as is), {then}.")


def reload_summary(done: Reloaded) -> str:
    """"mcp.json reloaded: added a, b; restarted c; removed d" ("" when nothing changed)."""
    parts = [f"{verb} {', '.join(printable_line(name) for name in names)}"
             for verb, names in (("added", done.added), ("restarted", done.changed), ("removed", done.removed))
             if names]
    return f"mcp.json reloaded: {'; '.join(parts)}." if parts else ""


def server_states(box: ToolBox | None) -> list[ServerState]:
    """The servers and their tools: the hub's states, or for a plain ToolBox its tools grouped by server."""
    from qwen_chat.tools.mcp_results import ServerState

    if box is None:
        return []
    if isinstance(box, ServerBox):
        return box.states()
    grouped: dict[str, list[ToolSpec]] = {}
    for spec in box.tools():
        grouped.setdefault(spec.server, []).append(spec)
    return [ServerState(name, "up", None, tuple(specs)) for name, specs in grouped.items()]


def _status(state: ServerState) -> Text:
    if state.status == "up":
        count = len(state.tools)
        return Text(f"up · {count} tool{'' if count == 1 else 's'}", style="green")
    if state.status == "down":
        return Text("down" + (f": {printable_line(state.error)}" if state.error else ""), style="red")
    if state.status == "disabled":
        return Text("disabled in mcp.json", style="dim")
    return Text("connecting…", style="yellow")


class ToolSwitch(Checkbox):
    """On or off for this conversation: a whole server (`tool` None) or one tool of it."""

    def __init__(self, server: str, tool: str | None, label: Text, value: bool, disabled: bool = False) -> None:
        super().__init__(label, value, disabled=disabled, compact=True)
        self.server, self.tool = server, tool
        self.key = server if tool is None else f"{server}/{tool}"  # as Conversation.tools_off names it


class RestartButton(Button):
    def __init__(self, server: str) -> None:
        super().__init__("Restart", compact=True, variant="warning")
        self.server = server
        self.key = f"restart:{server}"


class RevokeButton(Button):
    def __init__(self, rule: str) -> None:
        super().__init__("Revoke", compact=True, variant="error")
        self.rule = rule
        self.key = f"revoke:{rule}"


class ToolsScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close"), Binding("r", "reload", "Reload mcp.json")]
    DEFAULT_CSS = """
    #tools-list { height: 1fr; }
    #tools-list HorizontalGroup { height: auto; }
    #tools-list .server-row { margin: 1 0 0 0; }
    #tools-list .server-status { width: 1fr; padding: 0 1; }
    #tools-list .tool-switch { margin: 0 0 0 4; }
    #tools-list .section { margin: 1 0 0 0; text-style: bold; }
    #tools-list .hint { color: $text-muted; }
    """

    def __init__(self, box: ToolBox | None, book: ToolsOffBook, conversation_id: int) -> None:
        super().__init__()
        self.box, self.book, self.conversation_id = box, book, conversation_id
        self._shown: tuple[list[ServerState], list[str]] | None = None
        self._drawing = asyncio.Lock()  # the poll and a click may both redraw: one at a time

    def compose(self) -> ComposeResult:
        with Vertical(classes="models-dialog"):
            yield Label("Tools for this chat · Space: on/off · Tab moves · r reloads mcp.json", markup=False)
            yield VerticalScroll(id="tools-list")
        yield Footer()

    async def on_mount(self) -> None:
        self.reload_config(quiet=True)
        await self._refresh()
        self.set_interval(POLL_EVERY, self._refresh)

    def reload_config(self, quiet: bool = False) -> None:
        """mcp.json read again into the hub; what changed is said (`quiet`: nothing when nothing changed). A
        file that cannot be read at all leaves the servers running as they are."""
        from qwen_chat.config.mcp_config import load_servers

        if not isinstance(self.box, ReloadableBox):
            if not quiet:
                self.notify("These tools cannot be reloaded here: start qwen-chat again for mcp.json's changes.",
                            severity="warning")
            return
        entries, problems = load_servers()
        for problem in problems:
            self.notify(problem, severity="warning", timeout=10)
        if problems and not entries:
            return
        said = reload_summary(self.box.reload(entries))
        if said or not quiet:
            self.notify(said or "mcp.json reloaded: no changes.", timeout=5)

    async def action_reload(self) -> None:
        self.reload_config()
        await self._refresh(force=True)

    async def _refresh(self, force: bool = False) -> None:
        """Draw the panel again when the servers or the rules changed, keeping the focus where it was."""
        async with self._drawing:
            shown = (server_states(self.box), rules())
            if shown == self._shown and not force:
                return
            self._shown = shown
            try:
                off = self.book.tools_off(self.conversation_id)
            except StoreError as exc:
                self.notify(str(exc), severity="error")
                return
            await self._draw(shown, off)

    async def _draw(self, shown: tuple[list[ServerState], list[str]], off: tuple[str, ...]) -> None:
        focused = getattr(self.focused, "key", None)
        panel = self.query_one("#tools-list", VerticalScroll)
        await panel.remove_children()
        await panel.mount_all(self._rows(*shown, off))
        again = next((w for w in panel.query("*") if focused is not None and getattr(w, "key", None) == focused), None)
        if again is not None:
            again.focus()
        elif focused is None:
            self.focus_next()

    def _rows(self, states: list[ServerState], standing: list[str], off: tuple[str, ...]) -> list[Widget]:
        rows: list[Widget] = []
        if not states:
            rows.append(Static(Text(how_to_add(isinstance(self.box, ReloadableBox))), markup=False))
        for state in states:
            on = state.name not in off
            head: list[Widget] = [ToolSwitch(state.name, None, Text(printable_line(state.name), style="bold"), on),
                                  Static(_status(state), classes="server-status", markup=False)]
            if state.status == "down":
                head.append(RestartButton(state.name))
            rows.append(HorizontalGroup(*head, classes="server-row"))
            for spec in state.tools:
                label = Text(printable_line(spec.name), style="bold")
                about = spec.description.strip().split("\n")[0] if spec.description.strip() else ""
                if about:
                    label.append(f" — {printable_line(about[:100])}", style="dim")
                own = f"{state.name}/{spec.name}" not in off  # kept while its server is off
                switch = ToolSwitch(state.name, spec.name, label, own, disabled=not on)
                switch.add_class("tool-switch")
                rows.append(switch)
        rows.append(Static(Text("Always allowed (settings.toml [tools]): these run without asking"),
                           classes="section", markup=False))
        if not standing:
            rows.append(Static(Text("None yet: “Always allow” in an approval prompt adds one here."),
                               classes="hint", markup=False))
        for rule in standing:
            kind = "every tool of the server" if "/" not in rule else "the tool"
            rows.append(HorizontalGroup(RevokeButton(rule), Static(Text(f"{kind} {printable_line(rule)}"),
                                                                   classes="server-status", markup=False)))
        return rows

    @on(Checkbox.Changed)
    async def _switched(self, event: Checkbox.Changed) -> None:
        switch = event.checkbox
        if not isinstance(switch, ToolSwitch):
            return
        try:
            before = set(self.book.tools_off(self.conversation_id))
            off = set(before)
            (off.discard if event.value else off.add)(switch.key)
            if off != before:
                self.book.set_tools_off(self.conversation_id, tuple(off))
        except StoreError as exc:
            self.notify(str(exc), severity="error")
        if switch.tool is None:  # a server's tools follow it
            await self._refresh(force=True)

    @on(Button.Pressed)
    async def _pressed(self, event: Button.Pressed) -> None:
        button = event.button
        if isinstance(button, RestartButton) and isinstance(self.box, ServerBox):
            self.box.restart(button.server)
            self.notify(f"Restarting {printable_line(button.server)}…", timeout=3)
        elif isinstance(button, RevokeButton):
            try:
                remove_rule(button.rule)
            except OSError as exc:
                self.notify(f"The rule could not be removed: {exc}", severity="error")
                return
            self.notify(f"Revoked: {printable_line(button.rule)} asks again from now on.", timeout=4)
        await self._refresh(force=True)
