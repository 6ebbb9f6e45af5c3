"""The engine thread on real llama.cpp: streaming, stop latency, prefix reuse, logs kept off the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import (
    Done,
    EngineEvent,
    Failed,
    GenerateRequest,
    Loaded,
    LoadProgress,
    LoadRequest,
    Token,
)
from qwen_chat.gguf.files import read_model_info
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt, prompt_opens_thinking
from qwen_chat.qwen3.thinking import Part
from qwen_chat.system.logging_setup import setup_logging

from helpers import Recorder, events_until, loaded_engine


@pytest.fixture(scope="module")
def engine(real_model: Path):
    setup_logging()
    with loaded_engine(LoadRequest(real_model, n_ctx=8192)) as (eng, recorder, events):
        assert any(isinstance(e, LoadProgress) for e in events)
        yield eng, recorder


def prompt_for(model: Path, *texts: str) -> str:
    info = read_model_info(model)
    template = ChatTemplate(info.chat_template)
    return build_prompt(template, [Turn("user", t) for t in texts], enable_thinking=True)


def test_streams_a_real_answer(engine, real_model: Path) -> None:
    eng, rec = engine
    eng.generate(GenerateRequest(1, prompt_for(real_model, "Reply with the single word: hello"),
                                 Sampling(temperature=0.0, max_tokens=20, seed=1)))
    events, _ = rec.until(Done)
    done = events[-1]
    assert isinstance(done, Done), done
    tokens = [e for e in events if isinstance(e, Token)]
    assert tokens and all(t.part is Part.ANSWER for t in tokens)
    assert "".join(t.text for t in tokens) == done.answer
    assert "hello" in done.answer.lower()
    assert done.finish == "stop" and done.completion_tokens >= 2 and done.tokens_per_second > 0
    assert done.context_used == done.prompt_tokens + done.completion_tokens - 1


def test_stop_during_long_prompt_evaluation_is_fast(engine, real_model: Path) -> None:
    eng, rec = engine
    long_prompt = prompt_for(real_model, "Summarise: " + "the quick brown fox jumps over the lazy dog " * 600)
    eng.generate(GenerateRequest(2, long_prompt, Sampling(max_tokens=50)))
    time.sleep(0.4)  # inside prompt evaluation (several seconds on this CPU)
    asked = time.perf_counter()
    eng.stop()
    events, at = rec.until(Done)
    done = events[-1]
    assert isinstance(done, Done) and done.finish == "stopped"
    assert at - asked < 0.2, f"stop took {at - asked:.3f}s"
    # the engine is usable straight after an abort inside llama_decode
    eng.generate(GenerateRequest(3, prompt_for(real_model, "Say hi"), Sampling(max_tokens=8)))
    events, _ = rec.until(Done)
    assert isinstance(events[-1], Done) and events[-1].finish in ("stop", "length")


def test_stop_mid_answer_keeps_partial_text(engine, real_model: Path) -> None:
    eng, rec = engine
    eng.generate(GenerateRequest(4, prompt_for(real_model, "Write the numbers from 1 to 1000 in words, one per line."),
                                 Sampling(temperature=0.0, max_tokens=400, seed=1)))  # greedy: a long answer
    streamed: list[str] = []

    def ten_tokens(item: tuple[float, EngineEvent]) -> bool:
        if isinstance(item[1], Token):
            streamed.append(item[1].text)
        return len(streamed) >= 10

    events_until(rec.events, ten_tokens, timeout=60, what="10 tokens")
    asked = time.perf_counter()
    eng.stop()
    events, at = rec.until(Done)
    done = events[-1]
    streamed += [e.text for e in events if isinstance(e, Token)]
    assert isinstance(done, Done) and done.finish == "stopped"
    assert done.answer == "".join(streamed) and len(streamed) >= 10  # the partial answer is all kept
    assert at - asked < 0.2


def test_second_turn_reuses_the_kv_prefix(engine, real_model: Path) -> None:
    eng, rec = engine
    first = prompt_for(real_model, "Name three colours.")
    eng.generate(GenerateRequest(5, first, Sampling(max_tokens=30, seed=3)))
    done = rec.until(Done)[0][-1]
    assert isinstance(done, Done)
    info = read_model_info(real_model)
    template = ChatTemplate(info.chat_template)
    second = build_prompt(template, [Turn("user", "Name three colours."), Turn("assistant", done.answer),
                                     Turn("user", "And three animals?")], enable_thinking=True)
    eng.generate(GenerateRequest(6, second, Sampling(max_tokens=10)))
    done2 = rec.until(Done)[0][-1]
    assert isinstance(done2, Done)
    assert done2.prompt_evaluated < done2.prompt_tokens - done.prompt_tokens + 5 + done.completion_tokens


def test_output_limit_counts_every_sampled_token(engine, real_model: Path) -> None:
    eng, rec = engine
    eng.generate(GenerateRequest(8, prompt_for(real_model, "Write the numbers from 1 to 100 in words."),
                                 Sampling(temperature=0.0, max_tokens=7, seed=1)))
    events, _ = rec.until(Done)
    done = events[-1]
    assert isinstance(done, Done) and done.finish == "length"
    assert done.completion_tokens == 7  # the 7th was sampled and streamed, never evaluated
    assert done.context_used == done.prompt_tokens + 6
    assert "".join(e.text for e in events if isinstance(e, Token)) == done.answer


def test_sampling_settings_reach_the_decode_loop_as_create_completion_took_them() -> None:
    from qwen_chat.engines.decode_loop import SamplerParams
    from qwen_chat.engines.llama import _sampler_params

    sampling = Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.01, presence_penalty=1.5, seed=42)
    assert _sampler_params(sampling) == SamplerParams(temperature=0.6, top_k=20, top_p=0.95, min_p=0.01,
                                                      presence_penalty=1.5, frequency_penalty=0.0,
                                                      repeat_penalty=1.0, seed=42, penalty_last_n=64)
    assert _sampler_params(Sampling()).seed is None  # a random seed, as -1 was for create_completion


def test_prompt_longer_than_context_is_refused_clearly(engine, real_model: Path) -> None:
    eng, rec = engine
    eng.generate(GenerateRequest(7, prompt_for(real_model, "word " * 9000), Sampling(max_tokens=10)))
    failed = rec.until(Done)[0][-1]
    assert isinstance(failed, Failed) and "does not fit the context" in failed.message
    assert "9,0" in failed.message and "F7" in failed.message  # the prompt's size and what to do


def test_tiny_qwen3_thinking_model_streams_thinking(tiny_models: dict[str, Path]) -> None:
    rec = Recorder()
    eng = Engine(rec).start()
    try:
        eng.load(LoadRequest(tiny_models["thinking"], n_ctx=512))
        assert isinstance(rec.until(Loaded)[0][-1], Loaded)
        info = read_model_info(tiny_models["thinking"])
        prompt = build_prompt(ChatTemplate(info.chat_template), [Turn("user", "hi")], enable_thinking=True)
        assert prompt_opens_thinking(prompt)
        eng.generate(GenerateRequest(1, prompt, Sampling(max_tokens=40, seed=1), starts_in_thinking=True))
        events, _ = rec.until(Done)
        done = events[-1]
        assert isinstance(done, Done)
        parts = {e.part for e in events if isinstance(e, Token)}
        # noise from random weights: it starts inside thinking and (almost surely) never closes it
        assert Part.THINKING in parts and done.saw_thinking
    finally:
        eng.shutdown()


def test_expert_overrides_and_progress_reach_llama_cpp(tiny_hybrid_models: dict[str, Path]) -> None:
    """Llama() takes neither: the engine's Llama subclass puts both on the model parameters of its own load."""
    import logging

    lines: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("qwen_chat.llama_cpp")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)  # llama.cpp says which tensors it overrode at DEBUG
    rec = Recorder()
    eng = Engine(rec).start()
    try:
        eng.load(LoadRequest(tiny_hybrid_models["qwen35moe"], n_ctx=256, n_cpu_moe=1))
        events = rec.until(Loaded)[0]
        assert isinstance(events[-1], Loaded), events[-1]
        assert [e.fraction for e in events if isinstance(e, LoadProgress)][-1] == 1.0
        overridden = [line for line in lines if "buffer type overridden" in line]
        assert overridden and all(line.split()[1].startswith("blk.0.") for line in overridden), overridden
    finally:
        eng.shutdown()
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_load_failure_is_a_message_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    rec = Recorder()
    eng = Engine(rec).start()
    try:
        eng.load(LoadRequest(bad, n_ctx=512))
        failed = rec.until(Loaded)[0][-1]
        assert isinstance(failed, Failed) and "could not load bad.gguf" in failed.message
    finally:
        eng.shutdown()


LOG_PROBE = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from qwen_chat.engines.llama import Engine
    from qwen_chat.engines.protocol import LoadRequest, GenerateRequest, Done, Loaded, Failed
    from qwen_chat.qwen3.sampling import Sampling
    from qwen_chat.system.logging_setup import setup_logging
    setup_logging()
    done = threading.Event()
    def on(e):
        if isinstance(e, (Done, Failed)) or (isinstance(e, Loaded) and not sys.argv[2]):
            done.set()
    eng = Engine(on).start()
    eng.load(LoadRequest(Path(sys.argv[1]), n_ctx=1024))
    if sys.argv[2]:
        eng.generate(GenerateRequest(1, sys.argv[2], Sampling(max_tokens=5)))
    done.wait(120)
    eng.shutdown()
""")


def test_llama_cpp_logs_never_reach_the_terminal(real_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "QWEN_CHAT_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", LOG_PROBE, str(real_model), "<|im_start|>user\nhi<|im_end|>\n"],
                            capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    log = (tmp_path / "logs" / "llama.log").read_text()
    assert "llama_model_loader" in log or "print_info" in log  # they went to the file instead
