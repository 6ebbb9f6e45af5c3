"""mcp.json: the mcpServers shape other apps write, problems reported by key, edits that keep the rest, secrets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qwen_chat.config.mcp_config import (
    KEYRING_SERVICE,
    McpConfigError,
    ServerEntry,
    add_server,
    load_servers,
    mcp_config_path,
    remove_server,
    resolve_secrets,
)

from helpers import MemoryKeyring


def write(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_the_file_lives_in_the_config_folder(tmp_path: Path) -> None:
    assert mcp_config_path() == tmp_path / "config" / "mcp.json"  # conftest points QWEN_CHAT_CONFIG_DIR there


def test_a_missing_file_is_no_servers_and_no_problem(tmp_path: Path) -> None:
    assert load_servers(tmp_path / "none.json") == ([], [])


def test_every_shape_other_apps_write_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "mcp.json", {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "server-fs", "/tmp"], "env": {"TOKEN": "${env:T}"}, "cwd": "/tmp",
                  "autoApprove": ["read"]},
        "remote": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${keyring:remote}"}},
        "legacy": {"url": "https://example.com/sse"},
        "typed-sse": {"type": "sse", "url": "https://example.com/events"},
        "camel": {"type": "streamableHttp", "url": "https://example.com/x/sse"},
        "transport-key": {"transport": "stdio", "command": "uvx", "args": []},
        "off": {"command": "x", "disabled": True},
    }})
    entries, problems = load_servers(path)
    assert problems == []
    by_name = {entry.name: entry for entry in entries}
    assert list(by_name) == ["files", "remote", "legacy", "typed-sse", "camel", "transport-key", "off"]
    assert by_name["files"] == ServerEntry("files", "stdio", command="npx", args=("-y", "server-fs", "/tmp"),
                                           env={"TOKEN": "${env:T}"}, cwd="/tmp")
    assert by_name["remote"].transport == "http"
    assert by_name["remote"].headers == {"Authorization": "Bearer ${keyring:remote}"}
    assert [by_name[name].transport for name in ("legacy", "typed-sse", "camel", "transport-key")] == \
        ["sse", "sse", "http", "stdio"]  # an explicit type beats the /sse ending
    assert by_name["off"].disabled and not by_name["files"].disabled


@pytest.mark.parametrize(("entry", "problem"), [
    ({"command": "x", "args": "--flag"}, "mcpServers.bad.args: must be a list of strings"),
    ({"command": "x", "args": ["ok", 3]}, "mcpServers.bad.args: must be a list of strings"),
    ({"command": ""}, "mcpServers.bad.command: must be a non-empty string"),
    ({"command": "x", "env": {"PORT": 8080}}, "mcpServers.bad.env.PORT: must be a string"),
    ({"command": "x", "env": ["A=1"]}, "mcpServers.bad.env: must be an object"),
    ({"url": "ftp://host/mcp"}, "mcpServers.bad.url: must start with http:// or https://"),
    ({"url": "https://h/mcp", "headers": {"X": None}}, "mcpServers.bad.headers.X: must be a string"),
    ({"type": "websocket", "url": "wss://h"}, "mcpServers.bad.type: must be one of"),
    ({"command": "x", "disabled": "yes"}, "mcpServers.bad.disabled: must be true or false"),
    ({"command": "x", "url": "https://h/mcp"}, "mcpServers.bad: has both \"command\" and \"url\""),
    ({"args": ["x"]}, "mcpServers.bad: needs a \"command\""),
    ("npx server", "mcpServers.bad: must be an object"),
])
def test_a_broken_entry_is_reported_by_key_and_skipped(tmp_path: Path, entry: object, problem: str) -> None:
    path = write(tmp_path / "mcp.json", {"mcpServers": {"good": {"command": "ok"}, "bad": entry}})
    entries, problems = load_servers(path)
    assert [e.name for e in entries] == ["good"]
    assert len(problems) == 1
    assert problems[0].startswith(f"mcp.json: {problem}"), problems
    assert problems[0].endswith("; this server is skipped")


def test_a_file_that_is_not_json_is_one_problem_and_no_servers(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {"a": {"command": "x",}}}', encoding="utf-8")
    entries, problems = load_servers(path)
    assert entries == []
    assert len(problems) == 1
    assert problems[0].startswith("mcp.json: is not valid JSON (line 1, column ")
    assert problems[0].endswith("no MCP servers are loaded")


@pytest.mark.parametrize("document", [[1, 2], {"mcpServers": ["a"]}])
def test_a_file_of_the_wrong_shape_is_one_problem(tmp_path: Path, document: object) -> None:
    entries, problems = load_servers(write(tmp_path / "mcp.json", document))
    assert entries == [] and len(problems) == 1 and "no MCP servers are loaded" in problems[0]


def test_add_and_remove_keep_the_other_entries_and_unknown_keys(tmp_path: Path) -> None:
    original = {"mcpServers": {"theirs": {"command": "node", "args": ["s.js"], "autoApprove": ["x"], "timeout": 5}},
                "globalShortcut": "Ctrl+Space"}
    path = write(tmp_path / "mcp.json", original)
    add_server(ServerEntry("mine", "stdio", command="uvx", args=("mcp-time",), env={"TZ": "UTC"}), path)
    add_server(ServerEntry("web", "http", url="https://h/mcp", headers={"Authorization": "${env:TOKEN}"}), path)
    add_server(ServerEntry("events", "sse", url="https://h/events"), path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "mcpServers": {\n    "theirs": {')  # json with indent 2
    document = json.loads(text)
    assert document["globalShortcut"] == "Ctrl+Space"
    assert document["mcpServers"]["theirs"] == original["mcpServers"]["theirs"]
    assert document["mcpServers"]["mine"] == {"command": "uvx", "args": ["mcp-time"], "env": {"TZ": "UTC"}}
    assert document["mcpServers"]["web"] == {"url": "https://h/mcp", "headers": {"Authorization": "${env:TOKEN}"}}
    assert document["mcpServers"]["events"] == {"type": "sse", "url": "https://h/events"}
    entries, problems = load_servers(path)
    assert problems == [] and [e.transport for e in entries] == ["stdio", "stdio", "http", "sse"]

    assert remove_server("mine", path) is True
    assert remove_server("mine", path) is False
    document = json.loads(path.read_text(encoding="utf-8"))
    assert list(document["mcpServers"]) == ["theirs", "web", "events"]
    assert document["globalShortcut"] == "Ctrl+Space"
    assert [p.name for p in tmp_path.iterdir()] == ["mcp.json"]  # no temporary file left beside it


def test_an_http_url_ending_in_sse_keeps_its_type_when_written(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    add_server(ServerEntry("odd", "http", url="https://h/api/sse"), path)
    assert json.loads(path.read_text())["mcpServers"]["odd"]["type"] == "http"
    assert load_servers(path)[0][0].transport == "http"


def test_adding_creates_the_file_private_and_keeps_an_existing_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "mcp.json"
    add_server(ServerEntry("a", "stdio", command="x"), path)
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o640)
    add_server(ServerEntry("b", "stdio", command="y"), path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_broken_file_is_never_written_over(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text("{ not json", encoding="utf-8")
    with pytest.raises(McpConfigError, match="not valid JSON"):
        add_server(ServerEntry("a", "stdio", command="x"), path)
    with pytest.raises(McpConfigError):
        remove_server("a", path)
    assert path.read_text(encoding="utf-8") == "{ not json"


def test_env_references_are_resolved_from_our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_TEST_TOKEN", "s3cret")
    resolved = resolve_secrets({"Authorization": "Bearer ${env:QWEN_TEST_TOKEN}", "Plain": "as is"}, "headers.")
    assert resolved == {"Authorization": "Bearer s3cret", "Plain": "as is"}


def test_a_missing_env_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QWEN_TEST_MISSING", raising=False)
    with pytest.raises(ValueError, match=r"env\.API_KEY: \$\{env:QWEN_TEST_MISSING\} is not set"):
        resolve_secrets({"API_KEY": "${env:QWEN_TEST_MISSING}"}, "env.")


def test_keyring_references_use_the_qwen_chat_mcp_service(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring

    backend = MemoryKeyring()
    monkeypatch.setattr(keyring.core, "_keyring_backend", backend)
    backend.set_password(KEYRING_SERVICE, "weather", "k-123")
    backend.set_password("some-other-service", "other", "nope")
    assert resolve_secrets({"KEY": "${keyring:weather}"}) == {"KEY": "k-123"}
    with pytest.raises(ValueError, match=r'KEY: \$\{keyring:other\} has no entry .*service "qwen-chat-mcp"'):
        resolve_secrets({"KEY": "${keyring:other}"})


def test_the_start_up_report_includes_mcp_json_problems_and_bad_tool_settings() -> None:
    from qwen_chat.config.check import check
    from qwen_chat.system.paths import config_dir

    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "mcp.json").write_text('{"mcpServers": {"bad": {"args": 3}}}', encoding="utf-8")
    (config_dir() / "settings.toml").write_text("[tools]\nmax_rounds = 0\n", encoding="utf-8")
    problems = check()
    assert any("mcpServers.bad" in p for p in problems)
    assert any("tools.max_rounds: must be a whole number from 1 to 200 (got 0); the default 20 is used" in p
               for p in problems)
