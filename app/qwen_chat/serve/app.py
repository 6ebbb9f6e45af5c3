"""The HTTP API (Starlette): `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`, `GET /health`.

Each request is read and checked (key, size, fields, template) before it waits for the engine, so a bad one is
refused at once with the reason. A stream is Server-Sent Events as OpenAI sends them, ending in `data: [DONE]`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from qwen_chat.engines.protocol import Done, EngineEvent, Failed, GenerateRequest, Token
from qwen_chat.serve.answers import AnswerBuilder, RawText, StopStrings, accounting, new_id
from qwen_chat.serve.gate import EngineGate, QueueFull, Ticket
from qwen_chat.serve.guards import ClientGone, DisconnectWatch, error_response, key_refusal, read_body
from qwen_chat.serve.prompting import chat_request, completion_request
from qwen_chat.serve.wire import BadRequest, body_object, chat_params, completion_params
from qwen_chat.system.printable import printable

log = logging.getLogger("qwen_chat.serve")
requests_log = logging.getLogger("qwen_chat.serve.requests")
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class ServeConfig:
    model_id: str  # what /v1/models lists (the file's name); requests may name any model
    api_key: str | None = None
    max_body: int = 8 * 1024 * 1024  # bytes of one request body
    max_tokens: int = 32768  # the most tokens one answer may ask for (larger requests are cut to it)
    log_requests: bool = False
    seed: int | None = None  # `--seed`: the sampling seed of requests that give none


def build_app(gate: EngineGate, config: ServeConfig) -> Starlette:
    api = _Api(gate, config)
    routes = [Route("/v1/models", api.models, methods=["GET"]), Route("/health", api.health, methods=["GET"]),
              Route("/v1/chat/completions", api.chat, methods=["POST"]),
              Route("/v1/completions", api.completion, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _internal_error})


async def _http_error(request: Request, exc: Exception) -> Response:
    """An unknown path (404) or a wrong method (405), in OpenAI's error shape like every other refusal."""
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    return error_response(f"{request.method} {request.url.path}: {getattr(exc, 'detail', '')}", status,
                          "not_found" if status == 404 else "invalid_request_error")


async def _internal_error(_request: Request, exc: Exception) -> Response:
    log.exception("request failed", exc_info=exc)
    return error_response(f"internal error ({type(exc).__name__}); the server's log has the details", 500,
                          "internal_error")


