"""Exact tensor sizes from a GGUF header fetched with Range requests (loopback server, no internet)."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qwen_chat.gguf.files import read_model_info
from qwen_chat.hub import remote_header
from qwen_chat.planning.plan_inputs import weights_from_headers


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with single byte ranges, counting the bytes sent."""

    sent: list[int] = []

    def do_GET(self) -> None:  # noqa: N802
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        header = self.headers.get("Range")
        if header:
            first, last = header.removeprefix("bytes=").split("-")
            start, end = int(first), min(int(last), len(data) - 1)
        body = data[start:end + 1]
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(body)))
        if header:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        self.wfile.write(body)
        RangeHandler.sent.append(len(body))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(real_model: Path, tiny_models: dict[str, Path], tmp_path: Path):
    (tmp_path / "real.gguf").symlink_to(real_model)
    (tmp_path / "junk.gguf").write_bytes(b"<html>not found</html>")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    RangeHandler.sent = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_header_of_a_real_model_with_a_few_megabytes(server: str, real_model: Path, monkeypatch) -> None:
    monkeypatch.setattr(remote_header, "FIRST_RANGE", 1 << 20)  # force the growing path: the header is ~6 MB
    header = remote_header.fetch_header(f"{server}/real.gguf")
    local = read_model_info(real_model)
    assert weights_from_headers([header], 24) == weights_from_headers(local.headers, 24)
    assert len(RangeHandler.sent) >= 2 and sum(RangeHandler.sent) < 32 << 20  # far less than the 491 MB file


def test_not_a_gguf(server: str) -> None:
    with pytest.raises(remote_header.RemoteHeaderError, match="not a readable GGUF"):
        remote_header.fetch_header(f"{server}/junk.gguf")
