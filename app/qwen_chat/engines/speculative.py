"""Speculative decoding for the decode loop: draft, verify in one batch, keep what sampling agrees with.

After each sampled token the draft sources (drafting.py) may propose the next few. The sampled token and the
draft are decoded as one batch with logits for every position, and each position is sampled with the answer's
own sampler chain (same samplers, same RNG stream, one draw per token as in one-token decoding), in order: while
the sampled token equals the draft's, the draft's next position is valid and sampling goes on from it; the first
token that differs is kept (it is what one-token decoding samples there) and the rest of the batch is dropped
from the KV cache. A batch therefore gives its accepted tokens + 1, and the text is the one the loop would have
written without drafting: every token is still sampled from the logits of exactly the tokens before it.

What can differ is the arithmetic, and on llama.cpp's CPU backend it does: a batch's rows are not computed as
one token alone is. Measured on the 0.5B test model (logits compared bit for bit, 2026-12-04, AVX2, llama-cpp-
python 0.3.36): one-token decoding repeated is bit-identical, but with 300 or 1,500 tokens of context even the
first row of a 2-token batch differs from it (up to 0.3 and 0.6 in the logits) with flash attention on or off
and with the repacked weights on or off; only a 40-token context gave exact batches (up to 2-7 rows, depending
on the setting). No setting makes verification exact, so none is forced here, and a near tie can go the other
way: greedy, 5 of 6 prompts of 200 tokens diverged after 16-185 tokens (README "Performance"). The distribution
of each token is still the one of one-token decoding.

What a batch costs decides when drafting pays: on this 2-core CPU a batch of 2 rows takes 1.74x one token, 3
rows 2.08x, 4 rows 2.31x, 8 rows 3.8x (1,200 tokens of context), so short or half-rejected drafts lose time and
long accepted ones gain; DraftLength (drafting.py) measures it as it goes rather than assume it.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import llama_cpp.llama_cpp as C  # noqa: N812 (the C API, named like its header)

from qwen_chat.engines.drafting import DraftLength, DraftSource
from qwen_chat.engines.protocol import Drafting

OnToken = Callable[[str, int], None]  # as decode_loop.py's: (text the token completes, tokens sampled so far)


class DecodeLoop(Protocol):
    """What drafting uses of decode_loop.DecodeLoop (named here: that module imports this one)."""

    @property
    def ctx(self) -> Any: ...
    @property
    def vocab(self) -> Any: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_batch(self) -> int: ...
    @property
    def n_cached(self) -> int: ...
    @property
    def tokens(self) -> list[int]: ...
    def piece(self, token: int) -> bytes: ...
    def decode_batch(self, tokens: list[int], logits_all: bool) -> int: ...
    def decode_failed(self, code: int, batch_tokens: list[int]) -> bool: ...
    def drop_after(self, keep: int) -> None: ...
    def arm_for(self, decode_seconds: float) -> None: ...


class Generation(Protocol):
    """What drafting sets of decode_loop.Generation."""

    finish: str
    generated: int
    pending: int | None

_EMA = 0.2  # weight of a new one-token decode time in the running estimate


@dataclass
class _Answer:
    """The figures of one generate call."""

    drafted: int = 0
    accepted: int = 0
    batches: int = 0
    tokens: int = 0  # tokens decoded (one at a time or in batches)
    seconds: float = 0.0  # time spent in llama_decode for them


@dataclass
class Speculator:
    """Drafting for one DecodeLoop: its sources (in order of preference: the first with a proposal drafts), how
    many tokens each drafts (DraftLength), and the time one-token decoding takes (measured as it runs)."""

    sources: list[DraftSource] = field(default_factory=list)
    off: str = ""  # why this loop never drafts ("": it may)
    token_seconds: float | None = None
    # each source's draft length rule; tests about what drafting writes (not how fast) use one that never rests,
    # DraftLength(pause=0), so a loaded machine's timings cannot switch drafting off under them
    new_length: Callable[[], DraftLength] = DraftLength
    _lengths: dict[int, DraftLength] = field(default_factory=dict)
    _answer: _Answer = field(default_factory=_Answer)

    @property
    def enabled(self) -> bool:
        return not self.off and bool(self.sources)

    def begin(self) -> None:
        """A generate call starts: its figures start from 0."""
        self._answer = _Answer()

    def stats(self) -> Drafting:
        """The last generate call's figures."""
        a = self._answer
        speedup = a.tokens * self.token_seconds / a.seconds if self.token_seconds and a.seconds > 0 else 0.0
        off = self.off or ("" if self.sources else "off (no draft source: [engine] speculative = false)")
        return Drafting(a.drafted, a.accepted, a.batches, speedup, off)

    def length(self, source: DraftSource) -> DraftLength:
        length = self._lengths.get(id(source))
        if length is None:
            length = self._lengths[id(source)] = self.new_length()
        return length

    def propose(self, context: list[int], room: int) -> tuple[DraftSource | None, list[int]]:
        """The first proposal of at most `room` tokens from a source that is drafting now."""
        found: tuple[DraftSource | None, list[int]] = (None, [])
        if room <= 0 or self.token_seconds is None:  # measure one-token decoding first
            return found
        for source in self.sources:
            length = self.length(source)
            limit = min(room, length.next_limit())
            if limit <= 0 or found[0] is not None:
                length.rested(1)
                continue
            draft = source.propose(context, limit)[:limit]
            if draft:
                found = (source, draft)
        return found

    def timed_single(self, seconds: float) -> None:
        a = self._answer
        a.tokens += 1
        a.seconds += seconds
        previous = self.token_seconds
        self.token_seconds = seconds if previous is None else previous + _EMA * (seconds - previous)

    def timed_batch(self, source: DraftSource, drafted: int, accepted: int, seconds: float) -> None:
        a = self._answer
        a.drafted += drafted
        a.accepted += accepted
        a.batches += 1
        a.tokens += accepted + 1
        a.seconds += seconds
        self.length(source).record(drafted, accepted, seconds, self.token_seconds)

    def run(self, loop: DecodeLoop, sampler: Any, max_tokens: int, result: Generation, on_token: OnToken,
            should_stop: Callable[[], bool]) -> None:
        """The decode loop's `_sample` with drafting: the same tokens reported, the same end states."""
        _Drafted(self, loop, sampler, max_tokens, result, on_token, should_stop).run()


