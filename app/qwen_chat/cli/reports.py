"""`qwen-chat models`, `plan` and `doctor`: what fits this machine, the plan for one model, the set-up.

Every line goes through cli/output.show: model, file, architecture and GPU names come from catalogs, GGUF
headers and drivers, and are shown, never obeyed, by the terminal."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from qwen_chat.catalog.entries import CatalogError, CatalogModel, Quant, find_model
from qwen_chat.catalog.loader import load_models
from qwen_chat.cli import output
from qwen_chat.cli.output import one_line, show
from qwen_chat.config.engine_settings import estimate_threads
from qwen_chat.config.engine_settings import threads as llama_threads
from qwen_chat.gguf.files import ModelFileError, read_model_info
from qwen_chat.planning import speed
from qwen_chat.planning.calibration import rates_for
from qwen_chat.planning.draft_choice import DraftChoice, draft_for_catalog, draft_for_file
from qwen_chat.planning.plan_inputs import arch_from_catalog, candidates_from_catalog, weights_from_headers
from qwen_chat.planning.planner import Candidate, DoesNotFit, GiB, Plan, Weights, plan
from qwen_chat.planning.speed import DISPLAY_CTX, DeviceRate, Rates, Workload, predict
from qwen_chat.planning.verdicts import verdicts
from qwen_chat.system.hardware import Machine, detect
from qwen_chat.system.logging_setup import llama_cpp_library
from qwen_chat.system.paths import config_dir, data_dir, database_path, log_dir, models_dir


def _size(quant: Quant) -> str:
    return f"{'~' if quant.estimated else ''}{quant.size / 1e9:.1f} GB"


def print_models(machine: Machine | None = None, rates: Rates | None = None, fits: bool = False) -> int:
    """The catalog with a verdict per quant; ★ marks only the first run's picks (the quick start and the most
    capable model that fits with room to spare); `fits`: only the quants that fit this machine."""
    from qwen_chat.cli.welcome import first_offers

    machine = machine or detect()
    rates = rates or rates_for(machine, estimate_threads())
    models = load_models()
    picks = first_offers(machine, models, rates)
    starred = {o.ref for o in (picks.quick, picks.capable) if o is not None}
    show(_machine_line(machine))
    show("★ recommended for this machine (the quick start and the most capable with room to spare)   ✓ downloaded"
         "   ~ estimated size")
    show(f"speed: expected decode at {DISPLAY_CTX:,} tokens of context, "
         + ("measured on this machine" if rates.measured else "estimated, not measured (qwen-chat calibrate)")
         + ("; only what fits" if fits else "") + "\n")
    show(f"{'model':32} {'quant':12} {'size':>10}  {'speed':>12}  verdict")
    for model in models.values():
        rows, _ = verdicts(model, machine)
        for row in rows:
            if fits and row.plan is None:
                continue
            mark = ("★" if f"{model.id}:{row.quant.name}" in starred else " ") + ("✓" if row.downloaded else " ")
            ctx = f" (context {row.plan.n_ctx:,})" if row.plan else ""
            tps = predict(speed.workload_from_catalog(model, row.quant), row.plan, rates).short() if row.plan else "-"
            show(f"{one_line(model.id):32} {one_line(row.quant.name):12} {_size(row.quant):>10} {mark} "
                 f"{tps:>12}  {row.verdict}{ctx}")
    return 0


def print_plan(ref: str, ctx: int | None, machine: Machine | None = None, exact: bool = False,
               rates: Rates | None = None) -> int:
    from qwen_chat.hub.client import HubError
    from qwen_chat.hub.remote_header import RemoteHeaderError

    machine = machine or detect()
    try:
        chosen, title, work, draft = _plan_for_ref(ref, ctx, machine, exact)
    except (CatalogError, ModelFileError, DoesNotFit, HubError, RemoteHeaderError) as exc:
        output.error(exc)
        return 1
    show(title)
    show(_machine_line(machine))
    show(f"plan: {chosen.describe()}")
    show(f"verdict: {chosen.verdict}; sizes {'exact (GGUF header)' if chosen.weights_exact else 'from the catalog'}")
    for reason in chosen.reasons:
        show(f"  - {reason}")
    rates = rates or rates_for(machine, estimate_threads())
    show(f"speed: {predict(work, chosen, rates).describe(rates)}")
    show(f"draft model: {draft.describe()}")
    show(f"threads: {llama_threads().describe()}")
    return 0


def _plan_for_ref(ref: str, ctx: int | None, machine: Machine,
                  exact: bool = False) -> tuple[Plan, str, Workload, DraftChoice]:
    path = Path(ref).expanduser()
    if path.suffix == ".gguf" or path.exists():
        from qwen_chat.qwen3.template import ChatTemplate
        from qwen_chat.session.model_loading import plan_for_file

        info = read_model_info(path)
        variant = ChatTemplate(info.chat_template).variant
        title = f"{info.path.name} ({info.architecture}, {info.size_bytes / 1e9:.2f} GB)"
        chosen = plan_for_file(info, variant, machine, ctx)
        draft = draft_for_file(info, chosen, machine, load_models())
        return chosen, title, speed.workload_from_gguf(info), draft
    models = load_models()
    model, quant = find_model(ref, models)
    if exact:
        chosen_quant = quant or model.quants[plan(arch_from_catalog(model), candidates_from_catalog(model),
                                                   machine, ctx).quant]
        candidates = [Candidate(chosen_quant.name, remote_weights(model, chosen_quant))]
    else:
        candidates = candidates_from_catalog(model, quant)
    chosen = plan(arch_from_catalog(model), candidates, machine, ctx)
    work = speed.workload_from_catalog(model, model.quants[chosen.quant])
    if exact:  # the hub's exact tensor sizes instead of the catalog's spread
        work = replace(work, weights=candidates[0].weights)
    return chosen, f"{model.name} ({model.repo})", work, draft_for_catalog(model, chosen, machine, models)


def remote_weights(model: CatalogModel, quant: Quant) -> Weights:
    """Exact tensor sizes from the headers of the quant's files on the hub (a few MB each, Range requests)."""
    from qwen_chat.hub import client as hub
    from qwen_chat.hub.model_pull import list_remote_files
    from qwen_chat.hub.remote_header import fetch_header

    token = hub.token()
    commit, listing = list_remote_files(model.repo, token)
    present = {f.path for f in listing}
    headers = []
    for f in quant.files:
        if f.path not in present:
            raise CatalogError(f"{f.path} is not in {model.repo} at {commit[:12]}: the catalog entry is out of date")
        headers.append(fetch_header(hub.resolve_url(model.repo, f.path, commit), hub.auth_headers(token)))
    return weights_from_headers(headers, model.layers)


