"""The sidebar's list of conversations, newest first.

Sending a message re-reads the list: when its order is unchanged (the usual case, chatting in the newest
conversation) only changed titles are redrawn; it is rebuilt only when the order changed.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Label, ListItem, ListView

from qwen_chat.store.records import Conversation


class ConversationItem(ListItem):
    def __init__(self, conversation: Conversation) -> None:
        super().__init__(Label(Text(conversation.title), markup=False))
        self.conversation_id = conversation.id
        self.title = conversation.title

    def retitle(self, title: str) -> None:
        if title != self.title:
            self.title = title
            self.query_one(Label).update(Text(title))


class ConversationList(ListView):
    def show(self, conversations: list[Conversation], current: int | None) -> None:
        items = [c for c in self.children if isinstance(c, ConversationItem)]
        if [i.conversation_id for i in items] == [c.id for c in conversations]:
            for item, conversation in zip(items, conversations, strict=True):
                item.retitle(conversation.title)
        else:
            self.clear()
            self.extend(ConversationItem(c) for c in conversations)
        for index, conversation in enumerate(conversations):
            if conversation.id == current and self.index != index:
                self.index = index
