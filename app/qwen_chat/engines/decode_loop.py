"""A tight generation loop on llama.cpp's C API, for an already loaded `llama_cpp.Llama`.

Why not `Llama.create_completion(stream=True)`: around each ~16 ms `llama_decode` it does Python work that
llama.cpp's own tools do not (it re-detokenizes the whole completion on every token, so more per token the longer
the answer; it fills its batch in a Python loop), and it applies the presence penalty to all 150k candidates. On
the 0.5B test model with 2 threads it ran at 0.983 of its own llama_decode time for 128 tokens, 0.963 with
presence penalty 1.5 (bench/engine_vs_llamacpp.py); the engine on this loop at 0.988 either way. Here a token costs
one `llama_sampler_sample` (~0.1 ms of it), one `llama_decode` and an incremental UTF-8 decode of its bytes.

The loop keeps its own record of the tokens in the KV cache (sequence 0): a new prompt that starts like the
previous one (the chat history) evaluates only what differs; on a recurrent or hybrid model (Qwen3-Next,
Qwen3.5), whose state cannot be rolled back, only a prompt that continues the whole record does, or one that
agrees with it up to a context checkpoint, a saved state at the start of an earlier prompt's last turn
(checkpoints.py). It mirrors
that record into the `Llama` object's `input_ids` / `n_tokens`, so llama-cpp-python's own calls on the same
object stay correct, and it adopts llama-cpp-python's record when one of those ran in between.

Sampling is the chain llama-cpp-python 0.3.36 builds in `Llama._init_sampler` (same samplers, same order, same
seed handling), so a seed gives the same tokens; the only change is a cheaper way to apply repetition penalties
before top-k that keeps the same candidates (see `sampler_chain`, sampler_chain.py).
"""

from __future__ import annotations

import codecs
import ctypes
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp.llama_cpp as C  # noqa: N812 (the C API, named like its header)

from qwen_chat.engines.checkpoints import Checkpoints, turn_start_token
from qwen_chat.engines.drafting import DraftSource
from qwen_chat.engines.llama_setup import common_prefix, fill_batch
from qwen_chat.engines.protocol import Drafting
from qwen_chat.engines.sampler_chain import SamplerParams, sampler_chain
from qwen_chat.engines.speculative import Speculator

__all__ = ["DecodeError", "DecodeLoop", "Generation", "OnToken", "SamplerParams"]

# Below this per-token decode time the abort callback is left off while generating: `should_stop` between tokens
# is then soon enough, and llama.cpp does not have to call into Python (taking the GIL) after every graph node.
SLOW_TOKEN_SECONDS = 0.05
_DECODE_ABORTED = 2  # llama_decode: the abort callback returned true (processed ubatches stay in the cache)
_DECODE_NO_SLOT = 1  # llama_decode: no room in the KV cache for the batch
_RECURRENT_NO_DRAFTS = "a hybrid or recurrent model: its state cannot drop a rejected draft"
_ANSWER_NO_DRAFTS = "off for this answer: turned off in F5 / [engine] speculative = false"


class DecodeError(RuntimeError):
    """llama_decode failed for a reason other than our own abort."""


@dataclass
class Generation:
    """How one `DecodeLoop.generate` call went."""

    prompt_tokens: int
    reused: int  # prompt tokens that were already in the KV cache (not evaluated again)
    finish: str = "stop"  # "stop" (end-of-generation token), "length" (max_tokens), "stopped" (abort / should_stop)
    generated: int = 0  # tokens sampled, an end-of-generation token included
    pending: int | None = None  # the last sampled token when it was never evaluated (EOG, max_tokens, stopped)
    drafting: Drafting = field(default_factory=Drafting)  # speculative decoding's figures (speculative.py)

    @property
    def prompt_evaluated(self) -> int:
        return self.prompt_tokens - self.reused


OnToken = Callable[[str, int], None]  # (text the token completes, tokens sampled so far); text may be ""


def _never() -> bool:
    return False


def _ignore(_text: str, _generated: int) -> None:
    pass


