"""`qwen-chat serve` against real clients: the `openai` library, qwen-chat's own `--endpoint ... ask`, the TUI on
its HTTP engine and raw HTTP, with the real Qwen2.5-Coder-0.5B (and a tiny thinking qwen3 model for
`reasoning_content`) behind the real server on a free loopback port. Seeds are fixed: the answers repeat."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import free_port
from qwen_chat.serve import registry
from qwen_chat.serve.runner import ModelServer, ServeOptions
from qwen_chat.session.model_loading import prepare_load
from qwen_chat.session.sources import LocalModel

from helpers import SIZE, make_app, status, type_and_send, wait_for, wait_until

KEY = "test-key-0123"
N_CTX = 2048
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
COUNTING = "Write the numbers from 1 to 1000 in words, one per line, nothing else."


def _serve(model: Path, tmp: Path, **options: Any) -> Iterator[ModelServer]:
    with pytest.MonkeyPatch.context() as patch:  # the module's server keeps its files out of the user's folders
        patch.setenv("QWEN_CHAT_DATA_DIR", str(tmp / "data"))
        patch.setenv("QWEN_CHAT_CONFIG_DIR", str(tmp / "config"))
        server = ModelServer(LocalModel(model, N_CTX, prepare_load(model, N_CTX)),
                             ServeOptions(port=free_port(), seed=3, **options))
        assert server.load(timeout=120) is None
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def served(real_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    yield from _serve(real_model, tmp_path_factory.mktemp("serve"), api_key=KEY, queue_limit=1,
                      max_body=256 * 1024)


@pytest.fixture(scope="module")
def thinking_served(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    yield from _serve(tiny_models["thinking"], tmp_path_factory.mktemp("serve-thinking"))


def client(server: ModelServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120)


def post(server: ModelServer, path: str, body: bytes, key: str | None = KEY) -> tuple[int, Message, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.options.port, timeout=120)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    connection.request("POST", path, body, headers)
    response = connection.getresponse()
    data = json.loads(response.read() or b"{}")
    connection.close()
    return response.status, response.headers, data  # headers: case-insensitive


def test_answer_and_stream_agree_with_usage_and_timings(served: ModelServer) -> None:
    api = client(served)
    question = [{"role": "user", "content": "Name three colours, comma separated."}]
    whole = api.chat.completions.create(model="any", messages=question, max_tokens=16)
    answer = whole.choices[0].message.content
    assert answer and whole.usage is not None and whole.usage.completion_tokens > 0
    timings = (whole.model_extra or {})["timings"]
    assert timings["predicted_n"] == whole.usage.completion_tokens and timings["prompt_n"] > 0
    pieces, last = [], None
    for chunk in api.chat.completions.create(model="any", messages=question, max_tokens=16, stream=True):
        pieces += [c.delta.content or "" for c in chunk.choices]
        last = chunk
    assert "".join(pieces) == answer  # the server's seed: the same answer streamed
    assert last is not None and last.usage is not None and last.usage.total_tokens == whole.usage.total_tokens
    # the second request found the same prompt in the KV cache (but its last token, re-read for its logits)
    assert last.usage.prompt_tokens_details.cached_tokens == whole.usage.prompt_tokens - 1


def test_a_growing_conversation_reuses_the_kv_cache(served: ModelServer) -> None:
    api = client(served)
    turns = [{"role": "user", "content": "Say one word."}]
    first = api.chat.completions.create(model="any", messages=turns, max_tokens=8)
    turns += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "Again."}]
    second = api.chat.completions.create(model="any", messages=turns, max_tokens=8)
    assert second.usage is not None and first.usage is not None
    done = served.gate.last_done
    assert done is not None and done.prompt_tokens == second.usage.prompt_tokens
    assert done.prompt_evaluated < done.prompt_tokens - first.usage.prompt_tokens  # only the new turn was read
    assert second.usage.prompt_tokens_details.cached_tokens == done.prompt_tokens - done.prompt_evaluated


def test_tool_calls_in_openai_form_whole_and_streamed(served: ModelServer) -> None:
    # The 0.5B writes calls as bare JSON, so the answer is begun for it (a last assistant message is continued)
    begun = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "'
    messages = [{"role": "user", "content": "What is the weather in Paris?"}, {"role": "assistant", "content": begun}]
    api = client(served)
    whole = api.chat.completions.create(model="any", messages=messages, tools=WEATHER, max_tokens=24, temperature=0)
    calls = whole.choices[0].message.tool_calls
    assert whole.choices[0].finish_reason == "tool_calls" and calls and calls[0].function.name == "get_weather"
    assert set(json.loads(calls[0].function.arguments)) == {"city"} and calls[0].id.startswith("call-")
    deltas = [d for chunk in api.chat.completions.create(model="any", messages=messages, tools=WEATHER,
                                                          max_tokens=24, temperature=0, stream=True)
              for c in chunk.choices for d in (c.delta.tool_calls or [])]
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == \
        [(0, "get_weather", calls[0].function.arguments)]
    # the call and its result go back in the next request, rendered by the model's own template
    after = [*messages[:1], {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
             {"role": "tool", "tool_call_id": calls[0].id, "content": "18 C and sunny"}]
    reply = api.chat.completions.create(model="any", messages=after, tools=WEATHER, max_tokens=12)
    assert reply.choices[0].message.content


def test_reasoning_content_from_a_thinking_model(thinking_served: ModelServer) -> None:
    api = client(thinking_served, "no key needed")
    whole = api.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}], max_tokens=40,
                                        extra_body={"thinking_budget": 8})
    message = whole.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning_content", "")
    # the budget cut the (noise) thinking with Qwen's stop-thinking instruction; the answer followed it
    assert reasoning.endswith("I have to give the solution based on the thinking directly now.")
    assert "<think>" not in (message.content or "") and "</think>" not in (message.content or "")
    streamed = [(c.delta.model_extra or {}).get("reasoning_content") or ""
                for chunk in api.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}],
                                                         max_tokens=40, stream=True, extra_body={"thinking_budget": 8})
                for c in chunk.choices]
    assert "".join(streamed) == reasoning


def test_plain_completion_and_stop_strings(served: ModelServer) -> None:
    api = client(served)
    text = api.completions.create(model="any", prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    assert text.choices[0].text and text.usage is not None
    counted = api.chat.completions.create(model="any", messages=[{"role": "user", "content": "Count from 1 to 9."}],
                                          max_tokens=40, temperature=0, stop=["5"])
    assert counted.choices[0].message.content and "5" not in counted.choices[0].message.content
    assert "4" in counted.choices[0].message.content


def test_qwen_chat_ask_and_the_tui_through_the_server(served: ModelServer, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "qwen_chat", "--endpoint", served.url, "--api-key", KEY, "ask",
                           "--no-tools", "Reply with just the word: hello"], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert "hello" in done.stdout.lower()


async def test_the_tui_chats_through_the_server(served: ModelServer, tmp_path: Path) -> None:
    from qwen_chat.tui.messages import AssistantMessage

    app = make_app(tmp_path / "chat.db", endpoint=(served.url, KEY, None))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "ready" in status(app), what="connected")
        await type_and_send(pilot, "Reply with just the word: hello")
        await wait_for(pilot, lambda: app.chat.transcript.live is None and len(app.query(AssistantMessage)) == 1,
                       what="answer")
        assert "hello" in app.query_one(AssistantMessage).answer_text.lower()


def _stream(server: ModelServer, messages: list[dict], max_tokens: int) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.options.port, timeout=120)
    body = json.dumps({"messages": messages, "max_tokens": max_tokens, "stream": True})
    connection.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {KEY}"})
    response = connection.getresponse()
    assert response.status == 200
    return response


def _health(server: ModelServer) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", server.options.port, timeout=10)
    connection.request("GET", "/health")
    return json.loads(connection.getresponse().read())


def test_clients_wait_their_turn_and_a_full_queue_gets_503(served: ModelServer) -> None:
    before = served.gate.answers
    first = _stream(served, [{"role": "user", "content": COUNTING}], 48)
    first.readline()  # the stream has begun: the engine is answering the first client
    second: dict = {}
    waiting = threading.Thread(target=lambda: second.update(result=post(served, "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}).encode())))
    waiting.start()
    wait_until(lambda: _health(served)["waiting"] == 1, what="the second request to wait")
    status, headers, error = post(served, "/v1/chat/completions", json.dumps(
        {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}).encode())
    assert status == 503 and headers["Retry-After"] and "busy" in error["error"]["message"]
    streamed = first.read().decode()
    assert "second" not in second  # still waiting while the first was answered
    assert streamed.rstrip().endswith("data: [DONE]")
    waiting.join(120)
    assert second["result"][0] == 200 and second["result"][2]["choices"][0]["message"]["content"]
    assert served.gate.answers == before + 2


def test_a_client_that_leaves_mid_stream_stops_the_decoding(served: ModelServer) -> None:
    response = _stream(served, [{"role": "user", "content": COUNTING}], 1500)
    for _ in range(6):  # the role chunk, then a few tokens
        assert response.readline()
    response.close()  # the client leaves
    wait_until(lambda: not _health(served)["busy"], what="the engine to stop")
    done = served.gate.last_done
    assert done is not None and done.finish == "stopped" and done.completion_tokens < 200, done


def test_bad_requests_get_their_status_and_reason(served: ModelServer) -> None:
    status, _, error = post(served, "/v1/chat/completions", b'{"messages": [')
    assert status == 400 and "not valid JSON" in error["error"]["message"]
    status, _, error = post(served, "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], '
                                                           b'"temperature": 9}')
    assert status == 400 and "temperature must be between 0.0 and 2.0" in error["error"]["message"]
    status, _, error = post(served, "/v1/chat/completions", b"[" * 100_000)
    assert status == 400 and "nests too deeply" in error["error"]["message"]
    status, _, error = post(served, "/v1/chat/completions", b'{"messages": []}')
    assert status == 400 and '"messages"' in error["error"]["message"]
    huge = json.dumps({"messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
    assert post(served, "/v1/chat/completions", huge)[0] == 413
    status, headers, error = post(served, "/v1/chat/completions", b"{}", key="wrong")
    assert status == 401 and error["error"]["code"] == "invalid_api_key" and headers["WWW-Authenticate"] == "Bearer"
    assert post(served, "/v1/chat/completions", b"{}", key=None)[0] == 401
    with pytest.raises(openai.AuthenticationError):
        client(served, "wrong").models.list()
    status, _, error = post(served, "/v1/embeddings", b"{}")
    assert status == 404 and error["error"]["code"] == "not_found"


def test_models_lists_the_file_and_the_registry_names_the_server(served: ModelServer, real_model: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert [m.id for m in client(served).models.list()] == [real_model.name]
    assert served.registry_entry is not None
    monkeypatch.setenv("QWEN_CHAT_DATA_DIR", str(served.registry_entry.parent.parent))
    assert registry.served_at(real_model) == [served.url]


async def test_the_chat_on_the_same_file_shows_where_it_is_served(served: ModelServer, real_model: Path,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_chat.tui import status_bar

    from fake_engine import FakeEngine

    assert served.registry_entry is not None
    monkeypatch.setenv("QWEN_CHAT_DATA_DIR", str(served.registry_entry.parent.parent))
    monkeypatch.setattr(status_bar, "CHECK_EVERY", 0.1)
    app = make_app(tmp_path / "chat.db", real_model, n_ctx=N_CTX, engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        port = served.url.rsplit(":", 1)[1].split("/")[0]  # the status bar says "served :PORT" on loopback
        await wait_for(pilot, lambda: f"served :{port}" in status(app), timeout=10, what="the served note")


def test_prompts_are_the_apps_own_template_with_the_thinking_switches(tiny_models: dict[str, Path]) -> None:
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.qwen3.template import ChatTemplate, Turn, Variant, build_prompt
    from qwen_chat.serve.prompting import ModelFacts, chat_request
    from qwen_chat.serve.wire import chat_params

    info = read_model_info(tiny_models["hybrid"])
    template = ChatTemplate(info.chat_template, info.bos_token, info.eos_token)
    facts = ModelFacts(template, template.variant, quantized=False)
    assert facts.variant is Variant.HYBRID
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
               {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4", "reasoning_content": "x"},
               {"role": "user", "content": "And 3+3? /no_think"}]
    request = chat_request(1, chat_params({"messages": history}, 1000), facts, seed=None)
    turns = [Turn("system", "Be brief."), Turn("user", "2+2?"), Turn("assistant", "4"),
             Turn("user", "And 3+3? /no_think")]
    assert request.prompt == build_prompt(template, turns, enable_thinking=True)  # earlier thinking left out
    assert request.sampling.temperature == 0.7 and request.thinking_budget == 0  # /no_think: the non-thinking preset
    off = chat_request(2, chat_params({"messages": history[:2], "chat_template_kwargs": {"enable_thinking": False},
                                       "temperature": 0.2, "top_k": 5}, 1000), facts, seed=None)
    assert off.prompt.endswith("<think>\n\n</think>\n\n") and not off.enable_thinking
    assert (off.sampling.temperature, off.sampling.top_k, off.sampling.top_p) == (0.2, 5, 0.8)
    thinking = chat_request(3, chat_params({"messages": history[:2], "max_tokens": 5000}, 1000), facts, seed=None)
    assert thinking.sampling.temperature == 0.6 and thinking.sampling.max_tokens == 1000  # cut to --max-tokens


def test_serve_refuses_another_host_without_a_key_and_a_taken_port(real_model: Path, memory_keyring: Any,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_chat.cli.main import main

    assert main(["serve", str(real_model), "--host", "0.0.0.0"]) == 2
    assert "--api-key KEY" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # every address: taken for 127.0.0.1 and 0.0.0.0 alike
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(real_model), "--api-key", "k", "--port", str(port)]) == 1
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
        memory_keyring.set_password("qwen-chat-serve", "api-key", "stored")  # a key kept from an earlier --api-key
        assert main(["serve", str(real_model), "--host", "0.0.0.0", "--port", str(port)]) == 1
        assert f"cannot listen on 0.0.0.0:{port}" in capsys.readouterr().err  # past the key check


def test_the_server_drafts_as_the_settings_say(tiny_models: dict[str, Path]) -> None:
    """[engine] speculative = false turns drafting off for the server's answers too (read once at its start; the
    chat's F5 switch is the chat's own), for chat and plain completions."""
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.qwen3.template import ChatTemplate
    from qwen_chat.serve.gate import EngineGate
    from qwen_chat.serve.prompting import ModelFacts, chat_request, completion_request
    from qwen_chat.serve.wire import chat_params, completion_params

    from helpers import write_settings

    assert EngineGate(LocalModel(tiny_models["hybrid"], 512)).drafting
    write_settings("[engine]\nspeculative = false\n")
    gate = EngineGate(LocalModel(tiny_models["hybrid"], 512))
    assert gate.drafting is False
    info = read_model_info(tiny_models["hybrid"])
    template = ChatTemplate(info.chat_template, info.bos_token, info.eos_token)
    facts = ModelFacts(template, template.variant, False, gate.drafting)
    chat = chat_request(1, chat_params({"messages": [{"role": "user", "content": "hi"}]}, 100), facts, seed=None)
    plain = completion_request(2, completion_params({"prompt": "hi"}, 100), facts, seed=None)
    assert not chat.drafting and not plain.drafting
