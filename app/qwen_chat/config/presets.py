"""Sampling presets: Qwen's own (the catalog's `presets:`), the user's edits of them, and user-named presets.

Each of Qwen's presets is a *slot*, picked by the model's variant and the mode (`preset_name`). What a slot uses,
from `settings.toml` (see settings.py):

1. `[use] SLOT = "NAME"`: the named preset `[presets.NAME]` (its missing fields come from Qwen's preset `base`);
2. otherwise Qwen's preset with the user's `[overrides.SLOT]` on top.

Qwen advises presence_penalty 1.5 for quantized files where the catalog says so (`presence_penalty_quantized`);
fields a user preset does not set follow that rule, a field it sets is used as it is. Invalid stored values are
reported (with their key and valid range) and Qwen's value is used instead, never fatal. A preset may carry a
`seed` (same seed, same prompt: the same answer); Qwen's have none, and a preset without one samples at random
unless `[chat] seed` sets one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qwen_chat.config.settings import (
    interpreted,
    load_chat,
    prune,
    report_problem,
    section,
    update_document,
)
from qwen_chat.qwen3.sampling import (  # Qwen's side of the presets, used through this module too
    DEFAULT_BASE,
    FIELDS,
    RANGES,
    SLOTS,
    THINKING_SLOTS,
    PresetValues,
    Sampling,
    preset_name,
    qwen_preset,
    validate,
)
from qwen_chat.qwen3.template import Variant

# --- Qwen's presets and the user's ----------------------------------------------------------------------------


@dataclass
class _User:
    named: dict[str, tuple[str, dict[str, Any]]]  # name -> (base slot, valid fields it sets)
    overrides: dict[str, dict[str, Any]]  # slot -> valid fields it sets
    use: dict[str, str]  # slot -> name of an existing named preset


def _fields(table: object, key: str, problems: list[str] | None, allowed: tuple[str, ...] = FIELDS) -> dict:
    if not isinstance(table, dict):
        report_problem(problems, key, "must be a table of preset fields; ignored")
        return {}
    fields = {}
    for field, value in table.items():
        if field not in allowed:
            report_problem(problems, f"{key}.{field}", f"unknown field (fields: {', '.join(allowed)}); ignored")
            continue
        problem = RANGES[field].problem(value)
        if problem:
            report_problem(problems, f"{key}.{field}", f"{problem}; Qwen's value is used")
            continue
        fields[field] = float(value) if not RANGES[field].integer else value
    return fields


def _load(problems: list[str] | None = None) -> _User:
    """The user's presets as settings.toml has them now (worked out once per change of the file)."""
    return interpreted("presets", _user_presets, problems)


def _user_presets(document: dict[str, Any], problems: list[str]) -> _User:
    named: dict[str, tuple[str, dict[str, Any]]] = {}
    raw_named = document.get("presets") or {}
    if not isinstance(raw_named, dict):
        report_problem(problems, "presets", "must be [presets.NAME] tables; ignored")
        raw_named = {}
    for name, table in raw_named.items():
        key = f"presets.{name}"
        base = table.get("base", DEFAULT_BASE) if isinstance(table, dict) else DEFAULT_BASE
        if name in SLOTS:
            report_problem(problems, key,
                           f"is the name of one of Qwen's presets: edit it as [overrides.{name}]; ignored")
            continue
        if base not in SLOTS:
            report_problem(problems, f"{key}.base",
                           f"must be one of {', '.join(SLOTS)} (got {base!r}); {DEFAULT_BASE} is used")
            base = DEFAULT_BASE
        fields = {k: v for k, v in table.items() if k != "base"} if isinstance(table, dict) else table
        named[name] = (base, _fields(fields, key, problems))
    overrides = {}
    raw_overrides = document.get("overrides") or {}
    if not isinstance(raw_overrides, dict):
        report_problem(problems, "overrides", "must be [overrides.SLOT] tables; ignored")
        raw_overrides = {}
    for slot, table in raw_overrides.items():
        if slot not in SLOTS:
            report_problem(problems, f"overrides.{slot}", f"no such Qwen preset (presets: {', '.join(SLOTS)}); ignored")
            continue
        overrides[slot] = _fields(table, f"overrides.{slot}", problems)
    use = {}
    raw_use = document.get("use") or {}
    if not isinstance(raw_use, dict):
        report_problem(problems, "use", "must be a table of SLOT = \"preset name\"; ignored")
        raw_use = {}
    for slot, name in raw_use.items():
        if slot not in SLOTS:
            report_problem(problems, f"use.{slot}", f"no such Qwen preset (presets: {', '.join(SLOTS)}); ignored")
        elif not isinstance(name, str) or name not in named:
            known = ", ".join(named) or "none saved"
            report_problem(problems, f"use.{slot}",
                           f"no preset named {name!r} (named presets: {known}); Qwen's is used")
        else:
            use[slot] = name
    return _User(named, overrides, use)


def check(problems: list[str]) -> list[str]:
    """Report every problem in the [presets], [overrides] and [use] sections."""
    _load(problems)
    return problems


def _check_slot(slot: str) -> None:
    if slot not in SLOTS:
        raise ValueError(f"no Qwen preset {slot!r} (presets: {', '.join(SLOTS)})")


def named(quantized: bool = False, problems: list[str] | None = None) -> dict[str, PresetValues]:
    """The user's named presets with their missing fields filled from their base (Qwen's preset)."""
    return {name: dataclasses.replace(qwen_preset(base, quantized), **fields)
            for name, (base, fields) in _load(problems).named.items()}


def named_base(name: str) -> str:
    """The Qwen preset a named preset builds on."""
    entry = _load().named.get(name)
    return entry[0] if entry else DEFAULT_BASE


