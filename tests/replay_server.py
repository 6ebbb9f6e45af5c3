"""A loopback OpenAI-compatible server that replays vLLM/SGLang-style SSE streams, with the faults a real
server cannot be made to show on demand (errors mid-stream, drops, wrong protocol)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def chunk(**delta: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def finish(reason: str = "stop") -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


# vLLM with --reasoning-parser qwen3: thinking in reasoning_content, the answer in content
REASONING = [chunk(role="assistant"), chunk(reasoning_content="The user wants "),
             chunk(reasoning_content="a greeting."),
             chunk(content="\n\nHello"), chunk(content=" there!"), finish(),
             {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9}}]
# no reasoning parser: the think block arrives inline, cut anywhere
INLINE = [chunk(role="assistant"), chunk(content="<thi"), chunk(content="nk>\nPondering.\n</th"),
          chunk(content="ink>\n\nHi [bold]there[/]"), finish()]
ERROR_MIDSTREAM = [chunk(content="Partial ans"), chunk(content="wer"),
                   {"error": {"message": "CUDA out of memory", "type": "server_error"}}]


class ReplayServer:
    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = REASONING
        self.mode = "sse"  # sse | status500 | json | drop | slow
        self.requests: list[dict[str, Any]] = []
        self.models = [{"id": "Qwen/Qwen3-30B-A3B", "object": "model", "max_model_len": 32768}]
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> ReplayServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.endswith("/models"):
                    self._json(200, {"object": "list", "data": owner.models})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                if owner.mode == "status500":
                    self._json(500, {"error": {"message": "model is overloaded"}})
                    return
                if owner.mode == "json":
                    self._json(200, {"choices": [{"message": {"content": "not streamed"}}]})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                script = owner.script if owner.mode != "slow" else [chunk(content=f"word{i} ") for i in range(10_000)]
                try:
                    for index, event in enumerate(script):
                        if owner.mode == "drop" and index == 3:
                            self.connection.shutdown(2)
                            return
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(0.05 if owner.mode == "slow" else 0.002)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
