"""Saved endpoints in settings.toml, API keys only in the keyring, and --endpoint's early errors."""

from __future__ import annotations

import os
from pathlib import Path

import keyring
import pytest

from qwen_chat.cli.main import main
from qwen_chat.config.settings import Endpoint, load_endpoints, save_endpoint, settings_path
from qwen_chat.engines.http import api_key_for, remember_api_key

from helpers import MemoryKeyring


@pytest.fixture
def memory_keyring():
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_saved_endpoints_round_trip_and_bad_entries_are_reported() -> None:
    save_endpoint(Endpoint("lab", "http://gpu-box:8000/v1", "Qwen/Qwen3-235B-A22B"))
    save_endpoint(Endpoint("home", "http://127.0.0.1:8080/v1/"))
    assert load_endpoints() == {"lab": Endpoint("lab", "http://gpu-box:8000/v1", "Qwen/Qwen3-235B-A22B"),
                                "home": Endpoint("home", "http://127.0.0.1:8080/v1")}
    settings_path().write_text(settings_path().read_text() + '\n[endpoints.bad]\nurl = "ftp://x"\n')
    problems: list[str] = []
    assert set(load_endpoints(problems)) == {"lab", "home"}
    assert problems == [f"{settings_path()}: endpoints.bad.url must be an http(s) URL; entry ignored"]
    settings_path().write_text("[endpoints\n")
    problems.clear()
    assert load_endpoints(problems) == {} and "its settings are ignored" in problems[0]


def test_api_key_lives_in_the_keyring_only(memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    remember_api_key("http://gpu-box:8000/v1", "sk-secret-123")
    assert api_key_for("http://gpu-box:8000/v1") == "sk-secret-123"
    save_endpoint(Endpoint("lab", "http://gpu-box:8000/v1"))
    for folder in (Path(os.environ["QWEN_CHAT_CONFIG_DIR"]), Path(os.environ["QWEN_CHAT_DATA_DIR"])):
        for path in folder.rglob("*") if folder.exists() else ():
            if path.is_file():
                assert "sk-secret-123" not in path.read_text(errors="replace"), path


def test_endpoint_errors_before_the_screen_opens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--endpoint", "nowhere"]) == 2
    assert "http(s) URL or a saved name" in capsys.readouterr().err
    assert main(["--endpoint", "http://127.0.0.1:9/v1"]) == 1
    assert "cannot reach http://127.0.0.1:9/v1" in capsys.readouterr().err