def in_use(slot: str) -> str | None:
    """The named preset `[use]` picks for the slot, or None for Qwen's (with the user's edits if any)."""
    _check_slot(slot)
    return _load().use.get(slot)


def effective(slot: str, quantized: bool, problems: list[str] | None = None) -> tuple[str, PresetValues]:
    """(display name, values) of the preset the slot uses: the named one from [use] if valid, else Qwen's with the
    user's override. The name is the named preset's, or the slot's ("hybrid-thinking", "hybrid-thinking (edited)").
    """
    _check_slot(slot)
    user = _load(problems)
    name = user.use.get(slot)
    if name is not None:
        base, fields = user.named[name]
        return name, dataclasses.replace(qwen_preset(base, quantized), **fields)
    fields = user.overrides.get(slot) or {}
    return (f"{slot} (edited)" if fields else slot), dataclasses.replace(qwen_preset(slot, quantized), **fields)


def edited(slot: str, quantized: bool, problems: list[str] | None = None) -> PresetValues:
    """Qwen's preset with the user's [overrides.SLOT] on top, whichever preset [use] picks."""
    _check_slot(slot)
    return dataclasses.replace(qwen_preset(slot, quantized), **(_load(problems).overrides.get(slot) or {}))


def _differences(values: PresetValues | Mapping[str, Any], base: str, quantized: bool) -> dict[str, Any]:
    """The valid fields of `values` that differ from Qwen's `base` (so untouched fields keep following Qwen's)."""
    given = dataclasses.asdict(values) if isinstance(values, PresetValues) else dict(values)
    qwen = dataclasses.asdict(qwen_preset(base, quantized))
    for field, value in given.items():
        problem = validate(field, value)
        if problem:
            raise ValueError(problem)
    return {f: given[f] for f in FIELDS if f in given and given[f] != qwen[f]}


def save_override(slot: str, values: PresetValues | Mapping[str, Any], quantized: bool = False) -> None:
    """Store the user's edit of Qwen's preset: the fields that differ from Qwen's values for `quantized`.

    Does not change which preset the slot uses (`use(slot, None)` selects Qwen's).
    """
    _check_slot(slot)
    fields = _differences(values, slot, quantized)

    def change(document: dict[str, Any]) -> None:
        overrides = section(document, "overrides")
        if fields:
            overrides[slot] = fields
        else:
            overrides.pop(slot, None)
        prune(document, "overrides")

    update_document(change)


def reset(slot: str) -> None:
    """Back to Qwen's preset for the slot: the override and the [use] entry go (named presets are kept)."""
    _check_slot(slot)

    def change(document: dict[str, Any]) -> None:
        for name in ("overrides", "use"):
            if isinstance(document.get(name), dict):
                document[name].pop(slot, None)
                prune(document, name)

    update_document(change)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 40 or not name.isprintable():
        raise ValueError("a preset name must be 1 to 40 printable characters")
    if name in SLOTS:
        raise ValueError(f"{name!r} is one of Qwen's presets; choose another name")
    return name


def save_named(name: str, values: PresetValues | Mapping[str, Any], base: str = DEFAULT_BASE,
               quantized: bool = False) -> str:
    """Add or replace the named preset (fields that differ from Qwen's `base`); returns the name as stored."""
    name = _check_name(name)
    _check_slot(base)
    fields = _differences(values, base, quantized)
    update_document(lambda document: section(document, "presets").__setitem__(name, {"base": base, **fields}))
    return name


def delete_named(name: str) -> None:
    """Remove a named preset and every [use] entry that picked it."""

    def change(document: dict[str, Any]) -> None:
        if isinstance(document.get("presets"), dict):
            document["presets"].pop(name, None)
            prune(document, "presets")
        if isinstance(document.get("use"), dict):
            for slot in [s for s, n in document["use"].items() if n == name]:
                del document["use"][slot]
            prune(document, "use")

    update_document(change)


def use(slot: str, name: str | None) -> None:
    """Make the slot use the named preset, or Qwen's (with the user's edits) when `name` is None."""
    _check_slot(slot)
    if name is not None and name not in _load().named:
        raise ValueError(f"no preset named {name!r}")

    def change(document: dict[str, Any]) -> None:
        if name is None:
            if isinstance(document.get("use"), dict):
                document["use"].pop(slot, None)
                prune(document, "use")
        else:
            section(document, "use")[slot] = name

    update_document(change)


# --- what the chat uses ---------------------------------------------------------------------------------------


def sampling_for(variant: Variant, thinking: bool, quantized: bool, context_left: int | None = None,
                 seed: int | None = None) -> Sampling:
    """Never greedy in thinking mode unless the user chose temperature 0 in their own preset.

    The seed is `seed` (`--seed`) when given, else the preset's, else `[chat] seed`, else None (random).
    """
    _, preset = effective(preset_name(variant, thinking), quantized)
    max_tokens = preset.max_output
    if context_left is not None:
        max_tokens = max(1, min(max_tokens, context_left))
    if seed is None:
        seed = preset.seed if preset.seed is not None else load_chat().seed
    return Sampling(
        temperature=preset.temperature,
        top_p=preset.top_p,
        top_k=preset.top_k,
        min_p=preset.min_p,
        presence_penalty=preset.presence_penalty,
        max_tokens=max_tokens,
        seed=seed,
    )


def thinking_budget_for(variant: Variant, thinking: bool, quantized: bool) -> int:
    """The default thinking budget for an answer in this mode, in tokens; 0 = off (no limit).

    The preset's `thinking_budget` when it sets one, else `[chat] thinking_budget`; always 0 when the mode does
    not think.
    """
    slot = preset_name(variant, thinking)
    if slot not in THINKING_SLOTS:
        return 0
    return effective(slot, quantized)[1].thinking_budget or load_chat().thinking_budget
