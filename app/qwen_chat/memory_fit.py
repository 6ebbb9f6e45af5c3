"""A simple memory bound for loading a model: weights + KV cache + a working margin must fit.

The full planner (quant choice, MoE placement, KV types) comes later; this bound already keeps a load from
crashing with an out-of-memory error it could have predicted, and picks the largest context that fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from .gguf_files import ModelInfo
from .hardware import Machine

MiB = 1 << 20
GiB = 1 << 30
MIN_CTX = 2048
CTX_STEP = 256


class DoesNotFit(Exception):
    """The model cannot be loaded on this machine; the message names what is needed and what is available."""


@dataclass(frozen=True)
class LoadPlan:
    n_ctx: int
    n_gpu_layers: int  # -1: all
    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    available_bytes: int
    reason: str

    @property
    def needed_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes


def _overhead(info: ModelInfo) -> int:
    # Compute buffers, the output logits and the process itself: a margin that grows with the model.
    return 384 * MiB + info.size_bytes // 20


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def plan_load(info: ModelInfo, machine: Machine, requested_ctx: int | None = None) -> LoadPlan:
    available = machine.ram_available + (machine.gpu_free if machine.gpu_offload else 0)
    per_token = info.kv_bytes_per_token()
    fixed = info.size_bytes + _overhead(info)
    max_fit = (available - fixed) // per_token if per_token else info.context_length
    if requested_ctx is not None:
        n_ctx = requested_ctx
        if n_ctx > max_fit:
            need = fixed + n_ctx * per_token
            hint = (f" The largest context that fits is about {max_fit // CTX_STEP * CTX_STEP:,} tokens."
                    if max_fit >= MIN_CTX else "")
            raise DoesNotFit(
                f"{info.path.name} with a {n_ctx:,}-token context needs about {_gib(need)} "
                f"(weights {_gib(info.size_bytes)}, context {_gib(n_ctx * per_token)}), "
                f"but {_gib(available)} is available.{hint}")
        reason = f"context {n_ctx:,} as asked"
    else:
        if max_fit < MIN_CTX:
            need = fixed + MIN_CTX * per_token
            raise DoesNotFit(
                f"{info.path.name} needs at least {_gib(need)} (weights {_gib(info.size_bytes)} plus a "
                f"{MIN_CTX:,}-token context) but only {_gib(available)} of memory is available. "
                "Close other programs or choose a smaller model or quant.")
        n_ctx = min(info.context_length, max_fit // CTX_STEP * CTX_STEP)
        reason = (f"the model's full context {n_ctx:,}" if n_ctx == info.context_length
                  else f"context {n_ctx:,} (the model's {info.context_length:,} does not fit in {_gib(available)})")
    kv = n_ctx * per_token
    return LoadPlan(n_ctx, _gpu_layers(info, machine, kv), info.size_bytes, kv, _overhead(info), available, reason)


def _gpu_layers(info: ModelInfo, machine: Machine, kv_bytes: int) -> int:
    if not machine.gpu_offload or machine.gpu_free <= 0 or info.block_count <= 0:
        return 0
    budget = machine.gpu_free - _overhead(info) - kv_bytes
    per_layer = info.size_bytes / (info.block_count + 1)  # the output layer counts as one more
    layers = int(budget // per_layer) if budget > 0 else 0
    return -1 if layers > info.block_count else max(0, layers)
