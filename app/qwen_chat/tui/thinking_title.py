"""The title line of a message's thinking: ▶ or ▼, "Thinking…", the token count while it streams.

It is not a `Collapsible`: the thinking text is its sibling in the message, shown or hidden on `Changed`. A
Collapsible puts two more containers of automatic height between the transcript and the streaming text, and
Textual measures every such container again on each redraw: opened thinking cost twice the frame time of an
answer of the same length (`bench/long_answer_frames.py`: longest frame 35 ms at 40,000 tokens, 17-20 ms after).
"""

from __future__ import annotations

from textual import on
from textual.content import Content
from textual.message import Message
from textual.widgets.collapsible import CollapsibleTitle


class ThinkingTitle(CollapsibleTitle):
    """Click or Enter toggles; `collapsed` and `title` can be set as on a Collapsible."""

    class Changed(Message):
        """Opened or closed (by the user or by code): the message shows or hides the text."""

        def __init__(self, collapsed: bool) -> None:
            super().__init__()
            self.collapsed = collapsed

    def __init__(self) -> None:
        super().__init__(label="Thinking", collapsed_symbol="▶", expanded_symbol="▼", collapsed=True)
        self.add_class("thinking")

    @property
    def title(self) -> str:
        return Content.from_text(self.label).plain

    @title.setter
    def title(self, value: str) -> None:
        if value != self.title:  # the label is redrawn (and laid out) only when it changes
            self.label = value

    @on(CollapsibleTitle.Toggle)
    def _toggle(self, event: CollapsibleTitle.Toggle) -> None:
        event.stop()
        self.collapsed = not self.collapsed

    def watch_collapsed(self, collapsed: bool) -> None:
        self.post_message(self.Changed(collapsed))
