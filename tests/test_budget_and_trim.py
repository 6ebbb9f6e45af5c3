"""Thinking budget and context trimming in the engine, on the real model through real llama.cpp.

The test model (Qwen2.5-Coder-0.5B) has no thinking mode of its own, so the prompt opens a think block for it,
as Qwen3's thinking templates do; whatever it writes there is thinking until it (or the budget) closes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_chat.engines.protocol import Done, GenerateRequest, LoadRequest, Token, Trim, Trimmed
from qwen_chat.gguf.files import read_model_info
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt
from qwen_chat.qwen3.thinking import STOP_THINKING

from helpers import loaded_engine


@pytest.fixture(scope="module")
def small_engine(real_model: Path):
    with loaded_engine(LoadRequest(real_model, n_ctx=1024)) as (eng, recorder, _):
        yield eng, recorder


def _prompt(model: Path, turns: list[Turn]) -> str:
    return build_prompt(ChatTemplate(read_model_info(model).chat_template), turns, enable_thinking=True)


def _count_tokens(model: Path, text: str) -> int:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


@pytest.mark.parametrize("budget", [12, 40])
def test_budget_cuts_thinking_and_an_answer_follows(small_engine, real_model: Path, budget: int) -> None:
    eng, rec = small_engine
    prompt = _prompt(real_model, [Turn("user", "Explain step by step why the sky is blue.")]) + "<think>\n"
    eng.generate(GenerateRequest(1, prompt, Sampling(temperature=0.6, max_tokens=120, seed=3),
                                 starts_in_thinking=True, thinking_budget=budget))
    events, _ = rec.until(Done)
    done = events[-1]
    assert isinstance(done, Done), done
    assert done.thinking_cut_at is not None, done.thinking
    before, inserted = done.thinking[:done.thinking_cut_at], done.thinking[done.thinking_cut_at:]
    # the cut is where Qwen puts it: the model's own thinking, then the stop-thinking instruction
    assert inserted.strip() == STOP_THINKING.replace("</think>", "").strip()
    # the prompt opened the block, so every generated token until the cut was thinking
    assert _count_tokens(real_model, before) <= budget + 1  # +1: retokenizing may split a merged token
    assert done.thinking_closed and done.answer.strip(), "the model must go on to answer"
    meters = [e.thinking_tokens for e in events if isinstance(e, Token)]
    assert max(meters) == budget and meters == sorted(meters)  # the live meter climbs to the budget, no further


def test_no_budget_leaves_thinking_alone(small_engine, real_model: Path) -> None:
    eng, rec = small_engine
    prompt = _prompt(real_model, [Turn("user", "Say hello.")]) + "<think>\n"
    eng.generate(GenerateRequest(2, prompt, Sampling(max_tokens=30, seed=1), starts_in_thinking=True))
    done = rec.until(Done)[0][-1]
    assert isinstance(done, Done) and done.thinking_cut_at is None
    assert "Considering the limited time" not in done.thinking


def test_budget_is_ignored_while_answering(small_engine, real_model: Path) -> None:
    """A budget smaller than the answer must not cut or alter an answer that has no thinking."""
    eng, rec = small_engine
    prompt = _prompt(real_model, [Turn("user", "Count from 1 to 30, separated by spaces.")])
    eng.generate(GenerateRequest(3, prompt, Sampling(max_tokens=90, seed=1), thinking_budget=5))
    done = rec.until(Done)[0][-1]
    assert isinstance(done, Done) and done.thinking_cut_at is None and not done.thinking
    assert done.completion_tokens > 5 and "Considering" not in done.answer  # it went on past the budget size


def test_oldest_turns_are_dropped_to_fit_and_never_the_newest(small_engine, real_model: Path) -> None:
    eng, rec = small_engine
    filler = "lorem ipsum dolor sit amet " * 40  # ~240 tokens a turn; 1024 context
    turns = [Turn("system", "You are terse.")]
    for i in range(4):
        turns += [Turn("user", f"note {i}: {filler}"), Turn("assistant", f"ok {i}")]
    turns.append(Turn("user", "What is 2+2? Answer with the number."))
    history = turns[1:-1]

    def render(dropped: int) -> str:
        return _prompt(real_model, [turns[0], *history[2 * dropped:], turns[-1]])

    eng.generate(GenerateRequest(4, render(0), Sampling(max_tokens=400, seed=1), trim=Trim(render, 5)))
    events, _ = rec.until(Done)
    done = events[-1]
    trimmed = [e for e in events if isinstance(e, Trimmed)]
    assert isinstance(done, Done), done
    assert trimmed and trimmed[0].dropped == done.dropped >= 1
    # room for the answer, plus a quarter of the context free so the next turns keep this start
    assert done.prompt_tokens + 256 + 256 <= 1024
    assert done.answer.strip()


def test_message_too_long_even_alone_is_refused_with_numbers(small_engine, real_model: Path) -> None:
    eng, rec = small_engine
    turns = [Turn("user", "short"), Turn("assistant", "ok"), Turn("user", "word " * 1500)]

    def render(dropped: int) -> str:
        return _prompt(real_model, turns[2 * dropped:])

    eng.generate(GenerateRequest(5, render(0), Sampling(max_tokens=20), trim=Trim(render, 2)))
    failed = rec.until(Done)[0][-1]
    assert not isinstance(failed, Done)
    assert "does not fit the context" in failed.message and "1,024" in failed.message


def test_the_next_turn_keeps_the_tokens_the_model_sampled(real_model: Path) -> None:
    """Re-tokenizing an answer may split it differently from how it was sampled ("O"+"ak" vs "Oak"); the next
    prompt keeps the sampled tokens, so llama.cpp does not re-read the answer (seen in bench/kv_reuse.py)."""
    import llama_cpp

    from qwen_chat.engines.llama import _Loaded, _sampled, _tokenize
    from qwen_chat.engines.protocol import LoadRequest as Request

    llm = llama_cpp.Llama(model_path=str(real_model), n_ctx=256, verbose=False)
    try:
        model = _Loaded(llm, Request(real_model, 256))
        prompt = _prompt(real_model, [Turn("user", "Name a tree.")])
        tokens = _tokenize(model, prompt)
        split = [llm.tokenize(b"O", add_bos=False)[0], llm.tokenize(b"ak", add_bos=False)[0]]
        assert llm.tokenize(b"Oak", add_bos=False) != split  # the text alone would come back as one token
        cache = tokens + split  # as if the model had sampled "O", "ak"
        assert _sampled(llm, prompt, tokens, "Oaks", cache) is None  # text and tokens must agree exactly
        model.reuse = _sampled(llm, prompt, tokens, "Oak", cache)
        assert model.reuse == (prompt + "Oak", tokens + split)
        follow_up = prompt + "Oak<|im_end|>\n<|im_start|>user\nAnother?<|im_end|>\n<|im_start|>assistant\n"
        assert _tokenize(model, follow_up, reuse=True)[: len(tokens) + 2] == tokens + split
        assert _tokenize(model, follow_up)[: len(tokens) + 2] != tokens + split  # what happened before
        other = _prompt(real_model, [Turn("user", "Something else")])
        assert _tokenize(model, other, reuse=True) == _tokenize(model, other)  # another prompt: no reuse
    finally:
        llm.close()
