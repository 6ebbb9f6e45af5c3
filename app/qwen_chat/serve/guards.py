"""What every request passes before the model sees it: the API key (compared in constant time), the body's size,
and the client still being there. Errors go out in OpenAI's shape with the reason, never a traceback."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse

from qwen_chat.serve.wire import BadRequest

T = TypeVar("T")


def error_response(message: str, status: int, code: str = "invalid_request_error",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 413: "invalid_request_error", 503: "server_busy"}.get(status, code)
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status, headers=headers)


def key_refusal(request: Request, api_key: str | None) -> JSONResponse | None:
    """A 401 unless the request carries the key (`Authorization: Bearer KEY`, or `x-api-key`); None when it does
    or the server has no key."""
    if api_key is None:
        return None
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
    if hmac.compare_digest(given.encode("utf-8"), api_key.encode("utf-8")):
        return None
    reason = "wrong API key" if given else "this server needs an API key: send Authorization: Bearer KEY"
    return error_response(reason, 401, "invalid_api_key", {"WWW-Authenticate": "Bearer"})


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or BadRequest(413) as soon as it is known to be larger than `limit` bytes."""
    declared = request.headers.get("content-length")
    too_big = BadRequest(f"the request body is larger than this server takes ({limit:,} bytes; "
                         "`qwen-chat serve --max-body` raises it)", 413, "request_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


class ClientGone(Exception):
    """The client closed the connection."""


class DisconnectWatch:
    """Notices a client that leaves while its request waits or is answered (the body must be read first)."""

    def __init__(self, request: Request) -> None:
        self._gone = asyncio.ensure_future(self._listen(request))

    @staticmethod
    async def _listen(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def race(self, awaitable: Awaitable[T]) -> T:
        """`awaitable`'s result, or ClientGone (and `awaitable` cancelled) when the client leaves first."""
        job: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        both: set[asyncio.Future[Any]] = {job, self._gone}
        done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        if job in done:
            return job.result()
        job.cancel()
        raise ClientGone

    def close(self) -> None:
        self._gone.cancel()
