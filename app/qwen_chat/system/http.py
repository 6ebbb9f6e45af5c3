"""The HTTP library huggingface_hub itself uses, for the hub client and the server engine alike (one
library, one set of exceptions to catch)."""

from __future__ import annotations

import importlib
from typing import Any


def http_library() -> Any:
    """The HTTP library huggingface_hub itself uses (httpx2 in huggingface_hub 2.x, httpx before)."""
    try:
        return importlib.import_module("httpx2")
    except ImportError:  # pragma: no cover - huggingface_hub 1.x
        return importlib.import_module("httpx")
