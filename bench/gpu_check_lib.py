"""Pieces of bench/gpu_check.py: random-weight Qwen3-shaped GGUFs, llama.cpp's own reports (the buffer sizes it
logs, llama-bench, llama-fit-params), NVML snapshots, and a second process that holds GPU memory so that a
large card acts as a smaller one: this file run as `hold` reads lines from stdin, each the GiB to leave free
("0" frees everything), and answers each with "held <bytes held> free <bytes free>".
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MiB, GiB = 1 << 20, 1 << 30
Q4K_BLOCK, Q4K_BYTES = 256, 144  # weights and bytes per Q4_K block: f16 d, f16 dmin, 12 scale bytes, 128 quants


@dataclass(frozen=True)
class Shape:
    """The sizes of a Qwen3 (dense) or Qwen3-MoE model; the weights are noise."""

    layers: int
    n_embd: int
    n_ff: int
    n_head: int
    n_kv: int
    head_dim: int
    vocab: int = 151936
    experts: int = 0
    experts_used: int = 0
    expert_ff: int = 0
    tied: bool = False  # the 0.6B reuses token_embd as its output head

    @property
    def arch(self) -> str:
        return "qwen3moe" if self.experts else "qwen3"


SHAPES = {  # the real models' sizes (their config.json); the mini ones for a CPU run in seconds
    "0.6b": Shape(28, 1024, 3072, 16, 8, 128, tied=True),
    "8b": Shape(36, 4096, 12288, 32, 8, 128),
    "30b-a3b": Shape(48, 2048, 6144, 32, 4, 128, experts=128, experts_used=8, expert_ff=768),
    "mini": Shape(8, 1024, 3072, 16, 8, 64, vocab=32768),
    "mini-moe": Shape(8, 1024, 3072, 16, 8, 64, vocab=32768, experts=16, experts_used=4, expert_ff=512),
    "tiny": Shape(2, 256, 768, 4, 2, 64, vocab=1024),  # the test's: loads and decodes in a blink
}


# ---- random-weight GGUFs ----------------------------------------------------------------------------------


def _vocabulary(size: int) -> tuple[list[str], list[int]]:
    """Byte-level BPE tokens (every byte a token, so any text tokenizes), Qwen's specials, then word-like
    tokens ("Ġabc") up to `size`, so that sampled noise reads like words of prose."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in keep else chr(next(extra)) for b in range(256)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: list[str] = []
    length = 2
    while len(chars) + len(specials) + len(words) < size:
        for i in range(len(letters) ** length):
            word, n = "", i
            for _ in range(length):
                word, n = letters[n % 26] + word, n // 26
            words.append("Ġ" + word)
            if len(chars) + len(specials) + len(words) >= size:
                break
        length += 1
    tokens = chars + specials + words
    return tokens, [1] * 256 + [3] * len(specials) + [1] * len(words)