class DecodeLoop:
    """Generates with one `Llama` object; not thread-safe (one engine thread owns it)."""

    def __init__(self, llm: Any, abort_callback: Any = None, drafts: Sequence[DraftSource] = ()) -> None:
        """`abort_callback`: the ctypes `ggml_abort_callback` set on the context, armed by this loop where a stop
        must cut into llama_decode (prompt evaluation, slow tokens) and disarmed where it need not. `drafts`: the
        sources speculative decoding drafts from (speculative.py), in order of preference; none: it does not."""
        self._llm = llm
        self._ctx = llm._ctx.ctx
        self._vocab = llm._model.vocab
        self._memory = C.llama_get_memory(self._ctx)
        self._n_ctx = int(C.llama_n_ctx(self._ctx))
        self._n_batch = int(C.llama_n_batch(self._ctx))
        self._n_vocab = int(C.llama_vocab_n_tokens(self._vocab))
        self._batch: Any = C.llama_batch_init(self._n_batch, 0, 1)
        for i in range(self._n_batch):  # every token we decode is in sequence 0 only
            self._batch.n_seq_id[i] = 1
            self._batch.seq_id[i][0] = 0
        self._abort = abort_callback
        self._armed: bool | None = None
        model = llm._model.model
        # Recurrent and hybrid models (Qwen3-Next, Qwen3.5) hold a state for the last position only: see _keep_prefix
        self.recurrent = bool(C.llama_model_is_recurrent(model) or C.llama_model_is_hybrid(model))
        self.checkpoints = Checkpoints(self._ctx, self._memory, turn_start_token(llm)) if self.recurrent else None
        self._ids: list[int] = []
        # a recurrent state cannot drop a rejected draft's tokens (see _keep_prefix): such a model never drafts
        self.speculator = Speculator(list(drafts), _RECURRENT_NO_DRAFTS if self.recurrent else "")
        self._pieces: dict[int, bytes] = {}
        self._piece_buffer = ctypes.create_string_buffer(64)

    # -- the record of the KV cache --

    @property
    def tokens(self) -> list[int]:
        """The token ids now in the KV cache (sequence 0), in order."""
        return list(self._ids)

    @property
    def n_cached(self) -> int:
        return len(self._ids)

    @property
    def ctx(self) -> Any:
        return self._ctx

    @property
    def vocab(self) -> Any:
        return self._vocab

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def n_batch(self) -> int:
        return self._n_batch

    def drop_after(self, keep: int) -> None:
        """Remove the cache's tokens from position `keep` on (a rejected draft; attention models only)."""
        if keep < len(self._ids):
            C.llama_memory_seq_rm(self._memory, 0, keep, -1)
            del self._ids[keep:]

    def clear(self) -> None:
        """Empty the KV cache (the next prompt is evaluated in full)."""
        C.llama_memory_seq_rm(self._memory, 0, -1, -1)
        self._ids = []
        if self.checkpoints is not None:
            self.checkpoints.clear()
        self._mirror(0)

    def close(self) -> None:
        if self._batch is not None:
            C.llama_batch_free(self._batch)
            self._batch = None

    def __enter__(self) -> DecodeLoop:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- generation --

    def generate(self, prompt: Sequence[int], max_tokens: int, params: SamplerParams,
                 on_token: OnToken | None = None, should_stop: Callable[[], bool] | None = None,
                 drafting: bool = True) -> Generation:
        """Evaluate `prompt` (reusing the cached prefix) and sample up to `max_tokens` tokens after it.

        `on_token` runs for every sampled token, the end-of-generation one included (with ""); `should_stop` is
        asked after each, and the abort callback covers the time inside llama_decode. `drafting` False: one token
        at a time even where the loop has draft sources (the answer's own switch, GenerateRequest.drafting).
        """
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError("the prompt is empty: there are no logits to sample from")
        if len(prompt) >= self._n_ctx:
            raise DecodeError(f"the prompt ({len(prompt)} tokens) does not fit the context ({self._n_ctx} tokens)")
        room = self._n_ctx - len(prompt)
        max_tokens = room if max_tokens <= 0 else min(max_tokens, room)  # as create_completion caps it
        self._adopt_foreign_record()
        result = Generation(prompt_tokens=len(prompt), reused=0)
        sampler = sampler_chain(params, self._n_vocab)
        self.speculator.begin()
        try:
            result.reused = self._keep_prefix(prompt)
            split = self.checkpoints.split_at(prompt) if self.checkpoints is not None else None
            if not self._evaluate_prompt(prompt[result.reused:], split):
                result.finish = "stopped"
            elif self.speculator.enabled and drafting:
                self.speculator.run(self, sampler, max_tokens, result, on_token or _ignore, should_stop or _never)
            else:
                self._sample(sampler, max_tokens, result, on_token or _ignore, should_stop or _never)
        finally:
            C.llama_sampler_free(sampler)
            result.drafting = self.speculator.stats() if drafting else Drafting(off=_ANSWER_NO_DRAFTS)
            self._mirror(result.reused)  # also after an error: llama-cpp-python must not trust a stale record
        return result

    def _keep_prefix(self, prompt: list[int]) -> int:
        """Drop from the cache what differs from `prompt`; returns how many prompt tokens stay. At least the last
        prompt token is evaluated again: its logits are what the first sample needs. On a recurrent model the
        cache stays when `prompt` continues all of it, else back to the latest checkpoint within the common
        prefix, else none of it (an edit before every checkpoint, a trim start over)."""
        keep = min(common_prefix(self._ids, prompt), len(prompt) - 1)
        if self.recurrent and keep < len(self._ids):
            # A recurrent state cannot go back to an earlier position (llama.cpp rolls back only with n_rs_seq
            # snapshots, which Llama() leaves at 0): only a saved one can replace it (0: none, or it failed).
            keep = self.checkpoints.restore(prompt, keep) if self.checkpoints is not None else 0
        elif keep > 0 and not C.llama_memory_seq_rm(self._memory, 0, keep, -1):
            keep = 0  # a memory that refuses to drop just a tail
        if keep == 0:  # start the sequence over
            C.llama_memory_seq_rm(self._memory, 0, -1, -1)
        if self.checkpoints is not None:
            self.checkpoints.forget_after(keep)
        del self._ids[keep:]
        return keep

    def _evaluate_prompt(self, tokens: list[int], checkpoint_at: int | None = None) -> bool:
        """Decode `tokens` after the cache, logits for the last one only; where they pass position
        `checkpoint_at`, in two parts with a checkpoint of the state between them. False: aborted."""
        self._arm(True)  # a long prompt takes seconds: a stop must cut into llama_decode
        split = -1 if checkpoint_at is None else checkpoint_at - len(self._ids)
        if self.checkpoints is not None and 0 <= split < len(tokens):
            if not self._decode_tokens(tokens[:split], False):
                return False
            self.checkpoints.take(self._ids)
            tokens = tokens[split:]
        return self._decode_tokens(tokens, True)

    def decode_batch(self, tokens: list[int], logits_all: bool) -> int:
        """Decode `tokens` (at most n_batch) after the cache in one llama_decode, with logits for each of them or
        for the last; llama_decode's code (0: done, and they are in the record)."""
        batch, base = self._batch, len(self._ids)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = base + i
            batch.logits[i] = logits_all
        batch.logits[len(tokens) - 1] = 1
        batch.n_tokens = len(tokens)
        code = int(C.llama_decode(self._ctx, batch))
        if code == 0:
            self._ids.extend(tokens)
        return code

    def _decode_tokens(self, tokens: list[int], logits: bool) -> bool:
        """Decode `tokens` after the cache in n_batch chunks, with `logits` for the last one. False: aborted."""
        batch = self._batch
        for start in range(0, len(tokens), self._n_batch):
            chunk = tokens[start:start + self._n_batch]
            fill_batch(batch, chunk, len(self._ids), logits and start + len(chunk) == len(tokens))
            code = C.llama_decode(self._ctx, batch)
            if code != 0:
                return self.decode_failed(code, chunk)
            self._ids.extend(chunk)
        return True

    def _sample(self, sampler: Any, max_tokens: int, result: Generation, on_token: OnToken,
                should_stop: Callable[[], bool]) -> None:
        """Sample, report and evaluate one token at a time until EOG, `max_tokens` or a stop."""
        ctx, vocab, batch, ids = self._ctx, self._vocab, self._batch, self._ids
        sample, decode, is_eog, clock = C.llama_sampler_sample, C.llama_decode, C.llama_vocab_is_eog, time.perf_counter
        text = codecs.getincrementaldecoder("utf-8")("ignore")  # holds back a partial multi-byte character
        pieces, piece = self._pieces, self.piece
        batch.n_tokens = 1
        batch.logits[0] = 1
        while True:
            token = sample(sampler, ctx, -1)
            result.generated += 1
            if is_eog(vocab, token):
                result.pending, result.finish = token, "stop"
                on_token("", result.generated)
                return
            data = pieces.get(token)
            on_token(text.decode(piece(token) if data is None else data), result.generated)
            if result.generated >= max_tokens or should_stop():
                result.pending = token
                result.finish = "length" if result.generated >= max_tokens else "stopped"
                return
            batch.token[0] = token
            batch.pos[0] = len(ids)
            started = clock()
            code = decode(ctx, batch)
            if code != 0:
                result.pending = token
                result.finish = "stopped"
                self.decode_failed(code, [token])
                return
            ids.append(token)
            self._arm(clock() - started >= SLOW_TOKEN_SECONDS)

    def decode_failed(self, code: int, batch_tokens: list[int]) -> bool:
        """After a llama_decode error: make the record match the cache again, then False for our abort, else raise."""
        held = int(C.llama_memory_seq_pos_max(self._memory, 0)) + 1  # -1 when the sequence is empty
        if held < len(self._ids):
            del self._ids[held:]
        else:  # an abort keeps the ubatches that were processed before it
            self._ids.extend(batch_tokens[: held - len(self._ids)])
        if code == _DECODE_ABORTED:
            return False
        if code == _DECODE_NO_SLOT:
            raise DecodeError(f"llama_decode found no room in the KV cache ({self._n_ctx} tokens) for "
                              f"{len(batch_tokens)} more after {len(self._ids)}")
        raise DecodeError(f"llama_decode failed with code {code} on {len(batch_tokens)} tokens after "
                          f"{len(self._ids)} (see llama.log)")

    def piece(self, token: int) -> bytes:
        """The bytes llama.cpp renders for `token`, as create_completion does (special=False: control tokens such
        as <|im_end|> give nothing, added tokens such as <think> give their text). Cached per token id."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        buffer = self._piece_buffer
        size = C.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        if size < 0:  # longer than the buffer: -size bytes are needed
            buffer = self._piece_buffer = ctypes.create_string_buffer(-size)
            size = C.llama_token_to_piece(self._vocab, token, buffer, len(buffer), 0, False)
        data = buffer.raw[:size]
        self._pieces[token] = data
        return data

    def arm_for(self, decode_seconds: float) -> None:
        """Arm the abort callback when a decode took long enough for a stop to need to cut into it."""
        self._arm(decode_seconds >= SLOW_TOKEN_SECONDS)

    def _arm(self, on: bool) -> None:
        """Set or clear the abort callback on the context (only when it changes: each set walks the backends)."""
        if self._abort is None or on == self._armed:
            return
        C.llama_set_abort_callback(self._ctx, self._abort if on else C.ggml_abort_callback(), None)
        self._armed = on

    # -- keeping llama-cpp-python's view consistent --

    def _adopt_foreign_record(self) -> None:
        """If llama-cpp-python's own eval/generate ran on this Llama since our last call, take its record."""
        llm = self._llm
        n = int(llm.n_tokens)
        if n != len(self._ids) or llm.input_ids[:n].tolist() != self._ids:
            self._ids = [int(t) for t in llm.input_ids[:n]]

    def _mirror(self, unchanged: int) -> None:
        """Write our record into the Llama object (`input_ids[:n_tokens]`); its first `unchanged` are already there."""
        llm = self._llm
        n = len(self._ids)
        unchanged = min(unchanged, n)
        llm.input_ids[unchanged:n] = self._ids[unchanged:]
        llm.n_tokens = n
        llm._requires_eval = True  # the context's last logits may not belong to its last token (after an abort)
