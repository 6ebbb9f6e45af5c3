"""First run with no model: is the hub there (one quick probe, before anything is offered), the GGUFs already
on disk, and two downloads to choose from: a quick start and the most capable model that fits with room to
spare (planning/recommend.py). Offline, it says so at once and offers the files on disk instead."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwen_chat.catalog.entries import CatalogModel, Quant
from qwen_chat.catalog.loader import load_models
from qwen_chat.cli.output import is_terminal, note, one_line, show
from qwen_chat.config.engine_settings import estimate_threads
from qwen_chat.hub.local_models import LocalGguf, find_local_ggufs, hf_cache_dir
from qwen_chat.hub.probe import HubState, probe_hub
from qwen_chat.planning.planner import GiB
from qwen_chat.planning.recommend import FIRST_WORD_PROMPT, Offer, Offers, Pick, choose, offers
from qwen_chat.planning.speed import Rates
from qwen_chat.system.hardware import Machine
from qwen_chat.system.paths import models_dir

ASK = "Which one? [number, Enter for 1, n for none] "


@dataclass(frozen=True)
class Choice:
    """What the first run decided: a catalog ref to download, a file to open, or neither (with the exit status:
    0 declined, 1 nothing to open offline, 2 no terminal to ask on)."""

    ref: str | None = None
    path: Path | None = None
    code: int = 0


def recommend(machine: Machine, models: dict[str, CatalogModel] | None = None, rates: Rates | None = None,
              min_tokens_per_second: float | None = None) -> Pick | None:
    """recommend.choose on this machine's measured (or guessed) speeds; see planning/recommend.py. The speed floor
    is settings.toml's [chat] min_tokens_per_second unless given."""
    from qwen_chat.planning.calibration import rates_for

    models = models if models is not None else load_models()
    return choose(machine, models, rates or rates_for(machine, estimate_threads()), _floor(min_tokens_per_second))


def first_offers(machine: Machine, models: dict[str, CatalogModel] | None = None, rates: Rates | None = None,
                 min_tokens_per_second: float | None = None) -> Offers:
    """recommend.offers on this machine's measured (or guessed) speeds and settings.toml's speed floor."""
    from qwen_chat.planning.calibration import rates_for

    models = models if models is not None else load_models()
    return offers(machine, models, rates or rates_for(machine, estimate_threads()), _floor(min_tokens_per_second))


def _floor(given: float | None) -> float:
    from qwen_chat.config.settings import load_chat

    return given if given is not None else load_chat().min_tokens_per_second


def welcome(ask: Callable[[str], str] = input, say: Callable[[str], None] = show, *, state: HubState | None = None,
            local: list[LocalGguf] | None = None, machine: Machine | None = None,
            interactive: bool | None = None) -> Choice:
    """The first run's conversation. The hub is probed first (at most a couple of seconds) so that an offline
    machine is told before anything is offered or asked."""
    say("Welcome to qwen-chat: no model yet.")
    state = state if state is not None else probe_hub()
    if interactive is None:
        interactive = ask is not input or (is_terminal(sys.stdin) and is_terminal(sys.stdout))
    if not state.reachable:
        say(f"You are offline: {state.reason}. Nothing can be downloaded now; models on disk work as usual.")
    found = [m for m in (local if local is not None else find_local_ggufs()) if m.usable]
    if not state.reachable:
        return _offline(found, ask, say, interactive)
    if machine is None:
        from qwen_chat.system.hardware import detect

        machine = detect()
    say(f"This machine: {machine.ram_total / GiB:.1f} GiB of RAM ({machine.ram_available / GiB:.1f} free), "
        f"{machine.physical_cores} cores, " + (", ".join(one_line(d.description) for d in machine.gpus) or "no GPU")
        + ".")
    picks = first_offers(machine)
    downloads = [o for o in (picks.quick, picks.capable) if o is not None]
    if not downloads and not found:
        say("None of the Qwen3 models fits this machine's free memory; close other programs and try again, "
            "or run a small GGUF of your own with: qwen-chat --model PATH.gguf")
        return Choice(code=1)
    _show_offers(picks, say)
    if found:
        say("Already on disk:")
        _list_local(found, say, first=len(downloads) + 1)
    if not interactive:  # a script: say how, never wait
        for offer in downloads:
            say(f"To download: qwen-chat pull {offer.ref}")
        return Choice(code=2)
    return _pick(ask(ASK), downloads, found, say)