def _machine_line(machine: Machine) -> str:
    gpus = ", ".join(f"{d.description} {d.free_bytes / GiB:.1f}/{d.total_bytes / GiB:.1f} GiB free"
                     for d in machine.gpus)
    usable = "" if machine.gpu_offload or not machine.gpus else " (not usable: CPU-only build)"
    return (f"machine: RAM {machine.ram_available / GiB:.1f}/{machine.ram_total / GiB:.1f} GiB available, "
            f"{machine.physical_cores} cores; GPU: {gpus or 'none'}{usable}")


def print_doctor(machine: Machine | None = None) -> int:
    from qwen_chat import __version__

    machine = machine or detect()

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    show(f"qwen-chat {__version__} on Python {platform.python_version()} ({sys.platform}, {platform.machine()})")
    show(f"llama-cpp-python {llama_cpp_version()}, textual {version('textual')}, "
          f"huggingface_hub {version('huggingface_hub')}")
    show(f"engine backend: {machine.backend}; GPU offload {'available' if machine.gpu_offload else 'not built in'}")
    show(f"RAM: {machine.ram_available / GiB:.1f} GiB available of {machine.ram_total / GiB:.1f} GiB; "
          f"CPU: {machine.physical_cores} cores, {machine.logical_cores} threads")
    show(f"llama.cpp threads: {llama_threads().describe()}")
    if machine.gpus:
        for d in machine.gpus:
            show(f"GPU {d.name}: {d.description}, {d.free_bytes / GiB:.1f} GiB free of {d.total_bytes / GiB:.1f} GiB"
                  f" (seen by {machine.source})")
    else:
        show("GPU: none found (llama.cpp device list, NVML, AMD sysfs, Apple Silicon checked)")
    for warning in machine.warnings:
        show(f"WARNING: {warning}")
    show(f"data: {data_dir()}\ndatabase: {database_path()}\nmodels: {models_dir()}\nlogs: {log_dir()}\n"
          f"config: {config_dir()}")
    return 0


