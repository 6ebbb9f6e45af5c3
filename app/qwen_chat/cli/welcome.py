"""First run with no model: what fits this machine, and an offer to download the recommended one."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from qwen_chat.catalog.entries import CatalogModel
from qwen_chat.catalog.loader import load_models
from qwen_chat.cli.output import is_terminal, note, show
from qwen_chat.hub.client import offline
from qwen_chat.planning.recommend import Pick, choose
from qwen_chat.planning.speed import Rates
from qwen_chat.system.hardware import Machine
from qwen_chat.system.paths import models_dir


def recommend(machine: Machine, models: dict[str, CatalogModel] | None = None, rates: Rates | None = None,
              min_tokens_per_second: float | None = None) -> Pick | None:
    """recommend.choose on this machine's measured (or guessed) speeds; see planning/recommend.py. The speed floor
    is settings.toml's [chat] min_tokens_per_second unless given."""
    from qwen_chat.config.settings import load_chat
    from qwen_chat.planning.calibration import rates_for

    models = models if models is not None else load_models()
    floor = min_tokens_per_second if min_tokens_per_second is not None else load_chat().min_tokens_per_second
    return choose(machine, models, rates or rates_for(machine), floor)


def welcome(machine: Machine, ask: Callable[[str], str] = input, say: Callable[[str], None] = show) -> str | None:
    """Returns the catalog ref to download, or None."""
    say("Welcome to qwen-chat: no model yet.")
    say(f"This machine: {machine.ram_available / (1 << 30):.1f} GiB of RAM free, "
        + (", ".join(d.description for d in machine.gpus) or "no GPU") + ".")
    pick = recommend(machine)
    if pick is None:
        say("None of the Qwen3 models fits this machine's free memory; close other programs and try again, "
            "or run a small GGUF of your own with: qwen-chat --model PATH.gguf")
        return None
    model, chosen = pick.model, pick.plan
    quant = model.quants[chosen.quant]
    say(f"Recommended: {model.name} {chosen.quant} ({quant.size / 1e9:.1f} GB) — {chosen.verdict}, "
        f"context {chosen.n_ctx:,}. `qwen-chat models` lists every option.")
    say(f"Why: {pick.reason}")
    if offline():
        say(f"You are offline (HF_HUB_OFFLINE). To use a GGUF already on disk: qwen-chat --model PATH.gguf, "
            f"or put files in {models_dir()}.")
        return None
    if not (is_terminal(sys.stdin) and is_terminal(sys.stdout)) and ask is input:  # a script: say how, never wait
        say(f"To download it: qwen-chat pull {model.id}:{chosen.quant}")
        return None
    answer = ask(f"Download it now ({quant.size / 1e9:.1f} GB)? [Y/n] ").strip().lower()
    if answer not in ("", "y", "yes"):
        say(f"Later: qwen-chat pull {model.id}:{chosen.quant}, or qwen-chat --model PATH.gguf for a file you have.")
        return None
    return f"{model.id}:{chosen.quant}"


def first_run() -> Path | None:
    from qwen_chat.cli.transfer import run_pull
    from qwen_chat.hub.resolve import ModelNotFound, resolve_model
    from qwen_chat.system.hardware import detect

    ref = welcome(detect())
    if ref is None or run_pull(ref) != 0:
        if ref is not None:
            note("Without network, point qwen-chat at a GGUF already on disk: qwen-chat --model PATH.gguf")
        return None
    try:
        return resolve_model(ref)
    except ModelNotFound:
        return None
