"""Speculative decoding (engines/drafting.py, speculative.py, the decode loop): drafts never change the answer.

Prompt lookup and the adaptive draft length as units; then real llama.cpp: the same seed gives the same token ids
with drafting on and off (tiny random-weight qwen3 models driven by an oracle that drafts the known answer with
mistakes in it, and the real 0.5B model drafting from a text it is asked to repeat, greedy and at temperature 0.7,
each with an assert that drafts were accepted); a stop during drafted batches; KV reuse after a drafted answer.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from qwen_chat.engines.decode_loop import DecodeLoop, Generation, SamplerParams
from qwen_chat.engines.drafting import DraftLength, PromptLookup
from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Done, GenerateRequest, LoadRequest, Token
from qwen_chat.gguf.files import read_model_info
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt

from helpers import Recorder, events_until, loaded_engine

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
STEADY = functools.partial(DraftLength, pause=0)  # never rests: these tests are about what is written, not speed
TEXT = ("The keeper wrote the weather, the ships that passed, and the birds that struck the lantern at night. "
        "His entries are short and plain, but over forty years they add up to a portrait of a coast that changed "
        "slowly and then all at once.")
GREEDY = SamplerParams(temperature=0.0)
WARM = SamplerParams(temperature=0.7, top_k=20, top_p=0.8, min_p=0.0, seed=11)


# ---- prompt lookup --------------------------------------------------------------------------------------


def test_lookup_proposes_what_followed_the_last_tokens_earlier() -> None:
    lookup = PromptLookup(max_n=3, min_n=1)
    context = [5, 6, 7, 8, 9, 10, 1, 2, 5, 6, 7]
    assert lookup.propose(context, 3) == [8, 9, 10]
    assert lookup.propose(context, 0) == []
    assert lookup.propose([*context, 8], 2) == [9, 10]  # the context grew by the accepted token


def test_lookup_prefers_the_longest_match_then_the_latest() -> None:
    lookup = PromptLookup(max_n=3, min_n=1)
    # "7" alone was last followed by 4, but "6 7" (a longer match) by 8
    assert lookup.propose([6, 7, 8, 1, 7, 4, 2, 6, 7], 1) == [8]
    lookup = PromptLookup(max_n=2, min_n=1)
    assert lookup.propose([1, 2, 3, 9, 1, 2, 4, 9, 1, 2], 1) == [4]  # the latest of two equal matches


def test_lookup_keeps_copying_from_where_its_last_draft_came_from() -> None:
    source = [10, 5, 6, 20, 5, 6, 30, 40]  # "5 6" occurs twice: last followed by 30
    lookup = PromptLookup(max_n=2, min_n=1)
    assert lookup.propose([*source, 10], 1) == [5]
    # the answer went on as the source did (5, then 6): the copy goes on at 20, not at the latest "5 6"
    assert lookup.propose([*source, 10, 5, 6], 1) == [20]
    # once it leaves the source, plain lookup again: "5 6 9"? nothing follows "6 9", "9" is new
    assert lookup.propose([*source, 10, 5, 6, 9], 1) == []
    assert PromptLookup(max_n=2, min_n=1).propose([*source, 10, 5, 6], 1) == [30]  # without the history


def test_lookup_finds_nothing_without_a_match_of_min_n() -> None:
    lookup = PromptLookup(max_n=3, min_n=2)
    assert lookup.propose([1, 2, 3, 4, 3], 4) == []  # "3" alone recurs, but one token is below min_n
    assert lookup.propose([], 4) == [] and lookup.propose([1], 4) == []
    with pytest.raises(ValueError, match="min_n"):
        PromptLookup(max_n=1, min_n=2)


def test_lookup_follows_a_context_that_changed_rather_than_grew() -> None:
    lookup = PromptLookup(max_n=2, min_n=2)
    assert lookup.propose([1, 2, 3, 4, 1, 2], 2) == [3, 4]
    # another conversation: nothing of the old index may be proposed
    assert lookup.propose([7, 8, 9, 1, 2], 2) == []
    assert lookup.propose([7, 8, 9, 1, 2, 5, 7, 8], 2) == [9, 1]


class _Counting(Sequence[int]):
    """A context that counts how many of its tokens are read."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.reads = 0

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        got = self.tokens[index]
        self.reads += len(got) if isinstance(got, list) else 1
        return got


def test_lookup_costs_the_same_per_call_for_a_long_context() -> None:
    """After the first call a 32K-token context is not read again: only the tokens added since, and a few checks."""
    tokens = [(i * 7919) % 5000 for i in range(32_000)]
    context = _Counting(tokens)
    lookup = PromptLookup()
    lookup.propose(context, 8)
    assert context.reads >= 32_000  # indexed once
    for step in range(20):
        tokens.append(tokens[step * 100])
        context.reads = 0
        lookup.propose(context, 8)
        assert context.reads < 20, f"call {step} read {context.reads} tokens"


# ---- draft length ---------------------------------------------------------------------------------------


