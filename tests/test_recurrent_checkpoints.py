"""Context checkpoints on hybrid recurrent models (engines/checkpoints.py), with the tiny random-weight models of
tests/tiny_models.py: the decode loop saves the recurrent state where a prompt's last turn begins (its last
`<|im_start|>`) and a later prompt that agrees up to there goes back to it instead of evaluating from 0; what it
then computes is exactly what a fresh context computes. A dense model takes no checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from decode_reference import GREEDY
from decode_reference import answer as _answer
from decode_reference import fresh as _fresh
from decode_reference import llama as _llama
from decode_reference import loaded as _loaded
from decode_reference import logits as _logits
from decode_reference import tokens as _tokens
from qwen_chat.engines.decode_loop import DecodeLoop, Generation
from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Done, GenerateRequest, Loaded, LoadRequest
from qwen_chat.gguf.files import read_model_info
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt

from helpers import Recorder

SYSTEM = "<|im_start|>system\nbe brief<|im_end|>\n"
ASK = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"




def _turn_start(llm, prompt: list[int]) -> int:  # noqa: ANN001
    """Where the prompt's last turn begins: its last <|im_start|>."""
    marker = _tokens(llm, "<|im_start|>")[0]
    return max(i for i, t in enumerate(prompt) if t == marker)





def _matches_fresh(loop: DecodeLoop, path: Path, prompt: list[int], first: Generation) -> None:
    """`first` (a 1-token generation on `loop`) left the prompt's logits, and they are a fresh context's; so are
    the 8 greedy tokens of the prompt generated again (on a hybrid model, from the checkpoint `first` took)."""
    logits = _logits(loop)
    assert first.pending is not None and loop.n_cached == len(prompt)
    again = loop.generate(prompt, 8, GREEDY)
    expected_tokens, expected_logits = _fresh(path, prompt, 8)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5)
    assert _answer(loop, prompt, again) == expected_tokens


@pytest.fixture(scope="module", params=["qwen35", "qwen3next", "qwen35moe"])
def hybrid(request: pytest.FixtureRequest, tiny_hybrid_models: dict[str, Path]) -> Iterator[tuple[object, DecodeLoop]]:
    yield from _loaded(tiny_hybrid_models[request.param])


def _first_turn(llm, loop: DecodeLoop) -> tuple[list[int], int]:  # noqa: ANN001
    """A first question answered with 8 tokens; (its prompt, where its checkpoint is)."""
    loop.clear()
    first = _tokens(llm, SYSTEM + ASK.format("what is blue?") + "<think>\n")
    result = loop.generate(first, 8, GREEDY)
    at = _turn_start(llm, first)
    assert result.reused == 0 and loop.checkpoints is not None and loop.checkpoints.positions == [at]
    return first, at


def test_the_next_turn_goes_back_to_the_start_of_the_last_answer(hybrid) -> None:
    """A chat with thinking: the next prompt holds the last answer without its thinking, so it leaves the cache
    right after the last prompt's `<|im_start|>assistant\\n`; it evaluates only from that <|im_start|> on."""
    llm, loop = hybrid
    first, at = _first_turn(llm, loop)
    second = _tokens(llm, SYSTEM + ASK.format("what is blue?") + "Blue.<|im_end|>\n" + ASK.format("and red?"))
    same = next(i for i, (a, b) in enumerate(zip(loop.tokens, second, strict=False)) if a != b)
    assert same == at + len(_tokens(llm, "<|im_start|>assistant\n"))
    result = loop.generate(second, 1, GREEDY)
    assert result.reused == at and result.prompt_evaluated == len(second) - at
    assert loop.checkpoints is not None and loop.checkpoints.positions == [at, _turn_start(llm, second)]
    _matches_fresh(loop, Path(llm.model_path), second, result)


def test_a_regeneration_and_an_edit_go_back_to_their_checkpoints(hybrid) -> None:
    """The same prompt again goes back to its own last turn; an edit of the last question to the turn before
    (the two latest checkpoints are kept)."""
    llm, loop = hybrid
    path = Path(llm.model_path)
    _first, at = _first_turn(llm, loop)
    history = SYSTEM + ASK.format("what is blue?") + "Blue.<|im_end|>\n"
    second = _tokens(llm, history + ASK.format("and red?"))
    loop.generate(second, 8, GREEDY)
    second_at = _turn_start(llm, second)
    regenerated = loop.generate(second, 1, GREEDY)
    assert regenerated.reused == second_at and regenerated.prompt_evaluated == len(second) - second_at
    _matches_fresh(loop, path, second, regenerated)
    edited = _tokens(llm, history + ASK.format("and green?"))
    result = loop.generate(edited, 1, GREEDY)
    assert result.reused == at and loop.checkpoints is not None
    assert loop.checkpoints.positions == [at, _turn_start(llm, edited)]  # the other question's is gone
    _matches_fresh(loop, path, edited, result)


def test_a_prompt_that_leaves_the_cache_before_every_checkpoint_starts_over(hybrid) -> None:
    llm, loop = hybrid
    _first, _at = _first_turn(llm, loop)
    edited = _tokens(llm, SYSTEM + ASK.format("what is gold?"))  # differs inside the first question
    result = loop.generate(edited, 1, GREEDY)
    assert result.reused == 0 and result.prompt_evaluated == len(edited)
    assert loop.checkpoints is not None and loop.checkpoints.positions == [_turn_start(llm, edited)]
    _matches_fresh(loop, Path(llm.model_path), edited, result)


