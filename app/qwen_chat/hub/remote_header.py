"""Read a GGUF header over HTTP with Range requests, so a plan can use exact tensor sizes before any download.

A Qwen3 header is a few megabytes (the vocabulary); only that much is fetched, growing the range until the
header parses.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from qwen_chat.gguf.header import GGUFHeader, HeaderError, read_header
from qwen_chat.system.http import http_library

FIRST_RANGE = 4 << 20
MAX_HEADER = 256 << 20


class RemoteHeaderError(Exception):
    pass


def fetch_header(url: str, headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> GGUFHeader:
    http = http_library()
    size = FIRST_RANGE
    with http.Client(follow_redirects=True, timeout=timeout) as client:
        while True:
            try:
                response = client.get(url, headers={**(headers or {}), "Range": f"bytes=0-{size - 1}"})
            except http.HTTPError as exc:
                raise RemoteHeaderError(f"cannot read the file's header from the hub: {exc}") from exc
            if response.status_code not in (200, 206):
                raise RemoteHeaderError(f"the hub answered {response.status_code} for {url}")
            data = response.content
            try:
                return read_header(io.BytesIO(data))
            except HeaderError as exc:
                whole = response.status_code == 200 or len(data) < size
                if whole or size >= MAX_HEADER:
                    raise RemoteHeaderError(f"the file at {url} is not a readable GGUF: {exc}") from exc
                size *= 4  # the header is longer than what was fetched: fetch more