def test_draft_length_grows_on_full_acceptance_and_shrinks_on_rejection() -> None:
    length = DraftLength(start=4, high=16)
    length.record(4, 4, 0.01, 0.02)
    assert length.next_limit() == 8
    length.record(8, 8, 0.01, 0.02)
    length.record(16, 16, 0.01, 0.02)
    assert length.next_limit() == 16  # capped
    length.record(16, 2, 0.01, 0.02)
    assert length.next_limit() == 3  # what was accepted, and one more
    length.record(3, 0, 0.01, 0.02)
    assert length.next_limit() == 1


def test_draft_length_rests_when_batches_lose_time_and_probes_again() -> None:
    length = DraftLength(window=4, pause=10)
    for _ in range(4):  # nothing accepted, each batch slower than the token it gave
        length.record(2, 0, 0.03, 0.02)
    assert length.next_limit() == 0
    length.rested(9)
    assert length.next_limit() == 0
    length.rested(1)
    assert length.next_limit() > 0  # probing again
    for _ in range(4):
        length.record(2, 0, 0.03, 0.02)
    length.rested(19)
    assert length.next_limit() == 0  # failed again: rests twice as long
    length.rested(1)
    assert length.next_limit() > 0


# ---- the decode loop on tiny models ---------------------------------------------------------------------


class Oracle:
    """Drafts the known answer after the prompt, with every third draft wrong in its second token."""

    def __init__(self, prompt: list[int], answer: list[int]) -> None:
        self.prompt, self.answer, self.calls = prompt, answer, 0

    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        done = len(context) - len(self.prompt)
        if list(context[len(self.prompt):]) != self.answer[:done]:
            return []
        self.calls += 1
        draft = list(self.answer[done:done + limit])
        if self.calls % 3 == 0 and len(draft) > 1:
            draft[1] = (draft[1] + 1) % 256
        return draft


def _llama(path: Path, n_ctx: int = 1024):  # type: ignore[no-untyped-def]
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, n_threads_batch=2, verbose=False)


def _answer(loop: DecodeLoop, prompt: list[int], params: SamplerParams,
            max_tokens: int) -> tuple[list[int], Generation]:
    loop.clear()
    result = loop.generate(prompt, max_tokens, params)
    return loop.tokens[len(prompt):] + ([result.pending] if result.pending is not None else []), result


@pytest.mark.parametrize("params", [GREEDY, SamplerParams(temperature=0.9, top_k=40, top_p=0.95, seed=5)],
                         ids=["greedy", "temperature"])
def test_tiny_model_gives_the_same_tokens_with_drafts(tiny_models: dict[str, Path], params: SamplerParams) -> None:
    llm = _llama(tiny_models["hybrid"])
    try:
        with DecodeLoop(llm) as loop:
            prompt = llm.tokenize(CHAT.format("hello there").encode(), add_bos=False, special=True)
            plain, plain_result = _answer(loop, prompt, params, 80)
            oracle = Oracle(prompt, plain)
            loop.speculator.sources, loop.speculator.new_length = [oracle], STEADY
            drafted, result = _answer(loop, prompt, params, 80)
            assert drafted == plain and result.finish == plain_result.finish
            stats = result.drafting
            assert stats.accepted > 10 and stats.accepted < stats.drafted, stats  # drafts held, and some did not
            assert loop.n_cached == len(prompt) + len(plain) - 1  # rejected drafts left no cells behind
            assert plain_result.drafting.batches == 0
    finally:
        llm.close()


def test_hybrid_recurrent_models_do_not_draft_and_say_so(tiny_hybrid_models: dict[str, Path]) -> None:
    name = next(iter(tiny_hybrid_models))
    llm = _llama(tiny_hybrid_models[name])
    try:
        with DecodeLoop(llm, drafts=[PromptLookup()]) as loop:
            assert loop.recurrent
            prompt = llm.tokenize(CHAT.format("hi hi hi hi").encode(), add_bos=False, special=True)
            _tokens, result = _answer(loop, prompt, GREEDY, 8)
            assert result.drafting.batches == 0 and "recurrent" in result.drafting.off
    finally:
        llm.close()


# ---- the real model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_loop(real_model: Path) -> Iterator[tuple[object, DecodeLoop]]:
    llm = _llama(real_model, n_ctx=2048)
    loop = DecodeLoop(llm)
    loop.speculator.new_length = STEADY
    yield llm, loop
    loop.close()
    llm.close()


@pytest.mark.parametrize("params", [GREEDY, WARM], ids=["greedy", "temperature-0.7"])
def test_real_model_gives_the_same_tokens_with_prompt_lookup(real_loop, params: SamplerParams) -> None:
    llm, loop = real_loop
    prompt = llm.tokenize(CHAT.format("Repeat this text exactly:\n\n" + TEXT).encode(), add_bos=False,
                          special=True)
    loop.speculator.sources = []
    plain, plain_result = _answer(loop, prompt, params, 80)
    loop.speculator.sources = [PromptLookup()]
    drafted, result = _answer(loop, prompt, params, 80)
    assert drafted == plain and result.finish == plain_result.finish
    assert result.drafting.accepted >= 20, result.drafting  # the repeated text was drafted, and it held


