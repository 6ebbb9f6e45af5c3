"""llama-cpp-python 0.3.36's sampler chain on llama.cpp's C API, and the settings it takes.

The decode loop samples with it one token at a time, and speculative decoding samples every position of a
verified batch with the same chain, so both give the tokens create_completion gives for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import llama_cpp.llama_cpp as C  # noqa: N812 (the C API, named like its header)

PENALTY_LAST_N = 64  # llama-cpp-python's default `last_n_tokens_size`: penalties see the last 64 generated tokens


@dataclass(frozen=True)
class SamplerParams:
    """What create_completion takes for sampling (defaults as llama-cpp-python's)."""

    temperature: float = 0.8  # 0: greedy; below 0: plain random sampling over the whole vocabulary
    top_k: int = 40  # 0: off
    top_p: float = 0.95
    min_p: float = 0.05
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None  # None: a random seed (llama.cpp's LLAMA_DEFAULT_SEED)
    penalty_last_n: int = PENALTY_LAST_N



def sampler_chain(params: SamplerParams, n_vocab: int) -> Any:
    """llama-cpp-python 0.3.36's chain (`Llama._init_sampler`): penalties, then greedy (temperature 0), plain
    random (below 0), or top-k, typical (p=1: a no-op, kept for the same order), top-p, min-p, temperature, dist.

    Penalties over the whole vocabulary cost ~0.3 ms a token (a hash lookup per candidate). When they can only
    lower logits and top-k follows, a top-k of k + penalty_last_n first gives the same result: at most that many
    tokens are penalized, so every token of the final top-k is within it. Not done where it could change a result.
    (Only the order of candidates whose logits tie exactly can differ, as sorting puts them; tested to give
    create_completion's tokens in tests/test_decode_loop.py.)
    """
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        C.llama_sampler_chain_add(chain, sampler)

    temperature = params.temperature
    seed = C.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
    top_k_follows = temperature == 0 or (temperature > 0 and params.top_k > 0)  # greedy is a top-1
    if top_k_follows and _penalties_active(params) and _penalties_only_lower(params):
        add(C.llama_sampler_init_top_k((1 if temperature == 0 else params.top_k) + params.penalty_last_n))
    add(C.llama_sampler_init_penalties(n_vocab, params.penalty_last_n, params.repeat_penalty,
                                       params.frequency_penalty, params.presence_penalty))
    if temperature < 0:
        add(C.llama_sampler_init_dist(seed))
    elif temperature == 0:
        add(C.llama_sampler_init_greedy())
    else:
        add(C.llama_sampler_init_top_k(params.top_k))
        add(C.llama_sampler_init_typical(1.0, 1))
        add(C.llama_sampler_init_top_p(params.top_p, 1))
        add(C.llama_sampler_init_min_p(params.min_p, 1))
        add(C.llama_sampler_init_temp(temperature))
        add(C.llama_sampler_init_dist(seed))
    return chain


def _penalties_active(params: SamplerParams) -> bool:
    """What llama.cpp's penalties sampler checks before doing anything."""
    return params.penalty_last_n != 0 and not (
        params.repeat_penalty == 1.0 and params.frequency_penalty == 0.0 and params.presence_penalty == 0.0)


def _penalties_only_lower(params: SamplerParams) -> bool:
    """Repeat >= 1 divides positive / multiplies negative logits, the other two subtract: all only lower logits."""
    return params.repeat_penalty >= 1.0 and params.frequency_penalty >= 0.0 and params.presence_penalty >= 0.0
