"""Which conversations are open in a qwen-chat window, across processes sharing one database.

Each window holds an exclusive lock on one small file per conversation it shows (`conversations.db.windows/ID`).
The operating system drops the locks of a window that exits or is killed, so nothing goes stale. A second
window that finds the lock taken shows the conversation but does not send to it: two windows answering one
conversation would interleave their turns. Where locks cannot be taken (no flock on Windows, a read-only
folder) every conversation counts as free, as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

if sys.platform != "win32":  # Windows has no flock (a check mypy understands, unlike a failed import)
    import fcntl

_UNTRACKED = -1  # the lock could not be attempted at all


class Presence:
    def __init__(self, db_path: Path) -> None:
        self.folder = db_path.with_name(db_path.name + ".windows")
        self._held: dict[int, int] = {}  # conversation id -> the open file that holds its lock

    def claim(self, conversation_id: int) -> bool:
        """Hold the conversation for this window; False when another window holds it."""
        if conversation_id in self._held:
            return True
        descriptor = self._lock(conversation_id)
        if descriptor is None:
            return False
        if descriptor != _UNTRACKED:
            self._held[conversation_id] = descriptor
        return True

    def release(self, conversation_id: int) -> None:
        descriptor = self._held.pop(conversation_id, None)
        if descriptor is not None:
            os.close(descriptor)  # closing the file drops its lock

    def open_elsewhere(self, conversation_id: int) -> bool:
        """Another window holds it (tried without keeping it)."""
        return bool(self.held_elsewhere([conversation_id]))

    def held_elsewhere(self, conversation_ids: Iterable[int]) -> set[int]:
        """Those another window holds. Only lock files that exist are tried: a conversation no window has
        opened has none, and trying with O_CREAT would leave a file per listed conversation."""
        if sys.platform == "win32":
            return set()
        try:
            names = set(os.listdir(self.folder))
        except OSError:
            return set()
        return {i for i in conversation_ids if str(i) in names and i not in self._held and self._taken(i)}

    def _taken(self, conversation_id: int) -> bool:
        try:
            descriptor = os.open(self.folder / str(conversation_id), os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(descriptor)  # a lock of ours on another descriptor stays: flock locks are per open file
        return False

    def close(self) -> None:
        for conversation_id in list(self._held):
            self.release(conversation_id)

    def _lock(self, conversation_id: int) -> int | None:
        """An open file holding the lock; None when another window holds it; _UNTRACKED when locks are
        unavailable here."""
        if sys.platform == "win32":
            return _UNTRACKED
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.folder / str(conversation_id), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return _UNTRACKED
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            return None
        return descriptor
