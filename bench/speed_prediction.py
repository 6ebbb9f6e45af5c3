"""Predicted vs measured decode speed (planning/speed.py) for the real test model on this machine.

Calibrates first (the same probe as `qwen-chat calibrate`, into a temporary data folder unless --keep), then per
thread count fills the cache step by step to each context size and times 32 single-token decode steps there
(lower quartile of the steps, as the probe does). The target is a ratio predicted/measured within 0.8-1.2.
Usage: python bench/speed_prediction.py [MODEL.gguf] [--threads 1 2] [--ctx 512 2048 4096] [--keep]
Note: calibration and measurement use the same model, so this checks the context term and the stability of the
probe; another model's speed is only as good as the formula's byte counts for it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TOKENS = 32


def measure(model: Path, threads: int, contexts: list[int]) -> dict[int, float]:
    """Decode tok/s at each context, filling the cache in order."""
    import statistics

    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=max(contexts) + TOKENS + 64, n_threads=threads, n_threads_batch=threads,
                          n_batch=512, verbose=False)
    ids = [(i * 7919) % (llm.n_vocab() - 1000) + 500 for i in range(max(contexts))]
    llm.eval(ids[:8])
    llm.reset()
    speeds, filled = {}, 0
    for ctx in contexts:
        llm.n_tokens = filled  # drop the previous decode steps
        llm.eval(ids[filled:ctx])
        filled = ctx
        steps = []
        for i in range(TOKENS):
            started = time.perf_counter()
            llm.eval([ids[i]])
            steps.append(time.perf_counter() - started)
        speeds[ctx] = 1 / statistics.quantiles(steps, n=4)[0]
    llm.close()
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ctx", type=int, nargs="+", default=[512, 2048, 4096])
    parser.add_argument("--keep", action="store_true", help="store the calibration in the real data folder")
    args = parser.parse_args()
    if args.model is None:
        from real_model import real_model_path

        args.model = real_model_path()
    if not args.keep:
        os.environ["QWEN_CHAT_DATA_DIR"] = tempfile.mkdtemp(prefix="speed-bench-")
    from dataclasses import replace

    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.planning.calibration import rates_for
    from qwen_chat.planning.planner import Plan
    from qwen_chat.planning.speed import predict, workload_from_gguf
    from qwen_chat.planning.speed_probe import calibrate
    from qwen_chat.system.hardware import detect

    machine = replace(detect(), physical_cores=max(args.threads))  # probe at 1 and at the largest count
    cpu = calibrate(args.model, machine).cpu
    for threads, rate in cpu.items():
        print(f"calibration, {threads} threads: {rate.bandwidth / 1e9:.1f} GB/s, {rate.flops / 1e9:.0f} GFLOP/s, "
              f"attention {rate.attention_flops / 1e9:.0f} GFLOP/s", flush=True)
    work = workload_from_gguf(read_model_info(args.model))
    cpu_plan = Plan("file", max(args.ctx) + TOKENS, 0, 0, "f16", False, 0, 0, 0, 0, 0, True)
    print(f"\n{'threads':>7} {'context':>8} {'predicted':>10} {'measured':>9} {'ratio':>6}")
    for threads in args.threads:
        rates = rates_for(machine, threads)
        for ctx, measured in measure(args.model, threads, args.ctx).items():
            predicted = predict(work, cpu_plan, rates, ctx + TOKENS // 2).decode
            print(f"{threads:>7} {ctx:>8,} {predicted:>10.1f} {measured:>9.1f} {predicted / measured:>6.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