class _Api:
    def __init__(self, gate: EngineGate, config: ServeConfig) -> None:
        self.gate = gate
        self.config = config

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok", "busy": self.gate.busy, "waiting": self.gate.waiting})

    async def models(self, request: Request) -> Response:
        if (refused := key_refusal(request, self.config.api_key)) is not None:
            return refused
        model = self.gate.model
        return JSONResponse({"object": "list", "data": [{
            "id": self.config.model_id, "object": "model", "created": 0, "owned_by": "qwen-chat",
            "meta": {"n_ctx": model.n_ctx, "gpu_layers": model.gpu_layers}}]})

    async def chat(self, request: Request) -> Response:
        return await self._serve(request, self._chat_request, self._chat_answer)

    async def completion(self, request: Request) -> Response:
        return await self._serve(request, self._completion_request, self._completion_answer)

    # -- what every endpoint does --

    async def _serve(self, request: Request, parse: Callable[[dict[str, Any]], tuple[GenerateRequest, Any]],
                     answer: Callable[[Ticket, EngineEvent, Any, DisconnectWatch], Any]) -> Response:
        if (refused := key_refusal(request, self.config.api_key)) is not None:
            return refused
        try:
            body = body_object(await read_body(request, self.config.max_body))
            if self.config.log_requests:
                requests_log.info("%s %s", request.url.path, printable(json.dumps(body, ensure_ascii=False)))
            generate, params = parse(body)
            self.gate.check_room()
        except BadRequest as exc:
            return error_response(str(exc), exc.status, exc.code)
        except QueueFull as exc:
            return _busy(exc)
        watch = DisconnectWatch(request)
        ticket = None
        try:
            ticket = await watch.race(self.gate.start(lambda rid: dataclasses.replace(generate, request_id=rid)))
            first = await watch.race(ticket.events.get())
        except (ClientGone, QueueFull) as exc:
            watch.close()
            if ticket is not None:  # the client left while its prompt was read: stop it there
                self.gate.cancel(ticket)
            return _busy(exc) if isinstance(exc, QueueFull) else error_response("the client left", 503)
        if isinstance(first, Failed):
            watch.close()
            status = 400 if "does not fit the context" in first.message else 500
            return error_response(first.message, status, "context_length_exceeded" if status == 400 else "failed")
        return await answer(ticket, first, params, watch)

    async def _events(self, ticket: Ticket, first: EngineEvent,
                      watch: DisconnectWatch) -> AsyncGenerator[EngineEvent, None]:
        """The answer's events until its end; the client leaving (or the caller closing early) stops the engine."""
        event = first
        try:
            while True:
                yield event
                if isinstance(event, (Done, Failed)):
                    return
                event = await watch.race(ticket.events.get())
        except ClientGone:
            return
        finally:
            self.gate.cancel(ticket)
            watch.close()

    # -- chat completions --

    def _chat_request(self, body: dict[str, Any]) -> tuple[GenerateRequest, Any]:
        params = chat_params(body, self.config.max_tokens)
        return chat_request(0, params, self.gate.facts(), self.config.seed), params

    async def _chat_answer(self, ticket: Ticket, first: EngineEvent, params: Any,
                           watch: DisconnectWatch) -> Response:
        builder = AnswerBuilder(self.config.model_id, StopStrings(params.sampling.stop))
        events = self._events(ticket, first, watch)
        if params.stream:
            return _sse(self._chat_chunks(builder, ticket, events))
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, Token):
                    builder.token(event)
                    if builder.stops.hit:
                        self.gate.cancel(ticket)
                elif isinstance(event, Done):
                    builder.finish(event)
                    return JSONResponse(builder.response(event))
                elif isinstance(event, Failed):
                    return error_response(event.message, 500, "failed")
        return error_response("the client left", 503)

    async def _chat_chunks(self, builder: AnswerBuilder, ticket: Ticket,
                           events: AsyncIterator[EngineEvent]) -> AsyncIterator[dict[str, Any]]:
        yield builder.chunk({"role": "assistant", "content": ""})
        async for event in events:
            if isinstance(event, Token):
                if (delta := builder.token(event)) is not None:
                    yield builder.chunk(delta)
                if builder.stops.hit:
                    self.gate.cancel(ticket)
            elif isinstance(event, Done):
                for delta in builder.finish(event):
                    yield builder.chunk(delta)
                yield {**builder.chunk({}, builder.finish_reason(event)), **accounting(event)}
            elif isinstance(event, Failed):
                yield {"error": {"message": event.message, "type": "server_error", "code": "failed"}}

    # -- plain completions --

    def _completion_request(self, body: dict[str, Any]) -> tuple[GenerateRequest, Any]:
        params = completion_params(body, self.config.max_tokens)
        return completion_request(0, params, self.gate.facts(), self.config.seed), params

    async def _completion_answer(self, ticket: Ticket, first: EngineEvent, params: Any,
                                 watch: DisconnectWatch) -> Response:
        chunks = self._completion_chunks(ticket, first, params, watch)
        if params.stream:
            return _sse(chunks)
        texts: list[str] = []
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if "error" in chunk:
                    return error_response(chunk["error"]["message"], 500, "failed")
                texts.append(chunk["choices"][0]["text"])
                if "usage" in chunk:
                    return JSONResponse({**chunk, "choices": [{**chunk["choices"][0], "text": "".join(texts)}]})
        return error_response("the client left", 503)

    async def _completion_chunks(self, ticket: Ticket, first: EngineEvent, params: Any,
                                 watch: DisconnectWatch) -> AsyncGenerator[dict[str, Any], None]:
        head = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
                "model": self.config.model_id}
        raw, stops = RawText(), StopStrings(params.sampling.stop)

        def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

        async for event in self._events(ticket, first, watch):
            if isinstance(event, Token):
                if text := stops.feed(raw.piece(event)):
                    yield chunk(text)
                if stops.hit:
                    self.gate.cancel(ticket)
            elif isinstance(event, Done):
                finish = "length" if event.finish == "length" else "stop"
                yield {**chunk(stops.flush(), finish), **accounting(event)}
            elif isinstance(event, Failed):
                yield {"error": {"message": event.message, "type": "server_error", "code": "failed"}}


def _busy(exc: QueueFull) -> Response:
    return error_response(f"the server is busy ({exc}); try again shortly", 503, "server_busy",
                          {"Retry-After": str(RETRY_AFTER_SECONDS)})


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