# ---- the engine -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(real_model: Path) -> Iterator[tuple[Engine, Recorder]]:
    with loaded_engine(LoadRequest(real_model, n_ctx=4096, n_threads=2, n_threads_batch=2)) as (eng, recorder, _):
        eng._model.loop.speculator.new_length = STEADY
        yield eng, recorder


def _prompt(model: Path, *turns: str) -> str:
    template = ChatTemplate(read_model_info(model).chat_template)
    roles = ["user", "assistant"]
    return build_prompt(template, [Turn(roles[i % 2], t) for i, t in enumerate(turns)], enable_thinking=False)


def test_stop_during_drafted_batches_is_fast_and_keeps_what_was_shown(engine, real_model: Path) -> None:
    eng, rec = engine
    lookup = eng._model.loop.speculator.sources[0]  # the engine's PromptLookup, watched to stop inside drafting
    drafts: list[float] = []
    original = lookup.propose

    def watched(context: Sequence[int], limit: int) -> list[int]:
        draft = original(context, limit)
        if draft:
            drafts.append(time.perf_counter())
        return draft

    lookup.propose = watched  # type: ignore[method-assign]
    asked: list[float] = []

    def stop() -> None:
        asked.append(time.perf_counter())
        eng.stop()

    try:
        eng.generate(GenerateRequest(1, _prompt(real_model, "Repeat this text exactly:\n\n" + TEXT * 3),
                                     Sampling(temperature=0.0, max_tokens=300, seed=1)))
        before = events_until(rec.events, lambda _item: len(drafts) >= 3, timeout=120, what="three drafts")
        threading.Timer(0.005, stop).start()  # lands inside the batch being verified, or just after it
        after, at = rec.until(Done)
    finally:
        lookup.propose = original  # type: ignore[method-assign]
    done = after[-1]
    assert isinstance(done, Done) and done.finish == "stopped"
    assert done.drafting is not None and done.drafting.accepted > 0
    assert at - asked[0] < 0.2, f"stop took {at - asked[0]:.3f}s"
    shown = "".join(e.text for e in [event for _t, event in before] + after if isinstance(e, Token))
    assert done.answer == shown and shown  # everything the user saw is kept, nothing more


def test_kv_reuse_after_a_drafted_answer_evaluates_only_the_new_message(engine, real_model: Path) -> None:
    eng, rec = engine
    question = "Repeat this text exactly:\n\n" + TEXT
    eng.generate(GenerateRequest(2, _prompt(real_model, question), Sampling(temperature=0.0, max_tokens=120, seed=1)))
    first = rec.until(Done)[0][-1]
    assert isinstance(first, Done) and first.drafting is not None and first.drafting.accepted > 10, first.drafting
    follow_up = "Now say it in one short sentence."
    eng.generate(GenerateRequest(3, _prompt(real_model, question, first.answer, follow_up),
                                 Sampling(temperature=0.0, max_tokens=10, seed=1)))
    second = rec.until(Done)[0][-1]
    assert isinstance(second, Done)
    new_tokens = second.prompt_tokens - first.prompt_tokens - first.completion_tokens
    assert second.prompt_evaluated <= new_tokens + 3, (second.prompt_evaluated, new_tokens)


# ---- the setting ----------------------------------------------------------------------------------------


def test_engine_speculative_setting_is_read_and_checked() -> None:
    from qwen_chat.config.engine_settings import load_engine_settings
    from qwen_chat.config.settings import settings_path

    assert load_engine_settings().speculative is True  # no file: on
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[engine]\nspeculative = false\n", encoding="utf-8")
    assert load_engine_settings().speculative is False
    path.write_text('[engine]\nspeculative = "no"\n', encoding="utf-8")
    problems: list[str] = []
    assert load_engine_settings(problems).speculative is True
    assert any("engine.speculative: must be true or false" in p for p in problems), problems


def test_figures_are_told_in_words_for_the_status_bar_and_ask_verbose() -> None:
    from qwen_chat.cli.ask import speeds
    from qwen_chat.engines.protocol import Drafting

    drafting = Drafting(drafted=200, accepted=150, batches=40, speedup=2.04)
    assert drafting.short() == "drafts 75% 2.0x"
    assert drafting.tokens_per_batch == pytest.approx(4.75)
    done = Done(1, "stop", "", "answer", False, False, prompt_tokens=300, prompt_evaluated=250,
                completion_tokens=190, prompt_seconds=2.0, generation_seconds=2.0, context_used=489, n_ctx=4096,
                tokens_per_second=95.0, drafting=drafting)
    line = speeds(done)
    assert "250 evaluated at 125.0 tok/s" in line and "190 tokens at 95.0 tok/s" in line
    assert "150 of 200 drafted tokens accepted (75%), 4.8 tokens per batch in 40 batches, about 2.04x" in line
    assert Drafting().short() == "" and "recurrent" in Drafting(off="a hybrid or recurrent model").describe()
