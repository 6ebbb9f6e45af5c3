"""Making a rename durable: after `os.replace`, the folder's own entry must reach the disk too."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_folder(folder: Path) -> None:
    """fsync the folder (POSIX). Where a folder cannot be opened or synced (Windows, some filesystems) the rename
    itself is done, which is all those systems offer."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
