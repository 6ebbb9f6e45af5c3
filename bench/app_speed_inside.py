"""The app side of bench/app_speed.py: the real QwenChatApp in the tmux window, with a monitor.

The monitor records, from the start of each answer to its end, the UI thread's CPU time (its share of one
core) and the longest time the event loop did not come back to it (the longest frame), with the UI thread's
CPU time within that frame: on 2 cores shared with llama.cpp's threads the rest of a long frame is the thread
waiting for a core, not work of the app. It writes one JSON line per answer. With `replay`, the session
is handed the scripted-thinking engine below.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from itertools import cycle
from pathlib import Path
from typing import Any

LAG_PROBE = 0.01  # seconds between the monitor's wake-ups


def run_app(model: Path, stats: Path, replay: bool, prefill: int) -> None:
    from qwen_chat.session.chat import ChatSession
    from qwen_chat.session.sources import LocalModel
    from qwen_chat.store.database import Store

    engine = _scripted_engine(prefill)(lambda event: None) if replay else None
    session = ChatSession(Store(Path(os.environ["QWEN_CHAT_DB"])), engine=engine, source=LocalModel(model, 4096))
    app = _monitored_app_class()(session)
    app.stats_path = stats
    app.run()


def _monitored_app_class() -> type:
    from qwen_chat.tui import app as app_module
    from qwen_chat.tui.app import QwenChatApp
    from qwen_chat.tui.session_events import AnswerBegan, AnswerFinished, ModelLoaded

    class MonitoredApp(QwenChatApp):
        CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))  # relative paths follow the subclass
        stats_path: Path
        _longest = 0.0
        _longest_at = 0.0
        _longest_cpu = 0.0
        _started: tuple[float, float] | None = None

        def on_mount(self) -> None:
            # no super().on_mount(): Textual calls every class's on_mount along the MRO itself, so calling it here
            # too opened the model twice (two engines loading at once crashed llama.cpp on CUDA)
            self._monitor = asyncio.get_running_loop().create_task(self._watch_loop())

        async def _watch_loop(self) -> None:
            while True:
                before, cpu = time.perf_counter(), time.thread_time()
                await asyncio.sleep(LAG_PROBE)
                lag = time.perf_counter() - before - LAG_PROBE
                if lag > self._longest:
                    self._longest, self._longest_at = lag, time.monotonic()
                    self._longest_cpu = time.thread_time() - cpu

        @contextlib.asynccontextmanager
        async def _in_order(self, message: Any) -> AsyncIterator[Any]:
            """Around every session event the app handles (tui/app.py): the answer's start and end."""
            if isinstance(message, AnswerBegan):
                self._longest, self._longest_cpu = 0.0, 0.0
                self._started = (time.thread_time(), time.monotonic())
            async with super()._in_order(message) as transcript:
                yield transcript
            if isinstance(message, ModelLoaded):
                self._write({"event": "ready"})
            elif isinstance(message, AnswerFinished) and self._started is not None:
                cpu, wall = time.thread_time() - self._started[0], time.monotonic() - self._started[1]
                done = message.event.done
                self._write({"event": "answer", "message_id": message.event.message.id, "ui_cpu_s": cpu,
                             "wall_s": wall, "ui_cpu_share": cpu / wall if wall else 0.0,
                             "longest_frame_ms": self._longest * 1000,
                             "longest_frame_cpu_ms": self._longest_cpu * 1000,
                             "longest_frame_after_s": self._longest_at - self._started[1],
                             "replay_tokens_per_second": done.tokens_per_second if done else 0.0})
                self._started = None

        def _write(self, line: dict) -> None:
            with self.stats_path.open("a") as out:
                out.write(json.dumps(line) + "\n")

    return MonitoredApp


def _scripted_engine(prefill: int) -> type:
    """An Engine that thinks a scripted text: `prefill` tokens at once, then one piece per token the real
    model decodes (plain llama-cpp-python, the same loop as the reference), so the UI load is real."""
    from qwen_chat.engines.llama import Engine
    from qwen_chat.engines.protocol import Done, GenerateRequest, Token
    from qwen_chat.qwen3.thinking import Part, StreamText

    script = ("Let me think about this step by step. The product of seventeen and twenty-three: 17 times 20 is "
              "340, and 17 times 3 is 51, so the sum is 391. Let me double-check that another way.\n\n")
    words = script.split(" ")

    class ScriptedThinkingEngine(Engine):
        def _generate(self, request: GenerateRequest) -> None:
            self._cancel.clear()
            assert self._model is not None
            llm, rid, text, script = self._model.llm, request.request_id, StreamText(), cycle(words)
            started = time.perf_counter()

            def think(count: int) -> None:
                piece = next(script) + " "
                text.append(Part.THINKING, piece)
                self._emit(Token(rid, Part.THINKING, piece, count, stream=text))

            for count in range(prefill):
                think(count)
            tokens = llm.tokenize(request.prompt.encode(), add_bos=False, special=True)
            sampling, first, last, count = request.sampling, 0.0, 0.0, 0
            for _chunk in llm.create_completion(prompt=tokens, max_tokens=sampling.max_tokens,
                                                temperature=sampling.temperature, top_p=sampling.top_p,
                                                top_k=sampling.top_k, min_p=sampling.min_p,
                                                presence_penalty=sampling.presence_penalty, frequency_penalty=0.0,
                                                repeat_penalty=1.0, stream=True):
                last = time.perf_counter()
                first = first or last
                count += 1
                think(prefill + count)
                if self._cancel.is_set():
                    break
            speed = (count - 1) / (last - first) if count > 1 and last > first else 0.0
            self._emit(Done(request_id=rid, finish="length", thinking=text.thinking, answer="", saw_thinking=True,
                            thinking_closed=False, prompt_tokens=len(tokens), prompt_evaluated=len(tokens),
                            completion_tokens=count, prompt_seconds=first - started, generation_seconds=last - first,
                            context_used=len(tokens) + count, n_ctx=llm.n_ctx(), tokens_per_second=speed,
                            thinking_tokens=prefill + count))

    return ScriptedThinkingEngine
