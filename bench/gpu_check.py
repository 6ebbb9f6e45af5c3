"""qwen-chat's hardware detection, memory plans and speed model against llama.cpp and NVML on this machine.

One results file (JSON, rewritten after every step: a cut-off run keeps what it found), then a summary on stdout:
  detection    llama.cpp's device list (what the planner uses) against NVML, per GPU
  shapes       random-weight Qwen3-shaped GGUFs (gpu_check_lib.py): 0.6B, 8B, 30B-A3B; CPU mode: small ones
  calibration  the probe of `calibrate --gpu` on the first shape: measured rates and fixed costs
  plans        per shape and card (another process holds all but 24/12/6 GB): planner bytes against llama.cpp's
               buffers and NVML after the engine loads the plan, its choice against llama-fit-params on the same
               free memory, a load that cannot fit; speeds: engine against llama-bench (same settings) and the
               speed model's predictions (table defaults, calibration) against both
CPU mode (no GPU, or --mode cpu): the same code on the CPU backend, small shapes; llama-bench / llama-fit-params
rows say "not available" when neither build/bin nor PATH has them.
Usage: python bench/gpu_check.py --out RESULTS.json [--mode auto|gpu|cpu] [--phase all|prepare|measure]
       [--shapes NAME ...] [--workdir DIR] [--deadline SECONDS] [--llama-bench PATH] [--fit-params PATH]
On the GPU machine bench/gpu_check.sh runs it (prepare while llama.cpp builds, then measure).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(Path(__file__).resolve().parent)]

from gpu_check_lib import (  # noqa: E402  (after the path set-up above)
    SHAPES,
    GiB,
    MemoryHolder,
    MiB,
    buffers,
    find_tool,
    fit_params,
    llama_bench,
    llama_log_lines,
    nvml_snapshot,
    summary,
    used_delta,
    write_gguf,
)

PROMPT_TOKENS, GEN = 480, {"gpu": 128, "cpu": 24}  # one micro-batch of prompt, as llama-bench's pp
CARDS = {"0.6b": (), "8b": (6,), "30b-a3b": (12, 6, 24), "mini": (), "mini-moe": ()}  # imitated: telling first
PAPER_CARDS = (24, 12, 6)  # CPU mode: the planner alone, for the real models on cards of these sizes


class Results:
    def __init__(self, path: Path, fresh: bool) -> None:  # the measure phase goes on from the prepare phase's
        self.path, self.started = path, time.monotonic()
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() and not fresh else {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def add(self, key: str, value: Any) -> None:
        self.data.setdefault(key, []).append(value)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", choices=["auto", "gpu", "cpu"], default="auto")
    parser.add_argument("--phase", choices=["all", "prepare", "measure", "note"], default="all")  # note: --build
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES))
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "gpu_check")
    parser.add_argument("--deadline", type=float, default=1e9, help="seconds this run may take")
    parser.add_argument("--llama-bench", type=Path)
    parser.add_argument("--fit-params", type=Path)
    parser.add_argument("--build", help="the CUDA build's outcome, from gpu_check.sh")
    return parser.parse_args()


def gpu_mode(requested: str) -> bool:
    from qwen_chat.system.hardware import detect

    return requested == "gpu" if requested != "auto" else bool(detect().gpu_offload and detect().gpus)


# ---- steps ----------------------------------------------------------------------------------------------


def detection(results: Results, gpu: bool) -> None:
    from qwen_chat.system.hardware import detect

    machine = detect()
    nvml = nvml_snapshot()
    rows = []
    for i, dev in enumerate(machine.gpus):
        row: dict[str, Any] = {"llama.cpp": f"{dev.name} {dev.description}", "free_MiB": dev.free_bytes // MiB,
                               "total_MiB": dev.total_bytes // MiB}
        if isinstance(nvml, list) and i < len(nvml):
            row.update(nvml=nvml[i]["name"], nvml_free_MiB=nvml[i]["free"] // MiB,
                       nvml_total_MiB=nvml[i]["total"] // MiB,
                       free_diff_MiB=(dev.free_bytes - nvml[i]["free"]) // MiB,
                       total_diff_MiB=(dev.total_bytes - nvml[i]["total"]) // MiB)
        rows.append(row)
    results.put("detection", {"mode": "gpu" if gpu else "cpu", "backend": machine.backend,
                              "gpu_offload": machine.gpu_offload, "source": machine.source, "gpus": rows,
                              "nvml": nvml if isinstance(nvml, str) else len(nvml),
                              "ram_total_GiB": round(machine.ram_total / GiB, 1),
                              "cores": [machine.physical_cores, machine.logical_cores],
                              "warnings": list(machine.warnings)})


def write_shapes(results: Results, names: list[str], workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    shapes = dict(results.data.get("shapes", {}))
    for name in names:
        path = workdir / f"random-{name}.gguf"
        if name not in shapes:  # a file from an earlier run on this machine is the same noise
            reused = {"bytes": path.stat().st_size, "reused": True} if path.is_file() else None
            shapes[name] = {"path": str(path), **(reused or write_gguf(path, SHAPES[name]))}
            results.put("shapes", shapes)


def calibration(results: Results, model: Path, gpu: bool) -> Any:
    """The probe as `calibrate` runs it; returns the measured Rates (the GPU's only in GPU mode)."""
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.planning import calibration as cal
    from qwen_chat.planning.speed import Rates, workload_from_gguf
    from qwen_chat.planning.speed_probe import derive, derive_gpu, run_gpu_probe, run_probe
    from qwen_chat.system.hardware import detect

    machine = detect()
    work = workload_from_gguf(read_model_info(model))
    threads = machine.physical_cores
    cpu = derive(run_probe(model, threads, 0), work)
    base = cal.default_gpu(machine.gpus[0]) if gpu else cal.UNKNOWN_GPU
    # in CPU mode the GPU probe runs on the CPU: it proves the fit, its fixed costs are the CPU's
    run = run_gpu_probe(model, threads, n_gpu_layers=-1 if gpu else 0)
    fitted = derive_gpu(run, work, base)
    results.put("calibration", {"model": model.name, "threads": threads, "cpu": asdict(cpu),
                                "gpu_probe_run": asdict(run), "gpu_fit": asdict(fitted),
                                "gpu_fit_device": "GPU" if gpu else "CPU (the fit's mechanics only)",
                                "table_guess": asdict(base)})
    return Rates(cpu, fitted if gpu else None, threads)


def plan_for(path: Path, machine: Any) -> tuple[Any, Any]:
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.planning.plan_inputs import arch_from_info, candidate_from_info
    from qwen_chat.planning.planner import plan

    info = read_model_info(path)
    return plan(arch_from_info(info), [candidate_from_info(info)], machine, None), info


def load(path: Path, plan: Any, gen: int = 0, n_gpu_layers: int | None = None) -> dict[str, Any]:
    """Load through the engine with the plan (optionally generate twice: warm-up, then timed) and return what
    llama.cpp logged, NVML's used memory before and after, and the engine's speeds."""
    import psutil

    from qwen_chat.engines.llama import Engine
    from qwen_chat.engines.protocol import Done, Failed, GenerateRequest, Loaded, LoadRequest
    from qwen_chat.qwen3.sampling import Sampling

    events: queue.Queue[Any] = queue.Queue()
    before, rss = nvml_snapshot(), psutil.Process().memory_info().rss
    engine = Engine(events.put).start()
    out: dict[str, Any] = {}
    try:
        with llama_log_lines() as lines:
            ngl = plan.n_gpu_layers if n_gpu_layers is None else n_gpu_layers
            engine.load(LoadRequest(path, plan.n_ctx, ngl, n_cpu_moe=plan.n_cpu_moe, kv_type=plan.kv_type,
                                    flash_attn=plan.flash_attn))
            event = _next(events, (Loaded, Failed), 600)
        out["llama_cpp"] = buffers(lines)
        if isinstance(event, Failed):
            return {**out, "load": f"failed: {event.message[:300]}"}
        out.update(load=f"loaded in {event.seconds:.1f} s", nvml_used_delta_MiB=used_delta(before, nvml_snapshot()),
                   rss_delta_MiB=(psutil.Process().memory_info().rss - rss) // MiB)
        for i in range(2 if gen else 0):  # a new prompt each time: the cache must not hold it
            text = "".join(chr(97 + (i + k * 7) % 26) for k in range(PROMPT_TOKENS))
            engine.generate(GenerateRequest(i + 1, text, Sampling(max_tokens=gen, seed=1, top_k=20)))
            done = _next(events, (Done, Failed), 600)
        if gen and isinstance(done, Done):
            out["engine"] = {"decode": round(done.tokens_per_second, 1), "prompt_tokens": done.prompt_evaluated,
                             "prompt": round(done.prompt_evaluated / done.prompt_seconds, 1),
                             "generated": done.completion_tokens}
    finally:
        engine.shutdown()
    return out


def _next(events: queue.Queue[Any], kinds: tuple[type, ...], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(event, kinds):
            return event


def plan_row(shape: str, card: int | None, plan: Any, loaded: dict[str, Any], fit: dict[str, Any],
             layers: int) -> dict[str, Any]:
    """The planner against llama.cpp's buffers, NVML and llama-fit-params for one load."""
    gpu_mib = sum(loaded.get("llama_cpp", {}).get("gpu", {}).values())
    host_mib = sum(loaded.get("llama_cpp", {}).get("host", {}).values())
    row: dict[str, Any] = {"shape": shape, "card_GB": card or "whole", "plan": plan.describe(),
                           "planner_gpu_MiB": plan.gpu_bytes // MiB, "planner_ram_MiB": plan.ram_bytes // MiB,
                           "llama_cpp_gpu_MiB": round(gpu_mib), "llama_cpp_host_MiB": round(host_mib), **loaded,
                           "fit_params": fit}
    if gpu_mib:
        row["gpu_error"] = f"{(plan.gpu_bytes / MiB - gpu_mib) / gpu_mib:+.1%}"
    if host_mib:
        row["ram_error"] = f"{(plan.ram_bytes / MiB - host_mib) / host_mib:+.1%}"
    if fit.get("status") == "ok":  # -ngl counts the output layer too: layers + 1 is "all"
        fit_all = fit["n_gpu_layers"] < 0 or fit["n_gpu_layers"] > layers
        row["choice"] = {"planner": {"n_gpu_layers": "all" if plan.n_gpu_layers < 0 else plan.n_gpu_layers,
                                     "cpu_expert_layers": plan.n_cpu_moe, "n_ctx": plan.n_ctx},
                         "fit_params": {"n_gpu_layers": "all" if fit_all else fit["n_gpu_layers"],
                                        "cpu_ffn_layers": fit["cpu_ffn_layers"], "n_ctx": fit["n_ctx"]}}
    return row


class Check:
    """The measure phase: per shape, its plans on the imitated cards and, for the whole card, its speed."""

    def __init__(self, args: argparse.Namespace, results: Results, gpu: bool) -> None:
        from qwen_chat.planning import calibration as cal
        from qwen_chat.planning.speed import Rates
        from qwen_chat.system.hardware import detect

        self.args, self.results, self.gpu = args, results, gpu
        self.mode = "gpu" if gpu else "cpu"
        self.bench = find_tool("llama-bench", args.llama_bench, ROOT)
        self.fit = find_tool("llama-fit-params", args.fit_params, ROOT)
        machine = detect()
        self.threads = machine.physical_cores
        self.table = Rates(cal.default_cpu(machine, self.threads),
                           cal.default_gpu(machine.gpus[0]) if gpu else None, self.threads)
        self.fitted = self.table
        self.holder: MemoryHolder | None = None

    def left(self) -> float:
        return self.args.deadline - (time.monotonic() - self.results.started)

    def shape(self, name: str) -> None:
        """Its plans on the whole card and each imitated one; one that fails is recorded, the next still runs."""
        for card in (None, *(CARDS[name] if self.gpu else ())):
            row = {"shape": name, "card_GB": card or "whole"}
            if self.left() < (90 if card is None else 45):
                self.results.add("plans", {**row, "status": "skipped: out of time"})
                continue
            try:
                self.scenario(name, card, row)
            except Exception as exc:  # the report goes on with the next card
                self.results.add("plans", {**row, "status": f"failed: {type(exc).__name__}: {exc}"})
            finally:
                if self.holder is not None:
                    self.holder.leave_free(0)

    def scenario(self, name: str, card: int | None, row: dict[str, Any]) -> None:
        from qwen_chat.system.hardware import detect

        path = Path(self.results.data["shapes"][name]["path"])
        if card is not None:
            self.holder = self.holder or MemoryHolder(self.args.workdir / "holder.log")
            said = self.holder.leave_free(card)
            self.results.add("holder", {**row, "said": said})
            if not said.startswith("held"):
                self.results.add("plans", {**row, "status": f"skipped: no memory holder ({self.holder.log_tail()})"})
                return
        plan, info = plan_for(path, detect())
        gen = GEN[self.mode] if card is None else GEN[self.mode] // 4
        loaded = load(path, plan, gen)
        fit = fit_params(self.fit, path, plan.n_ctx, plan.kv_type, plan.flash_attn)
        self.results.add("plans", plan_row(name, card, plan, loaded, fit, info.block_count))
        self.speed(name, card, path, plan, info, loaded, gen)
        if card == 6 and name == "30b-a3b":
            self.oversize(path, plan)

    def speed(self, name: str, card: int | None, path: Path, plan: Any, info: Any, loaded: dict[str, Any],
              gen: int) -> None:
        from qwen_chat.planning.speed import predict, workload_from_gguf

        bench = llama_bench(self.bench, path, plan, self.threads, PROMPT_TOKENS, gen, repeats=2 if card is None else 1)
        work, ctx = workload_from_gguf(info), PROMPT_TOKENS + gen // 2
        row: dict[str, Any] = {"shape": name, "card_GB": card or "whole", "mode": plan.mode,
                               "engine": loaded.get("engine"), "llama_bench": bench}
        for label, rates in (("predicted_table", self.table), ("predicted_calibrated", self.fitted)):
            estimate = predict(work, plan, rates, ctx)
            row[label] = {"decode": round(estimate.decode, 1), "prompt": round(estimate.prompt, 1),
                          "measured_rates": estimate.measured}
        engine, both = loaded.get("engine") or {}, ("decode", "prompt")
        row.update({f"{label}_over_engine_{w}": round(row[label][w] / engine[w], 2) for w in both if engine.get(w)
                    for label in ("predicted_table", "predicted_calibrated")})
        row.update({f"engine_over_llama_bench_{w}": round(engine[w] / bench[w], 3) for w in both
                    if engine.get(w) and bench.get(w)})
        self.results.add("speeds", row)

    def oversize(self, path: Path, plan: Any) -> None:
        """Every layer on a card that cannot hold them: the load must fail with a message, not crash."""
        loaded = load(path, plan, n_gpu_layers=-1)
        self.results.put("oversize_load", {"plan_n_gpu_layers": plan.n_gpu_layers, "forced": "all layers",
                                           "result": loaded.get("load"), "llama_cpp": loaded.get("llama_cpp")})

    def close(self) -> None:
        if self.holder is not None:
            self.holder.close()


def paper_plans(results: Results) -> None:
    """CPU mode: what the planner chooses for the real models on imitated cards (nothing here to load them on)."""
    from qwen_chat.catalog.loader import load_models
    from qwen_chat.planning import calibration as cal
    from qwen_chat.planning.plan_inputs import arch_from_catalog, candidates_from_catalog
    from qwen_chat.planning.planner import plan
    from qwen_chat.planning.speed import Rates, predict, workload_from_catalog
    from qwen_chat.system.hardware import Device, detect

    models, here = load_models(), detect()
    for card in PAPER_CARDS:
        device = Device("CUDA0", f"imitated {card} GB card", "gpu", (card - 1) * GiB, card * GiB, "nvidia")
        machine = replace(here, gpus=(device,), gpu_offload=True)
        rates = Rates(cal.default_cpu(machine, machine.physical_cores), cal.default_gpu(device))
        for model_id in ("qwen3-0.6b", "qwen3-8b", "qwen3-30b-a3b"):
            model = models[model_id]
            chosen = plan(arch_from_catalog(model), candidates_from_catalog(model), machine)
            estimate = predict(workload_from_catalog(model, model.quants[chosen.quant]), chosen, rates)
            results.add("paper_plans", {"model": model_id, "card_GB": card, "plan": chosen.describe(),
                                        "predicted": f"{estimate.short()}, prompt ~{estimate.prompt:.0f} tok/s"})


# ---- the run --------------------------------------------------------------------------------------------


def step(results: Results, name: str, fn: Any, *args: Any) -> Any:
    """Run one step; a failure is recorded and the next step still runs."""
    import traceback

    started = time.monotonic()
    try:
        value = fn(*args)
    except Exception as exc:  # the report must survive anything one step does
        results.add("errors", {"step": name, "error": f"{type(exc).__name__}: {exc}",
                               "where": traceback.format_exc()[-1500:]})
        value = None
    results.add("timings", {"step": name, "seconds": round(time.monotonic() - started, 1)})
    return value


def measure(args: argparse.Namespace, results: Results) -> None:
    from qwen_chat.system.logging_setup import llama_cpp_library

    llama_cpp_library()  # llama.cpp's log callback before its first backend call
    gpu = gpu_mode(args.mode)
    names = args.shapes or (["0.6b", "8b", "30b-a3b"] if gpu else ["mini", "mini-moe"])
    results.put("mode", "gpu" if gpu else "cpu")
    step(results, "detection", detection, results, gpu)
    step(results, "shapes", write_shapes, results, names, args.workdir)
    check = Check(args, results, gpu)
    results.put("tools", {"llama-bench": str(check.bench or "not available"),
                          "llama-fit-params": str(check.fit or "not available")})
    fitted = step(results, "calibration", calibration, results, Path(results.data["shapes"][names[0]]["path"]), gpu)
    check.fitted = fitted or check.table
    try:
        for name in names:
            step(results, f"shape {name}", check.shape, name)
    finally:
        check.close()
    if not gpu:
        step(results, "paper plans", paper_plans, results)


def main() -> None:
    args = parse_args()
    results = Results(args.out, fresh=args.phase in ("all", "prepare"))
    os.environ.setdefault("QWEN_CHAT_DATA_DIR", tempfile.mkdtemp(prefix="gpu-check-data-"))  # never the user's
    if args.build:
        results.put("build", args.build)
    if args.phase == "note":
        return
    if args.phase == "prepare":  # while llama.cpp builds: nothing here may load it
        results.put("nvml_at_start", nvml_snapshot())
        step(results, "shapes", write_shapes, results, args.shapes or ["0.6b", "8b", "30b-a3b"], args.workdir)
        return
    step(results, "measure", measure, args, results)
    results.put("summary", summary(results.data))
    results.put("seconds", round(time.monotonic() - results.started, 1))
    print("\n".join(results.data["summary"]), flush=True)


if __name__ == "__main__":
    main()
