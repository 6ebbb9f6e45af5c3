"""The widgets of a stored conversation, as the transcript shows it when it is opened."""

from __future__ import annotations

from textual.widget import Widget

from qwen_chat.store.database import Store
from qwen_chat.store.records import Conversation
from qwen_chat.tui.messages import AssistantMessage, EarlierMessages, NoticeLine, TrimMarker, UserMessage

RECENT = 60  # messages drawn when a conversation opens; the older ones wait behind EarlierMessages


def transcript_widgets(store: Store, conversation: Conversation, n_ctx: int, everything: bool = False) \
        -> list[Widget]:
    """Its system prompt (the model reads it first: show what it is), its last RECENT messages (all of them with
    `everything`) with their version counts, and where the context starts when the last answer could not see the
    oldest turns."""
    widgets: list[Widget] = []
    if conversation.system_prompt:
        first = conversation.system_prompt.strip().splitlines()[0]
        widgets.append(NoticeLine(f"System prompt (F6): {first[:100]}{'…' if len(first) > 100 else ''}"))
    messages = store.messages(conversation.id)
    versions = store.versions_by_message(conversation.id)
    trimmed = next((m for m in reversed(messages) if m.role == "assistant" and m.context_from_id), None)
    hidden = 0 if everything else max(0, len(messages) - RECENT)
    if hidden:
        widgets.append(EarlierMessages(hidden))
    for message in messages[hidden:]:
        if trimmed is not None and message.id == trimmed.context_from_id:
            widgets.append(TrimMarker(sum(1 for m in messages if m.role == "user" and m.id < message.id), n_ctx))
        if message.role == "user":
            widgets.append(UserMessage(message.content, message.id, versions.get(message.id, 1), message.attachments))
        elif message.role == "assistant":
            widgets.append(AssistantMessage(message, versions.get(message.id, 1)))
    return widgets
