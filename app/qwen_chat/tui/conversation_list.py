"""The sidebar's list of conversations, newest first.

Sending a message re-reads the list: when its order is unchanged (the usual case, chatting in the newest
conversation) only changed titles are redrawn; it is rebuilt only when the order changed.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Label, ListItem, ListView

from qwen_chat.store.records import Conversation
from qwen_chat.tui.printable import printable_line

ELSEWHERE_MARK = "◆ "  # open in another window on this database


def _label(title: str, elsewhere: bool) -> Text:
    # a title may come from an imported file: its control characters are drawn, never sent; one line
    text = Text(ELSEWHERE_MARK, style="bold") if elsewhere else Text()
    return text.append(printable_line(title))


class ConversationItem(ListItem):
    def __init__(self, conversation: Conversation, elsewhere: bool = False) -> None:
        super().__init__(Label(_label(conversation.title, elsewhere), markup=False))
        self.conversation_id = conversation.id
        self.title = conversation.title
        self.elsewhere = elsewhere

    def retitle(self, title: str, elsewhere: bool) -> None:
        if (title, elsewhere) != (self.title, self.elsewhere):
            self.title, self.elsewhere = title, elsewhere
            self.query_one(Label).update(_label(title, elsewhere))


class ConversationList(ListView):
    @property
    def listed(self) -> list[int]:
        return [c.conversation_id for c in self.children if isinstance(c, ConversationItem)]

    def mark(self, elsewhere: set[int]) -> None:
        """Mark (◆) the conversations open in another window, unmark the rest; titles stay."""
        for item in self.children:
            if isinstance(item, ConversationItem):
                item.retitle(item.title, item.conversation_id in elsewhere)

    def show(self, conversations: list[Conversation], current: int | None, elsewhere: set[int] | None = None) -> None:
        """`elsewhere`: the conversations another window has open (marked ◆)."""
        elsewhere = elsewhere or set()
        items = [c for c in self.children if isinstance(c, ConversationItem)]
        if [i.conversation_id for i in items] == [c.id for c in conversations]:
            for item, conversation in zip(items, conversations, strict=True):
                item.retitle(conversation.title, conversation.id in elsewhere)
        else:
            self.clear()
            self.extend(ConversationItem(c, c.id in elsewhere) for c in conversations)
        for index, conversation in enumerate(conversations):
            if conversation.id == current and self.index != index:
                self.index = index