def llama_cpp_version() -> str:
    """The installed llama-cpp-python's version. A working package may have no distribution metadata (a build
    put on PYTHONPATH, its libraries found through LLAMA_CPP_LIB_PATH): then the package says it itself, and
    only a failed import means "not installed"."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        pass
    try:
        llama_cpp = llama_cpp_library()
    except ImportError:
        return "not installed"
    except (OSError, RuntimeError) as exc:
        return f"installed, but its library does not load ({exc})"
    return f"{getattr(llama_cpp, '__version__', 'of unknown version')} (no package metadata)"


def run_calibrate(gguf: Path | None, model_arg: str | None = None,
                  resolve: Callable[[str | None], Path | None] = lambda arg: None, gpu: bool = False,
                  machine: Machine | None = None) -> int:
    """`qwen-chat calibrate`: probe this machine's speeds on a GGUF and store them (planning/speed_probe.py).
    `resolve` turns --model (or the model used last) into a file; main passes its own."""
    from qwen_chat.hub.resolve import ModelNotFound
    from qwen_chat.planning.speed_probe import calibrate

    machine = machine or detect()
    try:
        path = gguf or resolve(model_arg)
    except ModelNotFound as exc:
        output.error(exc)
        return 1
    if path is None:
        output.error("no model to probe with: qwen-chat calibrate MODEL.gguf (any small GGUF will do)")
        return 2
    use_gpu = gpu and machine.gpu_offload and bool(machine.gpus)
    if gpu and not use_gpu:
        show(_no_gpu_to_probe(machine))
    show(f"probing {one_line(path.name)} on {machine.physical_cores} cores, the best of 3 short runs each"
         f"{' and the GPU (about a minute)' if use_gpu else ' (about 40 s)'}...")
    try:
        cpu, gpu_rate, busy = calibrate(path.expanduser(), machine, gpu=use_gpu)
    except (ModelFileError, ValueError, RuntimeError, OSError) as exc:  # llama.cpp's load failures are ValueError
        output.error(f"the probe failed: {exc}")
        return 1
    for threads, rate in cpu.items():
        show(f"CPU, {threads} thread{'s' if threads > 1 else ''}: {_rate_line(rate)}")
    if gpu_rate is not None:
        show(f"GPU: {_rate_line(gpu_rate)}")
        show(f"GPU fixed costs: {gpu_rate.layer_seconds * 1e6:.0f} µs per layer and token, "
             f"{gpu_rate.moe_layer_seconds * 1e6:.0f} µs more per MoE layer, {gpu_rate.token_seconds * 1e3:.2f} ms "
             f"per token (sampling), {gpu_rate.batch_layer_seconds * 1e6:.0f} µs per layer and prompt batch")
    show(f"stored for this machine in {data_dir()}; `qwen-chat models` now shows measured speeds")
    if busy:
        show(f"note: the machine was busy ({busy}): these figures are likely low. Close what is running and "
             "calibrate again for this machine's real speed.")
    return 0


def _no_gpu_to_probe(machine: Machine) -> str:
    """Why --gpu probes nothing here: no GPU at all, or one this llama-cpp-python cannot use."""
    if not machine.gpus:
        return (f"--gpu: no GPU found here (llama.cpp backend: {one_line(machine.backend)}); "
                "probing the CPU only, GPU speeds stay estimated")
    names = ", ".join(one_line(d.description) for d in machine.gpus)
    return (f"--gpu: {names} found, but this llama-cpp-python was built without GPU support "
            f"({one_line(machine.backend)} only); probing the CPU only. Rebuild it with the GPU's backend "
            "(qwen-chat doctor says how), then run calibrate --gpu again")


def _rate_line(rate: DeviceRate) -> str:
    return (f"{rate.bandwidth / 1e9:.1f} GB/s effective bandwidth, {rate.flops / 1e9:.0f} GFLOP/s prompt, "
            f"{rate.attention_flops / 1e9:.0f} GFLOP/s attention")
