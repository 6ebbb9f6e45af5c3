"""The chat's keys and the command palette's entries: their keys, ids and titles (actions.py says what each
action does). The binding ids are the names settings.toml [keys] rebinds them by."""

from __future__ import annotations

from textual.binding import Binding

BINDINGS: list[Binding | tuple[str, str] | tuple[str, str, str]] = [
    Binding("f1", "help", "Help", id="help"),  # tui/help_screen.py; also /help
    Binding("escape", "stop", "Stop", id="stop"),
    Binding("ctrl+t", "toggle_thinking", "Think", id="toggle-thinking"),
    Binding("ctrl+r", "regenerate", "Redo", id="regenerate"),
    # priority like ctrl+d: with text in the prompt, ctrl+e stays the prompt's "go to end"
    Binding("ctrl+e", "edit_message", "Edit", id="edit-message", priority=True),
    # priority: in the composer ctrl+y would be TextArea's redo; copying the answer is what the key is for here
    Binding("ctrl+y", "copy_message", "Copy", id="copy-message", priority=True),
    Binding("ctrl+n", "new_conversation", "New", id="new-conversation"),
    Binding("f2", "rename_conversation", "Rename", id="rename-conversation"),
    # priority so it works from the prompt; check_action hands ctrl+d back to the prompt while it has text
    Binding("ctrl+d", "delete_conversation", "Del", id="delete-conversation", priority=True),
    Binding("ctrl+b", "toggle_sidebar", "Chats", id="toggle-sidebar"),
    Binding("f3", "models", "Models", id="models"),
    Binding("f4", "downloads", "Downloads", id="downloads"),
    Binding("ctrl+f", "search", "Search", id="search"),
    Binding("f5", "presets", "Preset", id="presets"),
    # priority: in the composer F6 and F7 are TextArea's select line and select all
    Binding("f6", "personas", "Persona", id="personas", priority=True),
    Binding("f7", "context", "Context", id="context", priority=True),
    Binding("f8", "versions", "Versions", id="versions"),
    Binding("f9", "tools", "Tools", id="tools"),  # tui/tool_events.py (with its palette entry); also /tools
    Binding("ctrl+o", "attach_file", "File", id="attach-file"),  # the file picker (sending.py); also /file PATH
    Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
]

# (title, help, action): the palette calls `action_<action>`; the help names the key it is also on
PALETTE: tuple[tuple[str, str, str], ...] = (
    ("Help", "Every key and slash command (F1, /help)", "help"),
    ("Stop generation", "Stop the answer being written (Esc)", "stop"),
    ("Thinking on/off", "Switch thinking for this conversation (Ctrl+T)", "toggle_thinking"),
    ("New conversation", "Start a new chat (Ctrl+N)", "new_conversation"),
    ("Rename conversation", "Rename this chat (F2)", "rename_conversation"),
    ("Delete conversation", "Delete this chat (Ctrl+D)", "delete_conversation"),
    ("Show/hide chats", "Toggle the conversation list (Ctrl+B)", "toggle_sidebar"),
    ("Models", "The Qwen3 catalog with what fits this machine, and the GGUF files on disk (F3)", "models"),
    ("Downloads", "Download progress, pause, resume, cancel (F4)", "downloads"),
    ("Search", "Search all conversations (Ctrl+F)", "search"),
    ("Regenerate", "Answer the last message again; the old answer is kept (Ctrl+R)", "regenerate"),
    ("Edit message", "Edit your selected or last message and resend it (Ctrl+E)", "edit_message"),
    ("Copy", "Copy the selected message or the last answer, or one of its code blocks (Ctrl+Y)", "copy_message"),
    ("Sampling presets", "View and edit the sampling preset in use; turn speculative decoding off or on (F5)",
     "presets"),
    ("Persona", "Choose or save a system prompt for this conversation (F6)", "personas"),
    ("Context size", "Native, 64K/128K with YaRN, or 256K; reloads the model (F7)", "context"),
    ("Earlier versions", "Versions of an edited or regenerated turn (F8)", "versions"),
    ("Attach a file", "Pick or type a text file for your next message (Ctrl+O; also /file PATH)", "attach_file"),
)
