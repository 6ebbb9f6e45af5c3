"""Keep Python's full garbage collections out of a streaming answer.

A full (generation 2) collection walks every object the app holds: with a long transcript drawn (every line a
Strip of Rich segments) it took about 100 ms on the UI thread here, a visible stall every few seconds of a long
answer. While an answer streams, `hold()` after each redraw moves what exists to the permanent generation
(`gc.freeze`, O(1)), so collections only walk what the last redraw made. When the answer is done, `release()`
puts everything back and collects once, in the idle time after it.
"""

from __future__ import annotations

import gc


def hold() -> None:
    gc.freeze()


def release() -> None:
    gc.unfreeze()
    gc.collect()
