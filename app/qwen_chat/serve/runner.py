"""The server's life: load the model (the app's load path), serve it with uvicorn, say so in the registry, stop.

`qwen-chat serve` runs it in the foreground (Ctrl-C stops it); the tests run it on a thread with `start`."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from qwen_chat.serve import registry
from qwen_chat.serve.app import ServeConfig, build_app
from qwen_chat.serve.gate import EngineGate
from qwen_chat.session.sources import LocalModel

log = logging.getLogger("qwen_chat.serve")
DEFAULT_PORT = 8642
KEYRING_SERVICE = "qwen-chat-serve"  # the key `serve --host` asks clients for, under the user name "api-key"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    queue_limit: int = 8  # requests that may wait for the engine; past it a 503
    max_body: int = 8 * 1024 * 1024
    max_tokens: int = 32768
    log_requests: bool = False
    seed: int | None = None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stored_key() -> str | None:
    try:
        import keyring

        return keyring.get_password(KEYRING_SERVICE, "api-key")
    except Exception:  # no keyring backend: no stored key
        return None


def store_key(key: str) -> None:
    try:
        import keyring

        keyring.set_password(KEYRING_SERVICE, "api-key", key)
    except Exception as exc:
        log.warning("could not store the server's API key in the keyring: %s", exc)


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen there (checked before the model loads), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as probe:
            probe.bind((host, port))
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server there? try --port)"
    return None


def _exit_quietly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


class ModelServer:
    """One model file served over HTTP until `stop` (or Ctrl-C in the foreground)."""

    def __init__(self, source: LocalModel, options: ServeOptions) -> None:
        self.source = source
        self.options = options
        self.gate = EngineGate(source, options.queue_limit, on_notice=lambda text: log.warning("%s", text))
        self._server: uvicorn.Server | None = None
        self.registry_entry: Path | None = None  # this server's file in the registry while it serves
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        return f"http://{host}:{self.options.port}/v1"

    def load(self, timeout: float | None = None) -> str | None:
        """Load the model; None when ready, else why not."""
        return self.gate.load(timeout)

    def _uvicorn(self) -> uvicorn.Server:
        config = ServeConfig(self.source.path.name, self.options.api_key, self.options.max_body,
                             self.options.max_tokens, self.options.log_requests, self.options.seed)
        # no access log: it would record every client's address and path; --log-requests logs the bodies
        return uvicorn.Server(uvicorn.Config(build_app(self.gate, config), host=self.options.host,
                                             port=self.options.port, log_level="warning", access_log=False,
                                             lifespan="off"))

    def serve(self) -> None:
        """Serve in the foreground until Ctrl-C or SIGTERM; the model is unloaded and the registry entry removed
        after. (uvicorn shuts down on either and then raises the signal again: SIGTERM's default action would end
        the process before the `finally` below, so it becomes a plain exit here.)"""
        server = self._uvicorn()
        entry = self.registry_entry = registry.register(self.url, self.source.path)
        signal.signal(signal.SIGTERM, _exit_quietly)
        try:
            server.run()
        finally:
            registry.unregister(entry)
            self.gate.close()

    def start(self, timeout: float = 30.0) -> ModelServer:
        """Serve on a thread (the tests); returns once it listens."""
        import time

        server = self._server = self._uvicorn()
        entry = self.registry_entry = registry.register(self.url, self.source.path)

        def run() -> None:
            try:
                server.run()
            finally:
                registry.unregister(entry)

        self._thread = threading.Thread(target=run, name="qwen-chat-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(Exception):
            self.gate.close()
