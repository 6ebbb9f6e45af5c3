"""Helpers shared by the test files: waiting, driving the Textual app, recording engine events, a keyring
kept in memory, and small user catalogs. Fixtures live in conftest.py; no test file imports another."""

from __future__ import annotations

import contextlib
import html
import os
import queue
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import keyring.backend

from qwen_chat.engines.protocol import EngineEvent, Failed, Loaded, LoadRequest
from qwen_chat.store.database import Store
from qwen_chat.system.paths import config_dir
from qwen_chat.tui.composer import Composer

if TYPE_CHECKING:
    from textual.pilot import Pilot

    from qwen_chat.engines.llama import Engine
    from qwen_chat.tui.app import QwenChatApp

T = TypeVar("T")

# -- waiting ------------------------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], T], *, timeout: float = 30, what: str = "", interval: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or condition}")
        if interval:
            time.sleep(interval)
    return result


async def wait_for(pilot: Pilot, condition: Callable[[], T], *, timeout: float = 90, what: str = "") -> T:
    """`wait_until` inside a Pilot test: the app keeps running (and drawing) between the checks."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or condition}")
        await pilot.pause(0.05)
    return result


def events_until(events: queue.Queue[T], last: Callable[[T], bool], timeout: float = 120, what: str = "") -> list[T]:
    """Take events off `events` until one satisfies `last`; return every event taken, that one at the end."""
    seen: list[T] = []

    def arrived() -> bool:
        try:
            seen.append(events.get(timeout=0.1))
        except queue.Empty:
            return False
        return last(seen[-1])

    wait_until(arrived, timeout=timeout, what=what or "the event", interval=0)
    return seen


def next_event(events: queue.Queue, kind: type[T], timeout: float = 120, seen: list | None = None) -> T:
    """The next `kind` event off `events` (session or engine events); a Failed before it fails the test with
    its message. Every event taken is added to `seen`."""
    taken = events_until(events, lambda e: isinstance(e, kind | Failed), timeout, what=kind.__name__)
    if seen is not None:
        seen += taken
    event = taken[-1]
    if not isinstance(event, kind):
        raise AssertionError(f"waiting for {kind.__name__}: {event.message}")
    return event


class Recorder:
    """An engine's event callback that keeps each event with the moment it arrived."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[float, EngineEvent]] = queue.Queue()

    def __call__(self, event: EngineEvent) -> None:
        self.events.put((time.perf_counter(), event))

    def until(self, kind: type, timeout: float = 120) -> tuple[list[EngineEvent], float]:
        """The events up to the first `kind` or Failed (the last of them), and when that one arrived."""
        taken = events_until(self.events, lambda item: isinstance(item[1], kind | Failed), timeout,
                             what=kind.__name__)
        return [event for _, event in taken], taken[-1][0]


@contextlib.contextmanager
def loaded_engine(request: LoadRequest) -> Iterator[tuple[Engine, Recorder, list[EngineEvent]]]:
    """A real llama.cpp Engine with `request` loaded, its recorder and the load's events; shut down after."""
    from qwen_chat.engines.llama import Engine

    recorder = Recorder()
    engine = Engine(recorder).start()
    try:
        engine.load(request)
        events, _ = recorder.until(Loaded)
        assert isinstance(events[-1], Loaded), events[-1]
        yield engine, recorder, events
    finally:
        engine.shutdown()


# -- the Textual app ----------------------------------------------------------------------------------------------

SIZE = (110, 36)


def make_app(db: Path | Store, model: Path | None = None, n_ctx: int = 4096,
             endpoint: tuple[str, str | None, str | None] | None = None, engine: Any = None,
             tools: Any = None) -> QwenChatApp:
    """The one place tests build the app: on a local `model`, or on an OpenAI-compatible `endpoint`
    (url, api key, model). `db` is the SQLite file, or a Store the caller closes. `engine` replaces llama.cpp
    (a FakeEngine: scripted, deterministic replies; the model file is still read and planned for). `tools` is the
    session's ToolBox (an McpHub), None for none."""
    from qwen_chat.session.chat import ChatSession
    from qwen_chat.session.sources import LocalModel, Server
    from qwen_chat.tui.app import QwenChatApp  # here, so that engine-only tests do not import the app

    store = db if isinstance(db, Store) else Store(db)
    source = Server(*endpoint) if endpoint is not None else LocalModel(model or Path(), n_ctx)
    return QwenChatApp(ChatSession(store, engine=engine, source=source, tools=tools))