def test_a_prompt_that_continues_the_cache_still_evaluates_only_its_new_tokens(hybrid) -> None:
    llm, loop = hybrid
    _first, at = _first_turn(llm, loop)
    cached = loop.tokens
    follow = cached + _tokens(llm, "<|im_end|>\n" + ASK.format("and red?"))
    result = loop.generate(follow, 1, GREEDY)
    assert result.reused == len(cached) and result.prompt_evaluated == len(follow) - len(cached)
    assert loop.checkpoints is not None and loop.checkpoints.positions == [at, _turn_start(llm, follow)]
    _matches_fresh(loop, Path(llm.model_path), follow, result)


@pytest.mark.parametrize("failing", ["llama_state_seq_set_data_ext", "llama_memory_seq_rm"])
def test_a_checkpoint_that_cannot_be_restored_starts_over(hybrid, monkeypatch: pytest.MonkeyPatch,
                                                          failing: str) -> None:
    """set_data restoring nothing, or the memory refusing to drop the KV cells after the checkpoint: the loop
    never goes on from that state but evaluates the prompt from 0."""
    import llama_cpp.llama_cpp as C  # noqa: N812

    llm, loop = hybrid
    _first_turn(llm, loop)
    second = _tokens(llm, SYSTEM + ASK.format("what is blue?") + "Blue.<|im_end|>\n" + ASK.format("and red?"))
    real = getattr(C, failing)
    if failing == "llama_memory_seq_rm":  # only the partial removal after a restore fails
        monkeypatch.setattr(C, failing, lambda memory, seq, p0, p1: False if p0 > 0 else real(memory, seq, p0, p1))
    else:
        monkeypatch.setattr(C, failing, lambda *_args: 0)
    result = loop.generate(second, 1, GREEDY)
    monkeypatch.undo()
    assert result.reused == 0 and result.prompt_evaluated == len(second)
    _matches_fresh(loop, Path(llm.model_path), second, result)


def test_a_dense_model_takes_no_checkpoints(tiny_models: dict[str, Path]) -> None:
    """The dense qwen3 model keeps any common prefix, as before, and saves no state."""
    llm = _llama(tiny_models["hybrid"])
    try:
        with DecodeLoop(llm) as loop:
            assert not loop.recurrent and loop.checkpoints is None
            first = _tokens(llm, SYSTEM + ASK.format("tell me about the sea"))
            loop.generate(first, 8, GREEDY)
            edited = _tokens(llm, SYSTEM + ASK.format("tell me about the sky"))
            same = next(i for i, (a, b) in enumerate(zip(first, edited, strict=True)) if a != b)
            result = loop.generate(edited, 1, GREEDY)
            assert result.reused == same and loop.checkpoints is None
            _matches_fresh(loop, Path(llm.model_path), edited, result)
    finally:
        llm.close()


def _chat_two_turns(path: Path) -> tuple[list[str], list[Done]]:
    """A two-turn chat with thinking through the engine: the second prompt holds the first answer (its thinking
    dropped by the template). (The prompts, how each went.)"""
    template = ChatTemplate(read_model_info(path).chat_template)
    rec = Recorder()
    eng = Engine(rec).start()
    try:
        eng.load(LoadRequest(path, n_ctx=1024))
        assert isinstance(rec.until(Loaded)[0][-1], Loaded)
        turns = [Turn("user", "what is blue?")]
        prompts, dones = [], []
        for request_id in (1, 2):
            prompt = build_prompt(template, turns, enable_thinking=True)
            prompts.append(prompt)
            eng.generate(GenerateRequest(request_id, prompt, Sampling(temperature=0.0, top_k=1, max_tokens=24)))
            done = rec.until(Done)[0][-1]
            assert isinstance(done, Done)
            dones.append(done)
            turns += [Turn("assistant", done.answer or "Blue.", thinking=done.thinking), Turn("user", "and red?")]
        return prompts, dones
    finally:
        eng.shutdown()


def test_a_thinking_chat_through_the_engine_reads_its_history_once(tiny_hybrid_models: dict[str, Path]) -> None:
    """The second turn evaluates only from where the first answer begins, and answers as a fresh context would."""
    path = tiny_hybrid_models["qwen35"]
    prompts, (first, second) = _chat_two_turns(path)
    llm = _llama(path)
    try:
        at = _turn_start(llm, _tokens(llm, prompts[0]))
    finally:
        llm.close()
    assert first.prompt_evaluated == first.prompt_tokens
    assert second.prompt_evaluated == second.prompt_tokens - at
    rec = Recorder()
    eng = Engine(rec).start()  # the same second prompt on a fresh engine
    try:
        eng.load(LoadRequest(path, n_ctx=1024))
        assert isinstance(rec.until(Loaded)[0][-1], Loaded)
        template = ChatTemplate(read_model_info(path).chat_template)
        answer = first.answer or "Blue."
        prompt = build_prompt(template, [Turn("user", "what is blue?"), Turn("assistant", answer,
                              thinking=first.thinking), Turn("user", "and red?")], enable_thinking=True)
        eng.generate(GenerateRequest(3, prompt, Sampling(temperature=0.0, top_k=1, max_tokens=24)))
        fresh = rec.until(Done)[0][-1]
        assert isinstance(fresh, Done) and fresh.prompt_evaluated == fresh.prompt_tokens == second.prompt_tokens
        assert (fresh.thinking, fresh.answer, fresh.completion_tokens) == (
            second.thinking, second.answer, second.completion_tokens)
    finally:
        eng.shutdown()
