"""A draft model: a smaller model of the same vocabulary (Qwen3-0.6B for Qwen3-8B) loaded in this process beside
the main one, proposing the tokens it would write next (a `DraftSource`, drafting.py).

Its proposals are greedy (the most likely token each step) and stop early where it is unsure: below
`min_confidence` for its top token, as llama.cpp's own speculative decoding does (`--draft-p-min`, 0.75), since
an unlikely guess costs a verify position and is rarely accepted. The decode loop checks every proposal against
the main model's own sampling, so the draft decides how fast an answer comes, never what it says.

It keeps its own KV cache (sequence 0) in step with the context it is given: the longest common prefix with what
it holds stays, the rest is removed, and only the new tokens are evaluated. After a rejected draft, the next
context agrees with its cache up to the last accepted token, so a proposal usually costs one catch-up decode of
the accepted tokens plus one decode per proposed token but the last. Bounded: it proposes nothing for a context
that does not fit its own (with the proposal), or holding an id outside its vocabulary, and a stop (`should_stop`,
the engine's Esc) cuts into a long catch-up.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

import llama_cpp.llama_cpp as C  # noqa: N812 (the C API, named like its header)
import numpy as np

from qwen_chat.engines.llama_setup import ModelParamsExtras, cache_and_rope, common_prefix, fill_batch, open_llama
from qwen_chat.engines.protocol import DraftLoad, LoadRequest

MIN_CONFIDENCE = 0.75  # llama.cpp's default draft p-min
# Catch-ups longer than this (a new prompt) arm the abort callback, so a stop cuts into them; shorter ones (the
# accepted tokens of the last batch) leave it off: llama.cpp would call into Python after every graph node.
_ABORTABLE = 32
_DECODE_ABORTED = 2


def _never() -> bool:
    return False


class DraftModel:
    """Proposes with one loaded `Llama`; not thread-safe (the engine thread owns it, like the main model)."""

    def __init__(self, llm: Any, should_stop: Callable[[], bool] = _never,
                 min_confidence: float = MIN_CONFIDENCE) -> None:
        self._llm = llm
        self._ctx = llm._ctx.ctx
        self._memory = C.llama_get_memory(self._ctx)
        self._vocab = llm._model.vocab
        self.n_ctx = int(C.llama_n_ctx(self._ctx))
        self._n_batch = int(C.llama_n_batch(self._ctx))
        self.n_vocab = int(C.llama_vocab_n_tokens(self._vocab))
        self.min_confidence = min_confidence
        self._batch: Any = C.llama_batch_init(self._n_batch, 0, 1)
        for i in range(self._n_batch):
            self._batch.n_seq_id[i] = 1
            self._batch.seq_id[i][0] = 0
        self._should_stop = should_stop

        @C.ggml_abort_callback
        def abort(_data: ctypes.c_void_p) -> bool:
            return bool(should_stop())

        self._abort = abort  # kept: llama.cpp holds only the pointer
        self._armed = False
        self._ids: list[int] = []

    @property
    def tokens(self) -> list[int]:
        """The token ids in the draft's KV cache, in order."""
        return list(self._ids)

    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        """Up to `limit` tokens the draft model would write after `context` (its greedy continuation, cut where
        its top token's probability falls below `min_confidence`; an end-of-generation token ends it)."""
        if limit <= 0 or not context or len(context) + limit > self.n_ctx:
            return []
        context = [int(t) for t in context]
        if max(context) >= self.n_vocab or min(context) < 0:
            return []
        keep = self._keep_prefix(context)
        if not self._decode(context[keep:]):
            return []
        proposal: list[int] = []
        while len(proposal) < limit:
            token = self._confident_top()
            if token is None:
                break
            proposal.append(token)
            if C.llama_vocab_is_eog(self._vocab, token) or len(proposal) == limit or self._should_stop():
                break
            if not self._decode([token]):
                break
        return proposal

    def clear(self) -> None:
        C.llama_memory_seq_rm(self._memory, 0, -1, -1)
        self._ids = []

    def close(self) -> None:
        if self._batch is not None:
            C.llama_batch_free(self._batch)
            self._batch = None
        self._llm.close()

    # -- the cache --

    def _keep_prefix(self, context: list[int]) -> int:
        """Remove from the cache what differs from `context`; how many of its tokens stay. The last one is always
        evaluated again: its logits give the first proposal."""
        keep = min(common_prefix(self._ids, context), len(context) - 1)
        if keep < len(self._ids) and not C.llama_memory_seq_rm(self._memory, 0, keep, -1):
            keep = 0
        if keep == 0:
            C.llama_memory_seq_rm(self._memory, 0, -1, -1)
        del self._ids[keep:]
        return keep

    def _decode(self, tokens: list[int]) -> bool:
        """Evaluate `tokens` after the cache in n_batch chunks, logits for the last one. False: stopped or failed
        (the record is made to match the cache again)."""
        self._arm(len(tokens) > _ABORTABLE)
        batch = self._batch
        for start in range(0, len(tokens), self._n_batch):
            chunk = tokens[start:start + self._n_batch]
            fill_batch(batch, chunk, len(self._ids), start + len(chunk) == len(tokens))
            code = C.llama_decode(self._ctx, batch)
            if code != 0:
                self._resync(chunk, code)
                return False
            self._ids.extend(chunk)
        return True

    def _resync(self, chunk: list[int], code: int) -> None:
        """After a failed or aborted decode: the cache keeps what llama.cpp says it holds (an abort keeps the
        micro-batches done before it); anything else is cleared, the next proposal starts over."""
        held = int(C.llama_memory_seq_pos_max(self._memory, 0)) + 1
        if code == _DECODE_ABORTED and len(self._ids) <= held <= len(self._ids) + len(chunk):
            self._ids.extend(chunk[: held - len(self._ids)])
        else:
            self.clear()

    def _confident_top(self) -> int | None:
        """The most likely next token, or None when its probability is below `min_confidence`."""
        pointer = C.llama_get_logits_ith(self._ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        token = int(logits.argmax())
        if self.min_confidence > 0:
            top = logits[token]
            confidence = 1.0 / float(np.exp(logits - top).sum())
            if confidence < self.min_confidence:
                return None
        return token

    def _arm(self, on: bool) -> None:
        if on != self._armed:
            C.llama_set_abort_callback(self._ctx, self._abort if on else C.ggml_abort_callback(), None)
            self._armed = on


def open_draft(load: DraftLoad, main: LoadRequest, progress: Any, should_stop: Callable[[], bool] = _never,
               n_threads: int = 1, min_confidence: float = MIN_CONFIDENCE) -> DraftModel:
    """Load the draft model as the main one is loaded (the caller holds LOAD_LOCK; `progress` is a
    llama_progress_callback that can cancel it), with the main load's thread counts. Raises ValueError when
    llama.cpp cannot load it."""
    request = LoadRequest(load.model_path, load.n_ctx, load.n_gpu_layers, kv_type=load.kv_type,
                          flash_attn=load.flash_attn)
    threads = main.n_threads or n_threads
    llm = open_llama(
        ModelParamsExtras(progress),
        model_path=str(load.model_path),
        n_ctx=load.n_ctx,
        n_gpu_layers=load.n_gpu_layers,
        n_threads=threads,
        n_threads_batch=main.n_threads_batch or threads,
        n_batch=min(512, load.n_ctx),
        flash_attn=load.flash_attn,
        **cache_and_rope(request),
    )
    llm.verbose = False
    return DraftModel(llm, should_stop, min_confidence)