def _show_offers(picks: Offers, say: Callable[[str], None]) -> None:
    number = 1
    if picks.quick is not None:
        say(f"  1) Quick start: {_offer_line(picks.quick)}")
        number = 2
    if picks.capable is not None:
        say(f"  {number}) Most capable with room to spare: {_offer_line(picks.capable)}; "
            f"{_memory_line(picks.capable, picks.margin_bytes)}")
        if number == 2:
            say("     Start with 1 and fetch 2 later (qwen-chat pull, or F3 in the app) to chat while it downloads.")
    else:
        say(f"  ({picks.note}.)")
    say("  `qwen-chat models` lists every model and quant; `qwen-chat models --fits` only those that fit.")


def size_text(quant: Quant) -> str:
    """A download's size, with `~` when the catalog only estimates it."""
    return f"{'~' if quant.estimated else ''}{quant.size / 1e9:.1f} GB"


def _offer_line(offer: Offer) -> str:
    quant = offer.model.quants[offer.plan.quant]
    wait = offer.first_word_seconds
    return (f"{one_line(offer.model.name)} {offer.plan.quant}, {size_text(quant)} download; "
            f"{offer.estimate.short()} here, a {FIRST_WORD_PROMPT:,}-token prompt read in ~{wait:.0f} s")


def _memory_line(offer: Offer, margin: int) -> str:
    plan = offer.plan
    used = f"uses {plan.ram_bytes / GiB:.1f} GiB of RAM"
    if plan.gpu_bytes:
        used += f" and {plan.gpu_bytes / GiB:.1f} GiB of GPU memory (1 GiB per GPU kept free, as llama.cpp's --fit)"
    return f"{used}, leaving at least {margin / GiB:.1f} GiB of RAM for the system and your apps"


def _list_local(found: list[LocalGguf], say: Callable[[str], None], first: int = 1) -> None:
    for number, model in enumerate(found, start=first):
        quant = f" {model.quant}" if model.quant else ""
        say(f"  {number}) open {one_line(model.name)}{quant}, {model.size / 1e9:.1f} GB, in the {model.where}: "
            f"{one_line(str(model.path))}")


def _offline(found: list[LocalGguf], ask: Callable[[str], str], say: Callable[[str], None],
             interactive: bool) -> Choice:
    if not found:
        say(f"No GGUF model found in the models folder ({models_dir()}) or the Hugging Face cache "
            f"({hf_cache_dir()}). Connect and run qwen-chat again to download one, copy a .gguf file into the "
            "models folder, or open one with: qwen-chat --model PATH.gguf")
        return Choice(code=1)
    say("GGUF models already on this disk:")
    _list_local(found, say)
    if not interactive:
        say(f"Open one with: qwen-chat --model {found[0].path}")
        return Choice(code=2)
    return _pick(ask(ASK), [], found, say)


def _pick(answer: str, downloads: list[Offer], found: list[LocalGguf], say: Callable[[str], None]) -> Choice:
    answer = answer.strip().lower()
    if answer in ("n", "no", "q", "none"):
        refs = ", ".join(f"qwen-chat pull {o.ref}" for o in downloads)
        say("Later: " + (f"{refs}; or " if refs else "") + "qwen-chat --model PATH.gguf for a file you have.")
        return Choice()
    number = 1 if answer in ("", "y", "yes") else int(answer) if answer.isdigit() else 0
    if 1 <= number <= len(downloads):
        return Choice(ref=downloads[number - 1].ref)
    if len(downloads) < number <= len(downloads) + len(found):
        return Choice(path=found[number - len(downloads) - 1].path)
    say(f"{one_line(answer)!r} is not one of the numbers above; nothing was downloaded. Run qwen-chat again to "
        "choose.")
    return Choice(code=2)


def first_run() -> tuple[Path | None, int]:
    """The model to open, or None with the exit status: a download that failed (no network) is 1."""
    from qwen_chat.cli.transfer import run_pull
    from qwen_chat.hub.resolve import ModelNotFound, resolve_model

    choice = welcome()
    if choice.path is not None or choice.ref is None:
        return choice.path, choice.code
    code = run_pull(choice.ref)
    if code != 0:
        note("Without network, point qwen-chat at a GGUF already on disk: qwen-chat --model PATH.gguf")
        return None, code
    try:
        return resolve_model(choice.ref), 0
    except ModelNotFound as exc:
        note(str(exc))
        return None, 1
