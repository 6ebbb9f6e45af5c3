"""`qwen-chat mcp list|add|remove|test` through the real entry point, on a sandboxed config folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from qwen_chat.cli.main import main
from qwen_chat.config.mcp_config import load_servers, mcp_config_path

SERVER = str(Path(__file__).parent / "mcp_servers" / "stdio_server.py")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["mcp", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_add_list_and_remove_a_stdio_server(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "add", "files", "--env", "TOKEN=${env:FILES_TOKEN}", "--env", "DEBUG=1",
                       "--cwd", "/tmp", "--", "npx", "-y", "server-fs", "--root", "/tmp")
    assert code == 0 and out.startswith("added files (stdio: npx -y server-fs --root /tmp")
    raw = json.loads(mcp_config_path().read_text(encoding="utf-8"))["mcpServers"]["files"]
    assert raw == {"command": "npx", "args": ["-y", "server-fs", "--root", "/tmp"],
                   "env": {"TOKEN": "${env:FILES_TOKEN}", "DEBUG": "1"}, "cwd": "/tmp"}

    code, out, err = run(capsys, "list")
    assert code == 0 and err == ""
    assert f"MCP servers in {mcp_config_path()}:" in out
    line = next(line for line in out.splitlines() if "files" in line)
    assert "stdio" in line and "npx -y server-fs --root /tmp" in line
    assert "TOKEN=${env:FILES_TOKEN}" in line and "DEBUG=***" in line and "cwd: /tmp" in line

    assert run(capsys, "remove", "files")[:2] == (0, f"removed files from {mcp_config_path()}\n")
    assert load_servers()[0] == []
    code, _, err = run(capsys, "remove", "files")
    assert code == 1 and "there is no server named 'files'" in err


def test_add_url_servers_and_list_masks_literal_headers(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "add", "docs", "--url", "https://example.com/mcp", "--header", "Authorization=sk-live-123",
               "--header", "X-Key=Bearer ${keyring:docs}")[0] == 0
    assert run(capsys, "add", "old", "--url", "https://example.com/events", "--sse")[0] == 0
    entries = {entry.name: entry for entry in load_servers()[0]}
    assert entries["docs"].transport == "http" and entries["old"].transport == "sse"
    assert entries["docs"].headers == {"Authorization": "sk-live-123", "X-Key": "Bearer ${keyring:docs}"}

    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "sk-live-123" not in out  # the literal key is in the file, never on the screen
    assert "Authorization: ***" in out and "X-Key: *** ${keyring:docs}" in out
    assert "https://example.com/events" in out and " sse " in out


def test_list_reports_the_files_problems_and_still_lists_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    path = mcp_config_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"mcpServers": {"good": {"command": "uvx", "args": ["a"], "disabled": True},
                                               "weather": {"command": "x", "args": "bad"}}}), encoding="utf-8")
    code, out, err = run(capsys, "list")
    assert code == 0
    assert "good" in out and "(disabled)" in out and "weather" not in out
    assert "mcp.json: mcpServers.weather.args: must be a list of strings; this server is skipped" in err


def test_list_without_a_file_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "list") == (0, f"no MCP servers in {mcp_config_path()}\n", "")


@pytest.mark.parametrize(("argv", "message"), [
    (["add", "x"], "give either a command to start (after --) or --url"),
    (["add", "x", "--url", "https://h/mcp", "--", "cmd"], "give either a command"),
    (["add", "x", "--env", "NOEQUALS", "--", "cmd"], "--env takes KEY=VALUE, not 'NOEQUALS'"),
    (["add", "x", "--url", "https://h/mcp", "--env", "A=1"], "--env and --cwd are for servers started by a command"),
    (["add", "x", "--sse", "--", "cmd"], "--header and --sse are for --url servers"),
    (["add", "x", "--url", "ftp://h/mcp"], "mcpServers.x.url: must start with http:// or https://"),
])
def test_wrong_add_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                              message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err
    assert not mcp_config_path().exists()


def test_an_unknown_option_and_a_missing_action_are_argparse_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["mcp", "add", "x", "--colour", "red", "--", "cmd"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["mcp"])
    assert exit_info.value.code == 2


def test_adding_a_name_twice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "add", "t", "uvx", "mcp-server-time")[0] == 0  # no options: the words are the command
    code, _, err = run(capsys, "add", "t", "--", "other")
    assert code == 1 and "already a server named 't'" in err
    assert load_servers()[0][0].command == "uvx"


def test_test_connects_and_lists_tools_and_fails_when_a_server_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "add", "good", "--", sys.executable, SERVER)[0] == 0
    assert run(capsys, "add", "broken", "--", sys.executable, SERVER, "--crash")[0] == 0

    code, out, err = run(capsys, "test", "good")
    assert code == 0, err
    assert out.splitlines()[0] == "good: up, 9 tools"
    rows = [line.split(None, 1) for line in out.splitlines()[1:]]
    assert ["echo", "Return the text unchanged."] in rows and ["add", "Add two integers."] in rows
    assert "A second line" not in out  # the first line of a description only

    code, out, err = run(capsys, "test", "--timeout", "20")
    assert code == 1
    assert "broken: down: the server exited with code 3: test server: crashing on purpose" in out
    assert "good: up, 9 tools" in out
    assert "what the servers wrote on stderr is in" in err


def test_test_of_an_unknown_name_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "test", "nothing")
    assert code == 1 and "there is no server named 'nothing'" in err


def test_a_broken_file_is_not_edited(capsys: pytest.CaptureFixture[str]) -> None:
    path = mcp_config_path()
    path.parent.mkdir(parents=True)
    path.write_text("{oops", encoding="utf-8")
    code, _, err = run(capsys, "add", "x", "--", "cmd")
    assert code == 1 and "is not valid JSON" in err
    assert path.read_text(encoding="utf-8") == "{oops"
