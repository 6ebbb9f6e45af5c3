"""The open conversation: the one owner of what a window shows, with no UI in it.

It opens a conversation (and claims it: another window that has it open answers there, store/presence.py), reads
its history once and keeps it current: the session's own writes arrive as events (`user_saved`, `rewound`,
`answer_started`, `answer_saved`), what other windows commit is seen when SQLite's data_version moves
(`changed_elsewhere`). Renaming, the persona, the personas kept, the tools switched off, deleting and the
thinking rule go through it too, so the UI asks here and never touches the store itself.
"""

from __future__ import annotations

import contextlib

from qwen_chat.qwen3.template import Variant, effective_thinking, last_soft_switch
from qwen_chat.session.chat import ChatSession
from qwen_chat.store.database import MARK_END, MARK_START, SearchHit
from qwen_chat.store.presence import Presence
from qwen_chat.store.records import Conversation, Message, Persona, StoreError

__all__ = ["MARK_END", "MARK_START", "OpenConversation", "SearchHit"]


class OpenConversation:
    """The conversation a window has open (None before the first is opened), its active messages, oldest first,
    and the version counts of those that have earlier versions."""

    def __init__(self, session: ChatSession) -> None:
        self.session = session
        self.store = session.store
        self.presence = Presence(self.store.path)  # which conversations other windows have open
        self.current: Conversation | None = None
        self.messages: list[Message] = []
        self.versions: dict[int, int] = {}
        self._data_version = -1

    # -- opening --

    def first(self) -> Conversation | None:
        """The latest conversation, unless another window has it open: then a new one (None)."""
        latest = self.store.latest_conversation()
        return latest if latest is not None and not self.presence.open_elsewhere(latest.id) else None

    def mark_version(self) -> None:
        """Taken before the list is first read, so the first look sees whatever another window changed since (if
        it cannot be read now, the first look refreshes the list anyway)."""
        with contextlib.suppress(StoreError):
            self._data_version = self.store.data_version()

    def open(self, conversation: Conversation | None) -> bool:
        """Make `conversation` (a new one for None) the open one and read its history; False when another
        window has it open (it can be read here, not answered)."""
        if conversation is None:
            conversation = self.session.new_conversation()
        if self.current is not None and self.current.id != conversation.id:
            self.presence.release(self.current.id)
        self.current = conversation
        self.reload()
        return self.presence.claim(conversation.id)

    def open_id(self, conversation_id: int) -> bool:
        """`open` by id; raises StoreError when it no longer exists."""
        return self.open(self.store.conversation(conversation_id))

    def is_open(self, conversation_id: int) -> bool:
        return self.current is not None and self.current.id == conversation_id

    def claim(self) -> bool:
        """Whether this window may answer in it (another window that has it open answers there)."""
        return self.current is None or self.presence.claim(self.current.id)

    def held_elsewhere(self, conversation_ids: list[int]) -> set[int]:
        return self.presence.held_elsewhere(conversation_ids)

    def conversations(self) -> tuple[list[Conversation], set[int]]:
        """Every conversation, newest first, and those other windows have open."""
        listed = self.store.conversations()
        return listed, self.presence.held_elsewhere(c.id for c in listed)

    def close(self) -> None:
        self.presence.close()

    def recovered(self) -> int:
        """How many answers the last run left cut off (marked interrupted when the store opened)."""
        return self.store.recovered

    # -- reading --

    def reload(self) -> None:
        """The conversation and its history, read again (opening it; another window changed it)."""
        if self.current is None:
            return
        self.current = self.store.conversation(self.current.id)
        self.messages = self.store.messages(self.current.id)
        self.versions = self.store.versions_by_message(self.current.id)

    def refresh_record(self) -> None:
        """The conversation's own row again (its title, mode or tools changed); the history stays."""
        if self.current is not None:
            self.current = self.store.conversation(self.current.id)

    def changed_elsewhere(self) -> bool | None:
        """Whether another window committed something since the last look (None: the database cannot be read)."""
        try:
            version = self.store.data_version()
        except StoreError:
            return None
        if version == self._data_version:
            return False
        self._data_version = version
        return True

    def prompts(self) -> list[str]:
        """This conversation's questions, oldest first (Up and Down in the composer walk them)."""
        return [m.content for m in self.messages if m.role == "user"]

    def earlier_versions(self, message_id: int) -> tuple[list[list[Message]], list[Message]]:
        """The earlier versions of a message, and the active messages from it on (F8)."""
        return self.store.earlier_versions(message_id), [m for m in self.messages if m.id >= message_id]

    def newest_versioned(self) -> int | None:
        return max(self.versions, default=None)

    def search(self, text: str) -> list[SearchHit]:
        return self.store.search(text)

    # -- the session's own writes, as its events arrive --

    def user_saved(self, message: Message) -> int:
        """A question was saved; returns its version count (2 or more after an edit)."""
        count = self.store.version_count(message.id)
        if self.is_open(message.conversation_id):
            self.messages.append(message)
            if count > 1:
                self.versions[message.id] = count
        return count

    def rewound(self, conversation_id: int, from_message_id: int) -> None:
        if self.is_open(conversation_id):
            self.messages = [m for m in self.messages if m.id < from_message_id]

    def answer_started(self, message: Message) -> None:
        if self.is_open(message.conversation_id):
            self.messages.append(message)

    def answer_saved(self, message: Message) -> int:
        """An answer's final state; returns its version count (2 or more if regenerated)."""
        count = self.store.version_count(message.id)
        if self.is_open(message.conversation_id):
            self.messages = [m for m in self.messages if m.id != message.id] + [message]
            self.messages.sort(key=lambda m: m.id)
            if count > 1:
                self.versions[message.id] = count
        return count

    # -- changes --

    def rename(self, conversation_id: int, title: str) -> None:
        self.store.rename(conversation_id, title)
        if self.is_open(conversation_id):
            self.refresh_record()

    def set_persona(self, conversation_id: int, prompt: str) -> None:
        self.store.set_system_prompt(conversation_id, prompt)
        if self.is_open(conversation_id):
            self.refresh_record()

    def tools_off(self, conversation_id: int) -> tuple[str, ...]:
        """The tools switched off in a conversation (F9), read again each time: raises StoreError."""
        return self.store.conversation(conversation_id).tools_off

    def set_tools_off(self, conversation_id: int, names: tuple[str, ...]) -> None:
        self.store.set_tools_off(conversation_id, names)

    def delete(self, conversation_id: int) -> Conversation | None:
        """Delete it with its messages; returns the conversation to open next (the latest, None for a new one)."""
        self.store.delete(conversation_id)
        return self.store.latest_conversation()

    # -- the personas (not a conversation's own: every conversation picks from them) --

    def personas(self) -> list[Persona]:
        return self.store.personas()

    def save_persona(self, name: str, prompt: str) -> Persona:
        return self.store.save_persona(name, prompt)

    def delete_persona(self, name: str) -> bool:
        return self.store.delete_persona(name)

    def start_in_model_mode(self) -> None:
        """The model is loaded: a fresh conversation starts in the model's own mode (the variant is known now)."""
        if self.current is not None and not self.messages:
            self.store.set_thinking(self.current.id, self.session.model.variant is not Variant.NO_THINKING)
            self.refresh_record()

    # -- the thinking rule --

    def thinking_now(self, adding: str | None = None) -> bool:
        """Whether the next answer thinks: the conversation's mode and the last soft switch (in `adding` too),
        from the history kept here (session.thinking_now reads it from SQLite)."""
        conversation = self.current
        if conversation is None:
            return False
        texts = [conversation.system_prompt] if conversation.system_prompt else []
        switch = next((m.content for m in reversed(self.messages)
                       if m.role == "user" and last_soft_switch(m.content) is not None), None)
        texts += [switch] if switch is not None else []
        return effective_thinking(self.session.model.variant, conversation.enable_thinking,
                                  texts + ([adding] if adding is not None else []))

    def mode_label(self) -> str:
        session = self.session
        if self.current is None or (session.model.template is None and session.model.remote_model is None):
            return ""
        if session.model.variant.can_switch:
            return "thinking on" if self.thinking_now() else "thinking off"
        return "always thinks" if session.model.variant is Variant.ALWAYS_THINKS else "no thinking"
