"""Decode speed through qwen-chat's engine vs plain llama-cpp-python, same model, threads and settings.

Alternates the two and prints the ratio of median decode speeds (tokens/s after the first token). Each side runs
in its own worker process (bench/engine_vs_llamacpp.py says why: llama.cpp driven from two threads of one process
decodes slower on both). That bench also compares both with llama.cpp's own llama-bench.
Usage: python bench/decode_speed.py [MODEL.gguf] [--runs N] [--tokens N] [--threads N]
Without a model path it uses the real Qwen2.5-Coder-0.5B test model (fetched from PyPI like the tests do).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from engine_vs_llamacpp import Worker  # noqa: E402

# greedy: both sides produce the same tokens, so they do the same work
SAMPLING = dict(temperature=0.0, top_k=20, top_p=0.8, min_p=0.0, presence_penalty=0.0, seed=7)


def main() -> None:
    import psutil

    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or 1)
    args = parser.parse_args()
    if args.model is None:
        from real_model import real_model_path

        args.model = real_model_path()
    workers = {"ref": Worker("python", args), "ours": Worker("engine", args)}
    speeds: dict[str, list[float]] = {"ref": [], "ours": []}
    try:
        for run in range(args.runs):
            # alternate which goes first so drift in machine load hits both sides alike
            for side in ("ref", "ours") if run % 2 == 0 else ("ours", "ref"):
                result = workers[side].run(run=run, tokens=args.tokens, sampling=SAMPLING)
                speeds[side].append(result.tg)
            print(f"run {run + 1}: llama-cpp-python {speeds['ref'][-1]:.1f} tok/s, "
                  f"qwen-chat engine {speeds['ours'][-1]:.1f} tok/s", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    theirs, ours = statistics.median(speeds["ref"]), statistics.median(speeds["ours"])
    print(f"model {args.model.name}, {args.threads} threads, {args.runs} runs of {args.tokens} tokens")
    print(f"median decode: llama-cpp-python {theirs:.1f} tok/s, qwen-chat {ours:.1f} tok/s, ratio {ours / theirs:.3f}")


if __name__ == "__main__":
    main()
