"""Where speculative decoding's drafts come from, and how many tokens to draft.

A `DraftSource` guesses the tokens that follow the context; the decode loop (decode_loop.py, speculative.py)
checks a guess by decoding it as one batch and sampling every position with the normal sampler chain, so a
guess only changes how fast the answer comes, never what it is. Sources here: `PromptLookup` (the text already
in the context: an attached file written back, a paragraph corrected, an earlier answer revised); a draft model
can be another source with the same method.

`DraftLength` decides, per source, how many tokens to ask for: more while whole drafts are accepted, fewer after
rejections, none while batches cost more time than they save (measured against one-token decoding), and after a
while it tries again, since what an answer writes changes (prose, then a quoted code block).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from qwen_chat.engines.llama_setup import common_prefix


class DraftSource(Protocol):
    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        """Up to `limit` tokens likely to follow `context` (every token so far: prompt and answer)."""
        ...


class PromptLookup:
    """Drafts by n-gram lookup in the context itself: the last `max_n`..`min_n` tokens are looked up earlier in
    the context, longest first, and what followed their latest earlier occurrence is proposed.

    The index (n-gram -> the position after its latest occurrence) is built incrementally: a call indexes only
    the tokens added since the last one, so a call costs the same for a 32K-token context as for a short one. A
    context that does not continue the indexed one (a new conversation, an edited turn) is indexed again from
    where the two part, once.
    """

    def __init__(self, max_n: int = 3, min_n: int = 2) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"n-gram sizes must satisfy 1 <= min_n <= max_n (got {min_n}..{max_n})")
        self.max_n = max_n
        self.min_n = min_n
        self._tokens: list[int] = []  # the context indexed so far
        self._index: dict[tuple[int, ...], int] = {}
        self._indexed = 0  # positions below this are in the index
        self._source: tuple[int, int] | None = None  # (context length, where its proposal was taken from)

    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        if limit <= 0:
            return []
        self._follow(context)
        tokens, n_ctx = self._tokens, len(self._tokens)
        at = self._copying(n_ctx)
        for n in range(self.max_n, self.min_n - 1, -1):
            if at is not None or n_ctx <= n:
                break
            at = self._index.get(tuple(tokens[n_ctx - n:]))
        if at is None:
            self._source = None
            return []
        self._source = (n_ctx, at)
        return tokens[at:at + limit]  # may run into the tail itself: a repeating pattern goes on

    def _copying(self, n_ctx: int) -> int | None:
        """Where the last proposal's source goes on, when everything since it followed that source: a copy of a
        file keeps to the file rather than jump to the latest place where its last tokens occur (in code,
        `self.` or `    return` occur everywhere)."""
        if self._source is None:
            return None
        then, at = self._source
        grown = n_ctx - then
        if grown <= 0 or at + grown >= then or self._tokens[then:n_ctx] != self._tokens[at:at + grown]:
            return None
        return at + grown

    def _follow(self, context: Sequence[int]) -> None:
        """Bring the index up to `context`: index only the new tokens when it continues what was indexed."""
        tokens = self._tokens
        done = len(tokens)
        # a cheap check that `context` still starts with the indexed tokens: their end and a few points before it
        if done > len(context) or any(context[i] != tokens[i] for i in _probes(done)):
            del tokens[common_prefix(tokens, context):]
            self._index, self._indexed, self._source = {}, 0, None  # once per new conversation or edited turn
        tokens.extend(context[len(tokens):])
        self._add()

    def _add(self) -> None:
        """Index every n-gram that a token follows: n tokens before position i -> i, for the new positions."""
        tokens, index, sizes = self._tokens, self._index, range(self.min_n, self.max_n + 1)
        for i in range(max(self._indexed, self.min_n), len(tokens)):
            for n in sizes:
                if i >= n:
                    index[tuple(tokens[i - n:i])] = i
        self._indexed = len(tokens)


def _probes(n: int) -> range | list[int]:
    if n == 0:
        return []
    return sorted({n - 1, n // 2, n // 4, max(0, n - 64)})


@dataclass
class DraftLength:
    """How many tokens to draft next for one source: 0 while drafting does not pay.

    `record` learns from every verified batch: the tokens it produced against the time one-token decoding would
    have taken for them. Over a window of batches that saved nothing the source is switched off for
    `pause` tokens (doubling while it keeps failing, up to `max_pause`), then tried again; `pause` 0 never rests.
    """

    low: int = 1
    high: int = 16
    start: int = 4
    probe: int = 2  # the draft after a rest: a rejected probe costs less (a batch of 3 rows ~2.1 tokens' time)
    window: int = 6  # batches judged together before switching off
    pause: int = 24  # tokens decoded one at a time before the first probe
    max_pause: int = 384
    limit: int = 0
    _gain: float = 0.0  # over the current window: one-token time saved (negative: lost), in seconds
    _batches: int = 0
    _resting: int = 0  # tokens left before drafting is tried again
    _pause_now: int = 0

    def __post_init__(self) -> None:
        self.limit = self.start
        self._pause_now = self.pause

    @property
    def active(self) -> bool:
        return self._resting <= 0

    def next_limit(self) -> int:
        return self.limit if self.active else 0

    def rested(self, tokens: int) -> None:
        """`tokens` were decoded without this source (it was off or had nothing to propose)."""
        if self._resting > 0:
            self._resting -= tokens

    def record(self, drafted: int, accepted: int, batch_seconds: float, token_seconds: float | None) -> None:
        """A batch of 1 + `drafted` tokens took `batch_seconds` and gave 1 + `accepted` tokens; one token
        alone takes `token_seconds` (None: not measured yet, judge by acceptance only)."""
        if accepted >= drafted:
            self.limit = min(self.high, self.limit * 2)
        elif accepted == 0:
            self.limit = max(self.low, self.limit // 2)
        else:
            self.limit = max(self.low, min(self.limit, accepted + 1))
        saved = (accepted + 1) * token_seconds - batch_seconds if token_seconds else (accepted - 0.5) * 1e-3
        self._gain += saved
        self._batches += 1
        if self._batches < self.window and self._gain > -2 * (token_seconds or 1e-3):
            return  # judged early once the window has lost two tokens' time
        if self._gain < 0:  # the window lost time: rest, longer each time in a row
            self._resting = self._pause_now
            self._pause_now = min(self.max_pause, self._pause_now * 2)
            self.limit = min(self.start, self.probe)
        else:
            self._pause_now = self.pause
        self._gain, self._batches = 0.0, 0
