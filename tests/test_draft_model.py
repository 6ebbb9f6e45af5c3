"""The draft model (engines/draft_model.py) on real llama.cpp: two tiny random-weight qwen3 models that share one
vocabulary, a "target" and a smaller "draft". Weights at scale 0.1, so that greedy text depends on the context."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterator
from pathlib import Path

import llama_cpp.llama_cpp as C  # noqa: N812
import pytest

from qwen_chat.engines.decode_loop import DecodeLoop, SamplerParams
from qwen_chat.engines.draft_model import DraftModel, open_draft
from qwen_chat.engines.drafting import DraftLength
from qwen_chat.engines.protocol import DraftLoad, LoadRequest
from qwen_chat.system.logging_setup import llama_cpp_library

from tiny_models import write_tiny_qwen3

N_CTX = 512
GREEDY = SamplerParams(temperature=0.0, seed=7)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 4-layer target and a 2-layer draft with the same (tiny) vocabulary."""
    folder = tmp_path_factory.mktemp("draft-pair")
    return {"target": write_tiny_qwen3(folder / "target.gguf", layers=4, seed=11, scale=0.1),
            "draft": write_tiny_qwen3(folder / "draft.gguf", layers=2, seed=12, scale=0.1)}


def _load(path: Path, min_confidence: float = 0.0, n_ctx: int = N_CTX) -> DraftModel:
    llama_cpp = llama_cpp_library()

    @llama_cpp.llama_progress_callback
    def progress(_fraction: float, _data: ctypes.c_void_p) -> bool:
        return True

    return open_draft(DraftLoad(path, n_ctx), LoadRequest(path, n_ctx, n_threads=1), progress,
                      min_confidence=min_confidence)


@pytest.fixture(scope="module")
def draft(pair: dict[str, Path]) -> Iterator[DraftModel]:
    model = _load(pair["draft"])
    yield model
    model.close()


@pytest.fixture(scope="module")
def reference(pair: dict[str, Path]) -> Iterator[DecodeLoop]:
    """The draft file in a plain decode loop: its own greedy text, to compare the proposals with."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(pair["draft"]), n_ctx=N_CTX, n_threads=1, n_threads_batch=1, verbose=False)
    loop = DecodeLoop(llm)
    yield loop
    loop.close()
    llm.close()


def _greedy(loop: DecodeLoop, context: list[int], n: int) -> list[int]:
    loop.clear()
    result = loop.generate(context, n, GREEDY)
    return loop.tokens[len(context):] + ([result.pending] if result.pending is not None else [])


def _held(model: DraftModel) -> int:
    """Positions llama.cpp itself holds for the draft's sequence 0."""
    return int(C.llama_memory_seq_pos_max(C.llama_get_memory(model._ctx), 0)) + 1


def _context(seed: int, n: int = 24) -> list[int]:
    return [(seed * 37 + i * 11) % 256 for i in range(n)]  # byte tokens: any id below 256 is text


def test_proposals_are_the_draft_models_own_greedy_continuation(draft: DraftModel, reference: DecodeLoop) -> None:
    context = _context(1)
    proposal = draft.propose(context, 8)
    assert proposal == _greedy(reference, context, 8)
    assert len(proposal) == 8
    # the cache holds the context and every proposed token but the last (its logits were never needed)
    assert draft.tokens == context + proposal[:-1]
    assert _held(draft) == len(context) + 7


def test_after_a_rollback_the_cache_matches_the_new_context(draft: DraftModel, reference: DecodeLoop) -> None:
    context = _context(2)
    first = draft.propose(context, 6)
    # the target accepted two of them and sampled another token in place of the third
    other = next(t for t in range(256) if t != first[2])
    after = context + first[:2] + [other]
    second = draft.propose(after, 6)
    assert second == _greedy(reference, after, 6), "a stale cell from the rejected draft would change these"
    assert draft.tokens[:len(after)] == after
    assert _held(draft) == len(draft.tokens)
    # an earlier edit (the user changed the question) drops everything after it
    edited = _context(3, 5) + context[5:]
    assert draft.propose(edited, 4) == _greedy(reference, edited, 4)
    assert _held(draft) == len(draft.tokens) == len(edited) + 3


