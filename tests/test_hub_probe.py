"""The first run's hub probe (hub/probe.py): any answer means online; a refused connection, a silent server and
HF_HUB_OFFLINE mean offline, each said within the probe's deadline."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import free_port
from hub_server import Hub
from qwen_chat.hub.probe import probe_hub


def test_the_loopback_hub_answers(hub: Hub) -> None:
    assert probe_hub().reachable  # a 404 for the probed repo is still the hub answering
    assert any(r.path.startswith("/api/models/") for r in hub.requests())


def test_offline_setting_answers_without_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    state = probe_hub()
    assert not state.reachable and state.reason == "HF_HUB_OFFLINE is set"


def test_a_closed_port_and_a_silent_server_are_offline_within_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    refused = probe_hub()
    assert not refused.reachable and "cannot reach http://127.0.0.1:" in refused.reason
    with socket.socket() as silent:  # connections queue in the backlog and are never answered
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        state = probe_hub(timeout=0.5)
        took = time.monotonic() - started
    assert not state.reachable and "did not answer within 0.5 s" in state.reason
    assert 0.4 < took < 1.5