def screen_text(app: QwenChatApp) -> str:
    """What the terminal shows, as plain text (from Textual's own screenshot)."""
    svg = app.export_screenshot()
    lines: dict[str, list[str]] = {}
    for y, text in re.findall(r'<text[^>]*\by="([\d.]+)"[^>]*>(.*?)</text>', svg, flags=re.S):
        lines.setdefault(y, []).append(html.unescape(re.sub(r"<[^>]+>", "", text)))
    ordered = sorted(lines.items(), key=lambda kv: float(kv[0]))
    return "\n".join("".join(parts).replace("\xa0", " ") for _, parts in ordered)


def status(app: QwenChatApp) -> str:
    return str(app.query_one("#status").render())


async def type_and_send(pilot: Pilot, text: str) -> None:
    box = pilot.app.query_one("#prompt", Composer)
    box.focus()
    box.value = text
    await pilot.press("enter")


# -- a keyring in memory -------------------------------------------------------------------------------------------


class MemoryKeyring(keyring.backend.KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


# -- user catalogs --------------------------------------------------------------------------------------------------

# The shape of tests/tiny_models.py's tiny Qwen3 (write_catalog's defaults).
TINY_SHAPE = {"params": 1_000_000, "layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "head_dim": 16,
              "experts": 0, "experts_used": 0, "native_context": 32768, "gguf_context": 40960}


def write_catalog(model_id: str, repo: str, quants: dict[str, Iterable[tuple[str, int]]], name: str = "",
                  variant: str = "hybrid", estimated: Collection[str] = (), **shape: int) -> Path:
    """A user catalog (models_catalog.yaml in the config folder) with one model: `quants` maps each quant to
    its files, (path in the repo, size); the quants named in `estimated` are marked so; `shape` overrides
    TINY_SHAPE's fields."""
    fields = {**TINY_SHAPE, **shape}
    lines = ["schema: 1", "models:", f"  {model_id}:", f"    name: {name or model_id}", f"    repo: {repo}",
             f"    variant: {variant}", *(f"    {key}: {value}" for key, value in fields.items()),
             "    yarn_factors: []", "    quants:"]
    for quant, files in quants.items():
        lines += [f"      {quant}:", f"        estimated: {'true' if quant in estimated else 'false'}",
                  "        files:", *(f"          - {{path: {path}, size: {size}}}" for path, size in files)]
    path = config_dir() / "models_catalog.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_settings(text: str) -> Path:
    """settings.toml in the (test's) config folder, with `text`."""
    path = config_dir() / "settings.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- a tmux server of a test's own ---------------------------------------------------------------------------------

TMUX = shutil.which("tmux")


class Tmux:
    """A tmux server of one test's own (a unique socket), so nothing else's sessions are touched: the real app or
    `ask` runs in it as in a person's terminal (send-keys to type, capture-pane to read)."""

    def __init__(self, name: str) -> None:
        self.socket = f"qwen-chat-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.session = name
        # a test run inside tmux must not reach the outer server, nor nest in it
        self.env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        self.socket_path: Path | None = None

    def __call__(self, *args: str) -> str:
        assert TMUX is not None
        result = subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, env=self.env,
                                timeout=30)
        assert result.returncode == 0, f"tmux {' '.join(args)}: {result.stderr}"
        return result.stdout

    def alive(self) -> bool:
        assert TMUX is not None
        return subprocess.run([TMUX, "-L", self.socket, "has-session", "-t", f"={self.session}"],
                              capture_output=True, env=self.env, timeout=30).returncode == 0

    def screen(self) -> str:
        """What the pane shows; empty once the command has ended and its session with it."""
        assert TMUX is not None
        result = subprocess.run([TMUX, "-L", self.socket, "capture-pane", "-p", "-t", f"={self.session}:"],
                                capture_output=True, text=True, env=self.env, timeout=30)
        return result.stdout

    def start(self, command: str) -> None:
        self("new-session", "-d", "-s", self.session, "-x", "120", "-y", "40", command)
        self.socket_path = Path(self("display-message", "-p", "-t", f"={self.session}:", "#{socket_path}").strip())

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", f"={self.session}:", *keys)

    def close(self) -> None:
        assert TMUX is not None
        for args in (["kill-session", "-t", f"={self.session}"], ["kill-server"]):  # the server is ours alone
            subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, env=self.env, timeout=30)
        if self.socket_path is not None:  # tmux leaves its socket file behind
            self.socket_path.unlink(missing_ok=True)
