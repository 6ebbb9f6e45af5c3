"""The reference the recurrent-model tests compare with: the same prompt in a fresh llama.cpp context, greedy,
and the logits its last token left (the tests of reuse and of context checkpoints share it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qwen_chat.engines.decode_loop import DecodeLoop, Generation, SamplerParams

GREEDY = SamplerParams(temperature=0.0)


def llama(path: Path, n_ctx: int = 512) -> Any:
    """A llama_cpp.Llama on `path` (imported late, as the engine does)."""
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, n_threads_batch=2, verbose=False)


def loaded(path: Path) -> Iterator[tuple[Any, DecodeLoop]]:
    """A model and a DecodeLoop on it, closed after (the body of the tests' module-scoped fixtures)."""
    llm = llama(path)
    loop = DecodeLoop(llm)
    yield llm, loop
    loop.close()
    llm.close()


def tokens(llm: Any, text: str) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def logits(loop: DecodeLoop) -> np.ndarray:
    """The logits of the last token llama.cpp evaluated (the prompt's last, after a 1-token generation)."""
    import llama_cpp.llama_cpp as C  # noqa: N812

    return np.ctypeslib.as_array(C.llama_get_logits_ith(loop._ctx, -1), shape=(loop._n_vocab,)).copy()


def answer(loop: DecodeLoop, prompt: list[int], result: Generation) -> list[int]:
    return loop.tokens[len(prompt):] + ([result.pending] if result.pending is not None else [])


def fresh(path: Path, prompt: list[int], max_tokens: int) -> tuple[list[int], np.ndarray]:
    """Greedy tokens after `prompt` and the prompt's last logits, from a new context: the reference."""
    llm = llama(path)
    try:
        with DecodeLoop(llm) as loop:
            loop.generate(prompt, 1, GREEDY)
            last = logits(loop)
            loop.clear()
            result = loop.generate(prompt, max_tokens, GREEDY)
            return answer(loop, prompt, result), last
    finally:
        llm.close()