def test_a_context_it_cannot_hold_gets_no_proposal(draft: DraftModel) -> None:
    assert draft.propose(_context(4, N_CTX - 2), 4) == []  # with the proposal it would pass its context
    assert draft.propose([draft.n_vocab + 5], 4) == []  # an id outside its vocabulary
    assert draft.propose(_context(4), 0) == []
    assert draft.propose(_context(5), 3), "it still drafts after refusing"


def test_an_unsure_draft_proposes_less(pair: dict[str, Path]) -> None:
    """Random weights spread the probability thin: above llama.cpp's p-min of 0.75 nothing is confident."""
    unsure = _load(pair["draft"], min_confidence=0.75)
    try:
        assert unsure.propose(_context(6), 8) == []
    finally:
        unsure.close()


def test_a_stop_cuts_a_long_catch_up(pair: dict[str, Path]) -> None:
    llama_cpp = llama_cpp_library()

    @llama_cpp.llama_progress_callback
    def progress(_fraction: float, _data: ctypes.c_void_p) -> bool:
        return True

    stop = [True]
    model = open_draft(DraftLoad(pair["draft"], N_CTX), LoadRequest(pair["draft"], N_CTX, n_threads=1), progress,
                       should_stop=lambda: stop[0], min_confidence=0.0)
    try:
        assert model.propose(_context(7, 300), 4) == []
        assert _held(model) == len(model.tokens) < 300  # the record still matches what llama.cpp holds
        stop[0] = False
        assert len(model.propose(_context(7, 300), 4)) == 4
    finally:
        model.close()


# ---- in the decode loop: the same answer, faster or not -----------------------------------------------------


@pytest.fixture(scope="module")
def targets(pair: dict[str, Path]) -> Iterator[list[object]]:
    """Two copies of the target: one decodes alone, one with a draft model."""
    import llama_cpp

    llms = [llama_cpp.Llama(model_path=str(pair["target"]), n_ctx=N_CTX, n_threads=1, n_threads_batch=1,
                            verbose=False) for _ in range(2)]
    yield llms
    for llm in llms:
        llm.close()


def _answer(loop: DecodeLoop, prompt: list[int], params: SamplerParams) -> list[int]:
    loop.clear()
    result = loop.generate(prompt, 40, params)
    return loop.tokens[len(prompt):] + ([result.pending] if result.pending is not None else [])


@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("drafter", ["draft", "target"])
def test_the_answer_is_the_same_with_and_without_the_draft_model(pair: dict[str, Path], targets: list[object],
                                                                 drafter: str, temperature: float) -> None:
    """"draft": a different small model (most drafts rejected); "target": the model drafting for itself (most
    accepted). Either way the tokens are those of plain decoding with the same seed."""
    model = _load(pair[drafter])
    plain, drafted = DecodeLoop(targets[0]), DecodeLoop(targets[1], drafts=[model])
    drafted.speculator.new_length = functools.partial(DraftLength, pause=0)  # never rests: no timing
    try:
        params = SamplerParams(temperature=temperature, top_k=20, top_p=0.95, min_p=0.0, seed=5)
        proposed = accepted = 0
        for seed in (8, 9):  # the second answer starts from the first one's caches
            prompt = _context(seed)
            assert _answer(drafted, prompt, params) == _answer(plain, prompt, params)
            stats = drafted.speculator.stats()
            proposed, accepted = proposed + stats.drafted, accepted + stats.accepted
        assert proposed > 0, "the draft model was asked and proposed"  # (rejected ones rest it for a while)
        if drafter == "target" and temperature == 0.0:
            assert accepted > proposed // 2, (accepted, proposed)
    finally:
        plain.close()
        drafted.close()
        model.close()