class _Noise:
    """One buffer of random Q4_K blocks with a fixed small f16 scale and min in each block's first 4 bytes;
    every tensor is a view of its start, so a 16 GB model costs one buffer of its largest tensor."""

    def __init__(self, largest: int, seed: int = 7) -> None:
        blocks = np.random.default_rng(seed).integers(0, 256, (largest // Q4K_BYTES + 1, Q4K_BYTES), dtype=np.uint8)
        blocks[:, 0:4] = np.frombuffer(np.array([2.0**-12, 2.0**-12], dtype=np.float16).tobytes(), dtype=np.uint8)
        self.data = blocks.reshape(-1)

    def q4k(self, *shape: int) -> np.ndarray:
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        assert cols % Q4K_BLOCK == 0, shape
        row_bytes = cols // Q4K_BLOCK * Q4K_BYTES
        return self.data[: rows * row_bytes].reshape(*shape[:-1], row_bytes)


def _tensors(shape: Shape) -> Iterator[tuple[str, tuple[int, ...], bool]]:
    """(name, numpy shape, quantized) of every tensor llama.cpp loads for the shape."""
    q, kv = shape.n_head * shape.head_dim, shape.n_kv * shape.head_dim
    yield "token_embd.weight", (shape.vocab, shape.n_embd), True
    yield "output_norm.weight", (shape.n_embd,), False
    if not shape.tied:
        yield "output.weight", (shape.vocab, shape.n_embd), True
    for i in range(shape.layers):
        b = f"blk.{i}."
        yield from ((b + "attn_norm.weight", (shape.n_embd,), False), (b + "ffn_norm.weight", (shape.n_embd,), False),
                    (b + "attn_q_norm.weight", (shape.head_dim,), False),
                    (b + "attn_k_norm.weight", (shape.head_dim,), False),
                    (b + "attn_q.weight", (q, shape.n_embd), True), (b + "attn_k.weight", (kv, shape.n_embd), True),
                    (b + "attn_v.weight", (kv, shape.n_embd), True),
                    (b + "attn_output.weight", (shape.n_embd, q), True))
        if shape.experts:
            e, ff = shape.experts, shape.expert_ff
            yield b + "ffn_gate_inp.weight", (e, shape.n_embd), False
            yield b + "ffn_gate_exps.weight", (e, ff, shape.n_embd), True
            yield b + "ffn_up_exps.weight", (e, ff, shape.n_embd), True
            yield b + "ffn_down_exps.weight", (e, shape.n_embd, ff), True
        else:
            yield b + "ffn_gate.weight", (shape.n_ff, shape.n_embd), True
            yield b + "ffn_up.weight", (shape.n_ff, shape.n_embd), True
            yield b + "ffn_down.weight", (shape.n_embd, shape.n_ff), True


def _header(writer: Any, shape: Shape) -> None:
    writer.add_name(f"random-{shape.arch}-{shape.layers}L-{shape.n_embd}")
    writer.add_context_length(40960)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_kv)
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    if shape.experts:
        writer.add_expert_count(shape.experts)
        writer.add_expert_used_count(shape.experts_used)
        writer.add_expert_feed_forward_length(shape.expert_ff)
    tokens, types = _vocabulary(shape.vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["Ġ a"])
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(False)


def write_gguf(path: Path, shape: Shape) -> dict[str, Any]:
    """Write the shape's GGUF (Q4_K matrices, f32 norms and router); returns its size and the seconds taken."""
    import gguf

    started = time.perf_counter()
    tensors = list(_tensors(shape))
    largest = max(int(np.prod(s[:-1])) * s[-1] // Q4K_BLOCK * Q4K_BYTES for _, s, quantized in tensors if quantized)
    noise = _Noise(largest)
    part = path.with_suffix(".part")  # renamed when complete: a run cut off mid-write leaves no model behind
    writer = gguf.GGUFWriter(str(part), shape.arch)
    _header(writer, shape)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    small = np.random.default_rng(3)
    for name, dims, quantized in tensors:
        if quantized:
            writer.add_tensor(name, noise.q4k(*dims), raw_dtype=gguf.GGMLQuantizationType.Q4_K)
        else:  # norms near 1, a router with small random logits
            values = 1.0 + 0.1 * small.standard_normal(dims) if len(dims) == 1 else 0.02 * small.standard_normal(dims)
            writer.add_tensor(name, values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    part.replace(path)
    return {"bytes": path.stat().st_size, "seconds": round(time.perf_counter() - started, 2), "arch": shape.arch,
            "layers": shape.layers}


# ---- what llama.cpp reports -------------------------------------------------------------------------------

BUFFER_LINE = re.compile(r"(\S+)\s+(model|KV|RS|compute|output) buffer size =\s+([\d.]+) MiB")


def buffers(lines: list[str]) -> dict[str, dict[str, float]]:
    """llama.cpp's logged buffers, MiB by kind, split into device memory ("gpu": CUDA0, ROCm0 ...) and host
    memory ("host": CPU, CPU_Mapped, CPU_REPACK, CUDA_Host pinned buffers)."""
    found: dict[str, dict[str, float]] = {"gpu": {}, "host": {}}
    for line in lines:
        for name, kind, mib in BUFFER_LINE.findall(line):
            side = "host" if name.startswith("CPU") or name.endswith("_Host") else "gpu"
            found[side][kind] = round(found[side].get(kind, 0.0) + float(mib), 2)
    return found


@contextlib.contextmanager
def llama_log_lines() -> Iterator[list[str]]:
    """The lines llama.cpp logs meanwhile (through qwen-chat's callback, system/logging_setup.py)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("qwen_chat.llama_cpp")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def find_tool(name: str, explicit: Path | None, root: Path) -> Path | None:
    """A llama.cpp tool: the path given, build/bin/<name> (the device's CUDA build), or one on PATH."""
    for candidate in (explicit, root / "build" / "bin" / name):
        if candidate is not None and candidate.is_file():
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def llama_bench(binary: Path | None, model: Path, plan: Any, threads: int, prompt: int, gen: int,
                repeats: int = 2, timeout: float = 120) -> dict[str, Any]:
    """llama-bench's pp<prompt> at depth 0 and tg<gen> after <prompt> tokens in the cache, as the engine runs
    them with the plan (same layers and experts in RAM, flash attention, KV type, threads, micro-batch)."""
    if binary is None:
        return {"status": "not available (no llama-bench on PATH or in build/bin)"}
    ngl = 999 if plan.n_gpu_layers < 0 else plan.n_gpu_layers
    common = [str(binary), "-m", str(model), "-ngl", str(ngl), "-ncmoe", str(plan.n_cpu_moe),
              "-fa", "1" if plan.flash_attn else "0", "-ctk", plan.kv_type, "-ctv", plan.kv_type, "-t", str(threads),
              "-b", "512", "-ub", "512", "-r", str(repeats), "-o", "json"]
    result: dict[str, Any] = {}
    for key, test in (("prompt", ["-p", str(prompt), "-n", "0"]), ("decode", ["-p", "0", "-n", str(gen),
                                                                             "-d", str(prompt)])):
        try:
            done = _run(common + test, timeout)
            result[key] = round(float(json.loads(done.stdout)[0]["avg_ts"]), 1)
        except (subprocess.SubprocessError, ValueError, KeyError, IndexError) as exc:
            result[key] = None
            result[f"{key}_error"] = f"{type(exc).__name__}: {str(exc)[-300:]}"
    return result


FIT_LINE = re.compile(r"-c (\d+) -ngl (-?\d+)(.*)")


def fit_params(binary: Path | None, model: Path, n_ctx: int, kv: str, flash_attn: bool,
               timeout: float = 120) -> dict[str, Any]:
    """What llama-fit-params chooses for the same model, context and KV type on the memory free now."""
    if binary is None:
        return {"status": "not available (no llama-fit-params on PATH or in build/bin)"}
    cmd = [str(binary), "-m", str(model), "-c", str(n_ctx), "-ctk", kv, "-ctv", kv, "-fa",
           "on" if flash_attn else "off"]
    try:
        done = _run(cmd, timeout)
    except subprocess.SubprocessError as exc:
        return {"status": f"failed: {exc}"}
    match = next((m for line in done.stdout.splitlines() if (m := FIT_LINE.match(line.strip()))), None)
    if match is None:
        return {"status": f"no answer (exit {done.returncode})", "stderr_tail": done.stderr[-600:]}
    overrides = match.group(3).strip()
    # fit keeps tensors in RAM with one pattern per layer ("blk\.5\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU", or
    # part of one layer's FFN when it overflows), or one for all layers ("blk\.\d+\....")
    cpu_layers: set[int] = set()
    every_layer = False
    for part in overrides.removeprefix("-ot").strip().strip('"').split(","):
        if part.endswith("=CPU"):
            every_layer = every_layer or "\\d+" in part
            cpu_layers.update(int(n) for n in re.findall(r"blk\\\.(\d+)\\\.", part))
    return {"status": "ok", "n_ctx": int(match.group(1)), "n_gpu_layers": int(match.group(2)),
            "cpu_ffn_layers": "all" if every_layer else sorted(cpu_layers), "overrides": overrides}


# ---- the summary printed last -----------------------------------------------------------------------


def summary(data: dict[str, Any]) -> list[str]:
    """Whole lines, one finding each, from the results file's sections."""
    lines = [f"mode {data.get('mode')}; build: {data.get('build', 'none (CPU mode)')}"]
    det = data.get("detection", {})
    for g in det.get("gpus", []):
        lines.append(f"detect: {g['llama.cpp']} free {g['free_MiB']} of {g['total_MiB']} MiB; NVML "
                     f"{g.get('nvml_free_MiB', '-')} of {g.get('nvml_total_MiB', '-')} (diff {g.get('free_diff_MiB')})")
    if det and not det.get("gpus"):
        lines.append(f"detect: no GPU (backend {det.get('backend')}); NVML {det.get('nvml')}")
    for row in data.get("plans", []):
        if "plan" not in row:
            lines.append(f"plan {row['shape']} on {row['card_GB']} GB: {row.get('status')}")
            continue
        lines.append(f"plan {row['shape']} on {row['card_GB']} GB: {row['plan']}")
        gpu = (f"GPU planner {row['planner_gpu_MiB']} vs llama.cpp {row['llama_cpp_gpu_MiB']} MiB "
               f"({row.get('gpu_error', '-')}), NVML +{row.get('nvml_used_delta_MiB')}; "
               if row["planner_gpu_MiB"] or row["llama_cpp_gpu_MiB"] else "no GPU buffers; ")
        lines.append(f"  {gpu}RAM planner {row['planner_ram_MiB']} vs llama.cpp {row['llama_cpp_host_MiB']} MiB "
                     f"({row.get('ram_error', '-')}); {row.get('load')}")
        choice = row.get("choice", {}).get("fit_params")
        lines.append(f"  llama-fit-params: {choice or row['fit_params'].get('status')}")
    for row in data.get("speeds", []):
        engine, bench = row.get("engine") or {}, row.get("llama_bench") or {}
        table, fit = row.get("predicted_table", {}), row.get("predicted_calibrated", {})
        lines.append(f"speed {row['shape']} on {row.get('card_GB')} GB ({row.get('mode')}): decode engine "
                     f"{engine.get('decode')} / llama-bench {bench.get('decode', bench.get('status'))} / predicted "
                     f"{table.get('decode')} (table), {fit.get('decode')} (calibrated) tok/s")
        lines.append(f"  prompt engine {engine.get('prompt')} / llama-bench {bench.get('prompt', '-')} / predicted "
                     f"{table.get('prompt')} (table), {fit.get('prompt')} (calibrated) tok/s")
    if "oversize_load" in data:
        lines.append(f"oversized load: {data['oversize_load']['result']}")
    for row in data.get("paper_plans", []):
        lines.append(f"planner only: {row['model']} on {row['card_GB']} GB: {row['plan']}; {row['predicted']}")
    lines += [f"ERROR in {e['step']}: {e['error']}" for e in data.get("errors", [])]
    return lines


# ---- NVML and the memory holder ---------------------------------------------------------------------------


def nvml_snapshot() -> list[dict[str, Any]] | str:
    """Per NVIDIA GPU: name, total, free and used bytes (NVML), or why there are none."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no package, no driver: no NVIDIA GPU to compare with
        return f"not available ({type(exc).__name__}: {exc})"
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            found.append({"name": name.decode() if isinstance(name, bytes) else str(name), "total": int(memory.total),
                          "free": int(memory.free), "used": int(memory.used)})
        return found
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def used_delta(before: Any, after: Any) -> int | None:
    """MiB more in use on GPU 0 between two snapshots (None without NVML)."""
    if isinstance(before, list) and isinstance(after, list) and before:
        return int(after[0]["used"] - before[0]["used"]) // MiB
    return None


class MemoryHolder:
    """A second process holding all but N GiB of GPU 0 (this file run as `hold`), so that llama.cpp's device
    list shows N GiB free and the planner plans for that card."""

    def __init__(self, log: Path) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, __file__, "hold"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True)

    def leave_free(self, gib: float) -> str:
        """Its answer ("held ... free ..."), or "" when it died (no torch, no GPU: log_tail says)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"{gib}\n")
            self.proc.stdin.flush()
        except OSError:
            return ""
        return self.proc.stdout.readline().strip()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-300:] if self.log.is_file() else ""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.leave_free(0)
        self.proc.kill()
        self.proc.wait(10)


def _hold_loop() -> None:
    import torch  # on the GPU image; the holder is the only user

    held: list[Any] = []
    for line in sys.stdin:
        gib = float(line.strip() or 0)
        held.clear()
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info()
        if gib > 0 and free > gib * GiB:
            held.append(torch.empty(int(free - gib * GiB), dtype=torch.uint8, device="cuda"))
        free_now, _ = torch.cuda.mem_get_info()
        print(f"held {sum(t.numel() for t in held)} free {free_now}", flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["hold"]:
    _hold_loop()
