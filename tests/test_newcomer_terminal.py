"""The newcomer's path, in a real terminal (tmux): the installed `qwen-chat` with fresh data, config, models and
Hugging Face folders and no model, as the README's first command leaves it (the package is installed once for
the suite, not again here: llama-cpp-python takes minutes to compile).

Unreachable hub (a closed loopback port): qwen-chat says it is offline before it asks anything, within 3 s, and
offers the GGUF it finds on disk; Enter opens the chat on it. Loopback hub: the quick start and the most
capable pick, with their sizes and the RAM margin kept; Enter downloads the quick start and opens the chat."""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port
from hub_server import Hub
from qwen_chat.system.hardware import detect

from helpers import TMUX, Tmux, wait_until, write_catalog
from tiny_models import write_tiny_qwen3

pytestmark = pytest.mark.skipif(TMUX is None, reason="needs tmux (apt-get install tmux)")
EXE = Path(sys.executable).parent / "qwen-chat"
GiB = 1 << 30
QUICK_REPO, QUICK_FILE = "test/Qwen3-4B-Instruct-2507-GGUF", "Qwen3-4B-Instruct-2507-Q4_K_M.gguf"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def newcomer(tmp_path: Path, hub_url: str) -> tuple[str, Path]:
    """The command line of a first start: only qwen-chat's own folders and the hub's address are set (the data
    and config folders are those the test's fixtures use); its exit status goes to a file."""
    env = {"QWEN_CHAT_DATA_DIR": str(tmp_path / "data"), "QWEN_CHAT_CONFIG_DIR": str(tmp_path / "config"),
           "HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": hub_url,
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "TERM": "xterm-256color", "LANG": "C.UTF-8"}
    status = tmp_path / "status"
    run = shlex.join(["env", "-u", "HF_HUB_OFFLINE", "-u", "HF_TOKEN", "-u", "QWEN_CHAT_MODELS_DIR",
                      *(f"{k}={v}" for k, v in env.items()), str(EXE)])
    return f"{run}; echo $? >{shlex.quote(str(status))}.part && mv {status}.part {status}", status


def showing(tmux: Tmux, text: str, timeout: float = 30) -> str:
    """The screen, once it shows `text`."""
    def screen() -> str:
        shown = tmux.screen()
        return shown if text in shown else ""

    return wait_until(screen, timeout=timeout, what=repr(text))


def _models_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "models"  # the default: QWEN_CHAT_DATA_DIR/models
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_offline_newcomer_is_told_at_once_and_offered_the_file_on_disk(tiny: Path, tmp_path: Path) -> None:
    shutil.copy(tiny, _models_folder(tmp_path) / "my-model-Q8_0.gguf")
    command, status = newcomer(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    tmux = Tmux("newcomer-offline")
    try:
        started = time.monotonic()
        tmux.start(command)
        said_offline = wait_until(lambda: time.monotonic() if "You are offline" in tmux.screen() else None,
                                  timeout=30, what="the offline notice")
        assert said_offline - started < 3.0, f"offline after {said_offline - started:.1f} s"
        screen = showing(tmux, "Which one?")
        assert screen.index("You are offline") < screen.index("Which one?")  # before anything is asked
        assert "1) open tiny-qwen3-test Q8_0" in screen and "my-model-Q8_0.gguf" in screen
        tmux.keys("Enter")  # open it
        wait_until(lambda: "my-model-Q8_0" in tmux.screen() and "Which one?" not in tmux.screen(), timeout=60,
                   what="the chat on the model from the disk")
        tmux.keys("C-q")
        wait_until(status.is_file, timeout=60, what="qwen-chat to exit")
        assert status.read_text().strip() == "0"
    finally:
        tmux.close()


def test_online_newcomer_gets_two_offers_and_chats_after_the_quick_download(tiny: Path, tmp_path: Path,
                                                                             hub: Hub) -> None:
    from qwen_chat.planning import calibration
    from qwen_chat.planning.speed import DeviceRate

    # this machine, measured fast (as a workstation's `calibrate` would store it), so that a larger model than
    # the quick start passes the 15 s first-word bar; and the quick start is a tiny model the loopback hub serves
    box = detect()
    fast = DeviceRate(200e9, 4e12, 1e12, measured=True)
    calibration.store(box, {1: fast, box.physical_cores: fast})
    data = tiny.read_bytes()
    write_catalog("qwen3-4b-instruct-2507", QUICK_REPO, {"Q4_K_M": [(QUICK_FILE, len(data))]},
                  name="Qwen3-4B-Instruct-2507")
    hub.add_repo(QUICK_REPO, {QUICK_FILE: data})
    command, status = newcomer(tmp_path, hub.url)
    tmux = Tmux("newcomer-online")
    try:
        tmux.start(command)
        screen = showing(tmux, "Which one?", timeout=60)
        flat = " ".join(screen.split())  # lines the terminal wrapped
        margin = max(4 * GiB, box.ram_total // 4) / GiB
        assert "You are offline" not in flat
        assert f"1) Quick start: Qwen3-4B-Instruct-2507 Q4_K_M, {len(data) / 1e9:.1f} GB download" in flat
        assert "2) Most capable with room to spare:" in flat and "GB download" in flat.split("2) Most")[1]
        assert f"leaving at least {margin:.1f} GiB of RAM for the system and your apps" in flat
        tmux.keys("Enter")  # the quick start
        wait_until(lambda: "Qwen3-4B-Instruct-2507-Q4_K_M" in tmux.screen() and "Which one?" not in tmux.screen(),
                   timeout=90, what="the chat on the downloaded quick start")
        assert (_models_folder(tmp_path) / QUICK_FILE).read_bytes() == data
        tmux.keys("C-q")
        wait_until(status.is_file, timeout=60, what="qwen-chat to exit")
        assert status.read_text().strip() == "0"
    finally:
        tmux.close()