class _Drafted:
    """One generate call's sampling with drafts (the state the steps share)."""

    def __init__(self, spec: Speculator, loop: DecodeLoop, sampler: Any, max_tokens: int, result: Generation,
                 on_token: OnToken, should_stop: Callable[[], bool]) -> None:
        self.spec, self.loop, self.sampler, self.max_tokens = spec, loop, sampler, max_tokens
        self.result, self.on_token, self.should_stop = result, on_token, should_stop
        self.text = codecs.getincrementaldecoder("utf-8")("ignore")
        self.context = loop.tokens  # every token so far: the cache's, then each one sampled
        self.room = min(loop.n_batch - 1, loop.n_ctx - 2)

    def run(self) -> None:
        token = self.sample(-1)
        while token is not None:
            room = min(self.room, self.max_tokens - self.result.generated - 1, self.loop.n_ctx - self.loop.n_cached - 2)
            source, draft = self.spec.propose(self.context, room)
            token = self.single(token) if source is None else self.batch(token, source, draft)

    def sample(self, index: int) -> int | None:
        """Sample at batch position `index`, report the token; None when the answer ends with it."""
        result = self.result
        token = int(C.llama_sampler_sample(self.sampler, self.loop.ctx, index))
        result.generated += 1
        if C.llama_vocab_is_eog(self.loop.vocab, token):
            result.pending, result.finish = token, "stop"
            self.on_token("", result.generated)
            return None
        self.on_token(self.text.decode(self.loop.piece(token)), result.generated)
        self.context.append(token)
        if result.generated >= self.max_tokens or self.should_stop():
            result.pending = token
            result.finish = "length" if result.generated >= self.max_tokens else "stopped"
            return None
        return token

    def single(self, token: int) -> int | None:
        """Evaluate `token` alone (no draft) and sample the next."""
        seconds = self.decode([token], logits_all=False)
        if seconds is None:
            return None
        self.spec.timed_single(seconds)
        return self.sample(-1)

    def batch(self, token: int, source: DraftSource, draft: list[int]) -> int | None:
        """Evaluate `token` + `draft` in one batch, sample each position while the draft holds, drop the rest."""
        seconds = self.decode([token, *draft], logits_all=True)
        if seconds is None:
            return None
        loop, accepted, following = self.loop, 0, None
        for index, drafted in enumerate(draft):
            following = self.sample(index)
            if following != drafted:
                break
            accepted += 1
        else:
            following = self.sample(len(draft))  # the whole draft held: the token after it comes free
        # an answer that ends inside the batch broke out at its last token, which stays pending (not cached) as
        # in one-token decoding
        keep = loop.n_cached - len(draft) + accepted  # the batch's first token and the accepted draft
        loop.drop_after(keep)
        self.spec.timed_batch(source, len(draft), accepted, seconds)
        return following

    def decode(self, tokens: list[int], logits_all: bool) -> float | None:
        """Decode `tokens` after the cache; their time, or None when it was stopped (the record follows)."""
        loop = self.loop
        before = loop.n_cached
        started = time.perf_counter()
        code = loop.decode_batch(tokens, logits_all)
        seconds = time.perf_counter() - started
        if code != 0:  # the token shown last stays pending, as when one-token decoding is stopped
            self.result.pending, self.result.finish = tokens[0], "stopped"
            loop.decode_failed(code, tokens)  # raises unless it was our abort
            loop.drop_after(min(before, loop.n_cached))  # an aborted batch's processed part is no answer
            return None
        loop.arm_for(seconds)
        return seconds
