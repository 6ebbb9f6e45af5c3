"""Does a frame cost more at the 40,000th token than at the first? The real app's widgets under a headless app.

Streams a 40,000-token answer of each shape (numbered list, code block, table, prose; and thinking, opened) into
an AssistantMessage in batches of 10 tokens with a refresh between, and
reports the UI thread's CPU per batch over the first and the last 2,000 tokens, the longest frame (the
longest time the event loop was blocked, measured by a 5 ms probe: wall time, so it also counts the moments
this machine gave the core to another process) and the most UI CPU time within one such frame (the app's own
work, whatever else the machine runs). Headless: the terminal output itself is not counted
(bench/app_speed.py measures a real terminal).

Usage: python bench/long_answer_frames.py [--tokens 40000] [--cases list,code,table,prose,thinking]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CHARS_PER_TOKEN = 4
BATCH_TOKENS = 10  # what 40 tok/s brings in a 1/4 s; the app paces itself to about that at its slowest


def text_for(case: str, tokens: int) -> str:
    size = tokens * CHARS_PER_TOKEN
    if case == "list":
        rows = (f"{i}. Fruit number {i}, a sweet one\n" for i in range(1, 10**6))
    elif case == "code":
        rows = (f"def f{i}(x):\n    return x * {i} + 1\n" for i in range(10**6))
    elif case == "table":
        rows = (f"| {i} | Country {i} | Capital {i} | Europe |\n" for i in range(10**6))
    else:
        rows = (f"Sentence {i} about a dragon who bakes bread. " + ("\n\n" if i % 6 == 5 else "")
                for i in range(10**6))
    head = {"code": "Here:\n\n```python\n", "table": "| # | country | capital | continent |\n|---|---|---|---|\n"}
    out, length = [head.get(case, "")], 0
    for row in rows:
        out.append(row)
        length += len(row)
        if length >= size:
            break
    return "".join(out)


async def run_case(case: str, tokens: int) -> tuple[float, float, float, float]:
    from textual.app import App, ComposeResult
    from textual.containers import VerticalScroll

    from qwen_chat.tui import gc_pause
    from qwen_chat.tui.messages import AssistantMessage

    class Host(App[None]):
        def compose(self) -> ComposeResult:
            yield VerticalScroll(id="transcript")

    app = Host()
    text = text_for("prose" if case == "thinking" else case, tokens)
    step = BATCH_TOKENS * CHARS_PER_TOKEN
    window = 2000 * CHARS_PER_TOKEN
    longest = [0.0, 0.0]  # wall time the loop was away, the most UI CPU time in one such interval

    async def probe() -> None:
        while True:
            before, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.005)
            longest[0] = max(longest[0], time.perf_counter() - before - 0.005)
            longest[1] = max(longest[1], time.thread_time() - cpu)

    from qwen_chat.tui import warm_up

    warm_up.start().join()  # as the app does at start (tui/warm_up.py), before any answer
    async with app.run_test(size=(170, 45)) as pilot:
        transcript = app.query_one("#transcript", VerticalScroll)
        transcript.anchor()
        live = AssistantMessage()
        await transcript.mount(live)
        if case == "thinking":
            live.add_thinking(" ")
            live.query_one(".thinking").collapsed = False
        watcher = asyncio.get_running_loop().create_task(probe())
        costs: list[float] = []
        for at in range(0, len(text), step):
            cpu = time.thread_time()
            piece = text[at:at + step]
            if case == "thinking":
                live.add_thinking(piece)
            else:
                await live.add_answer(piece)
            await pilot.pause(1 / 30)  # a refresh between batches; its CPU counts in the next batch
            gc_pause.hold()  # as the app does after each redraw while an answer streams
            costs.append(time.thread_time() - cpu)
        watcher.cancel()
        gc_pause.release()
    per_window = window // step
    return (sum(costs[:per_window]) / per_window * 1000, sum(costs[-per_window:]) / per_window * 1000,
            longest[0] * 1000, longest[1] * 1000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=40000)
    parser.add_argument("--cases", default="list,code,table,prose,thinking")
    args = parser.parse_args()
    print(f"{args.tokens:,} tokens per answer, batches of {BATCH_TOKENS} tokens, 170x45, headless")
    print("| case | UI CPU per batch, first 2,000 tokens | last 2,000 tokens | longest frame | most UI CPU in a "
          "frame |")
    print("|---|---|---|---|---|")
    for case in args.cases.split(","):
        first, last, longest, cpu = asyncio.run(run_case(case, args.tokens))
        print(f"| {case} | {first:.1f} ms | {last:.1f} ms | {longest:.1f} ms | {cpu:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
