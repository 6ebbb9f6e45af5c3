"""Context checkpoints for recurrent and hybrid models (Qwen3-Next, Qwen3.5), as llama.cpp's server makes them.

Such a model's recurrent state holds the last position only and cannot be rolled back, so a prompt that shares
only a prefix with the KV cache would be evaluated from 0. In a chat with thinking that is every turn: the next
prompt re-renders the last answer without its thinking, so it leaves the cache right after the previous prompt's
`<|im_start|>assistant\\n`. The decode loop therefore evaluates a prompt in two parts, split at its last
`<|im_start|>` (where its last turn begins), and saves the sequence's state between them: a later prompt that
still agrees up to there restores that state and evaluates only from there.

As the server (tools/server/server-context.cpp: create_checkpoint, and the restore in update_slots), a checkpoint
is `llama_state_seq_get_data_ext` with LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY: a hybrid memory then writes only its
recurrent part (tens of MB on real models), not the attention layers' KV cells, which stay valid in the cache for
the positions before the checkpoint (they depend on earlier tokens only). Restoring replaces the sequence's whole
recurrent state (llama_memory_recurrent::state_read drops the old one first), then `llama_memory_seq_rm(seq, n,
-1)` drops the KV cells from the checkpoint's position on; the recurrent part accepts that range, its cell being
at n - 1. Any failure leaves the caller to start the sequence over.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import llama_cpp.llama_cpp as C  # noqa: N812 (the C API, named like its header)

TURN_START = b"<|im_start|>"
KEPT = 2  # the latest two: the last turn's start (a regeneration, the next turn) and the one before (an edit)
_FLAGS = C.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY


@dataclass(frozen=True)
class Checkpoint:
    tokens: tuple[int, ...]  # what the sequence held when it was taken (its position is their count)
    data: Any  # the ctypes buffer llama_state_seq_get_data_ext filled

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def turn_start_token(llm: Any) -> int | None:
    """The id of `<|im_start|>` when the vocabulary has it as one token (Qwen's), else None."""
    ids = llm.tokenize(TURN_START, add_bos=False, special=True)
    return int(ids[0]) if len(ids) == 1 else None


class Checkpoints:
    """The saved states of sequence 0, oldest first (each at a larger position than the one before)."""

    def __init__(self, ctx: Any, memory: Any, marker: int | None) -> None:
        self._ctx = ctx
        self._memory = memory
        self._marker = marker
        self._saved: list[Checkpoint] = []

    @property
    def positions(self) -> list[int]:
        return [c.n_tokens for c in self._saved]

    @property
    def nbytes(self) -> int:
        return sum(ctypes.sizeof(c.data) for c in self._saved)

    def split_at(self, prompt: list[int]) -> int | None:
        """Where to save the state while evaluating `prompt`: before its last `<|im_start|>` (not at 0)."""
        if self._marker is None or self._marker not in prompt:
            return None
        at = len(prompt) - 1 - prompt[::-1].index(self._marker)
        return at if at > 0 else None

    def take(self, ids: list[int]) -> None:
        """Save the state now, with `ids` the tokens the sequence holds. A failure saves nothing."""
        tokens = tuple(ids)
        if not tokens or any(c.tokens == tokens for c in self._saved):
            return
        size = int(C.llama_state_seq_get_size_ext(self._ctx, 0, _FLAGS))
        if size <= 0:
            return
        data = (ctypes.c_uint8 * size)()
        if int(C.llama_state_seq_get_data_ext(self._ctx, data, size, 0, _FLAGS)) != size:
            return
        self.forget_after(len(tokens) - 1)  # those after it cannot be valid alongside it
        self._saved.append(Checkpoint(tokens, data))
        del self._saved[:-KEPT]

    def restore(self, prompt: list[int], keep: int) -> int:
        """Go back to the latest checkpoint that `prompt` agrees with and that leaves at least `keep`'s tokens
        evaluated (`keep`: how many of `prompt`'s first tokens the KV cache already holds, less than all of it).
        Returns its position, or 0: none fits, or restoring failed and the sequence must start over."""
        for checkpoint in reversed(self._saved):
            n = checkpoint.n_tokens
            if n <= keep and checkpoint.tokens == tuple(prompt[:n]):
                break
        else:
            return 0
        data = checkpoint.data
        size = ctypes.sizeof(data)
        if int(C.llama_state_seq_set_data_ext(self._ctx, data, size, 0, _FLAGS)) != size:
            return 0
        if not C.llama_memory_seq_rm(self._memory, 0, n, -1):
            return 0
        return n

    def forget_after(self, n_tokens: int) -> None:
        """Drop the checkpoints past `n_tokens`: the sequence no longer holds what they followed."""
        self._saved = [c for c in self._saved if c.n_tokens <= n_tokens]

    def clear(self) -> None:
        self._saved = []
