"""Sampling presets: Qwen's, the user's edits and named presets, their ranges, and the preset screen."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Input, Label, Select, Static

from qwen_chat.catalog.entries import load_catalog
from qwen_chat.config import presets
from qwen_chat.config.presets import effective, reset, sampling_for, save_named, save_override, thinking_budget_for, use
from qwen_chat.config.settings import settings_path, toml_loads
from qwen_chat.qwen3.sampling import PresetValues, Sampling, parse, qwen_preset, validate
from qwen_chat.qwen3.template import Variant
from qwen_chat.tui.presets_screen import PresetsScreen

from helpers import wait_for


def write(text: str) -> None:
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(text, encoding="utf-8")


def stored() -> dict:
    return toml_loads(settings_path().read_text(encoding="utf-8")) if settings_path().exists() else {}


def test_range_messages_show_the_valid_range() -> None:
    assert validate("temperature", 3) == "temperature must be between 0.0 and 2.0 (got 3)"
    assert validate("top_p", 0) == "top_p must be above 0.0 and at most 1.0 (got 0)"
    assert validate("top_k", 1001) == "top_k must be between 0 and 1000, 0 = off (got 1001)"
    assert validate("top_k", 20.0) == "top_k must be a whole number between 0 and 1000, 0 = off (got 20.0)"
    assert validate("min_p", -0.1) == "min_p must be between 0.0 and 1.0 (got -0.1)"
    assert validate("presence_penalty", 2.5) == "presence_penalty must be between 0.0 and 2.0 (got 2.5)"
    assert validate("max_output", 0) == "max_output must be between 1 and 262144 (got 0)"
    assert validate("thinking_budget", 262145) == \
        "thinking_budget must be between 0 and 262144, 0 = off (got 262145)"
    assert validate("temperature", True) == "temperature must be a number between 0.0 and 2.0 (got True)"
    assert validate("temperature", float("nan")) == "temperature must be between 0.0 and 2.0 (got nan)"
    assert validate("seed", -1) == "seed must be between 0 and 4294967295, empty = random (got -1)"
    assert validate("seed", 2**32) == "seed must be between 0 and 4294967295, empty = random (got 4294967296)"
    assert validate("seed", 7.0) == "seed must be a whole number between 0 and 4294967295, empty = random (got 7.0)"
    assert validate("temperature", None) == "temperature must be a number between 0.0 and 2.0 (got None)"
    assert validate("colour", 1) == ("colour is not a preset field (fields: temperature, top_p, top_k, min_p, "
                                     "presence_penalty, max_output, thinking_budget, seed)")
    for field, ok in [("temperature", 0), ("temperature", 2), ("top_p", 1), ("top_k", 0), ("min_p", 1.0),
                      ("max_output", 262144), ("thinking_budget", 0), ("seed", 0), ("seed", 2**32 - 1),
                      ("seed", None)]:
        assert validate(field, ok) is None, field
    assert parse("temperature", " 0.3 ") == (0.3, None)
    assert parse("temperature", "1") == (1.0, None) and isinstance(parse("temperature", "1")[0], float)
    assert parse("top_k", "40") == (40, None)
    assert parse("top_k", "4.5") == (None, "top_k must be a whole number between 0 and 1000, 0 = off (got 4.5)")
    assert parse("temperature", "hot") == (None, "temperature must be a number between 0.0 and 2.0 (got 'hot')")
    assert parse("seed", " 42 ") == (42, None) and parse("seed", " ") == (None, None)  # empty: a random seed
    assert parse("temperature", "") == (None, "temperature must be a number between 0.0 and 2.0 (got '')")


@pytest.mark.parametrize("quantized", [False, True])
def test_defaults_are_qwens_catalog_values(quantized: bool) -> None:
    catalog = load_catalog()["presets"]
    for variant, thinking, name in [(Variant.HYBRID, True, "hybrid-thinking"),
                                    (Variant.HYBRID, False, "hybrid-non-thinking"),
                                    (Variant.ALWAYS_THINKS, True, "thinking-2507"),
                                    (Variant.NO_THINKING, False, "instruct-2507")]:
        p = catalog[name]
        expected = Sampling(temperature=p["temperature"], top_p=p["top_p"], top_k=p["top_k"], min_p=p["min_p"],
                            presence_penalty=p["presence_penalty_quantized" if quantized else "presence_penalty"],
                            max_tokens=p["max_output"])
        assert sampling_for(variant, thinking, quantized) == expected
        assert effective(name, quantized) == (name, qwen_preset(name, quantized))
        assert thinking_budget_for(variant, thinking, quantized) == 0
    assert sampling_for(Variant.HYBRID, True, quantized, context_left=500).max_tokens == 500
    assert sampling_for(Variant.HYBRID, True, True).presence_penalty == 1.5  # Qwen's advice for quantized files


def test_effective_picks_named_over_override_over_qwen() -> None:
    qwen = qwen_preset("hybrid-thinking", False)
    save_override("hybrid-thinking", {**qwen.__dict__, "temperature": 0.5})
    assert effective("hybrid-thinking", False) == ("hybrid-thinking (edited)",
                                                   PresetValues(**{**qwen.__dict__, "temperature": 0.5}))
    save_named("precise", {"temperature": 0.2, "top_k": 5}, base="hybrid-thinking")
    assert effective("hybrid-thinking", False)[0] == "hybrid-thinking (edited)"  # saved, not yet in use
    use("hybrid-thinking", "precise")
    name, values = effective("hybrid-thinking", False)
    assert (name, values.temperature, values.top_k, values.top_p) == ("precise", 0.2, 5, qwen.top_p)
    assert sampling_for(Variant.HYBRID, True, False).temperature == 0.2
    assert sampling_for(Variant.HYBRID, False, False) == Sampling(**_sampling_of(qwen_preset("hybrid-non-thinking",
                                                                                             False)))  # untouched
    use("hybrid-thinking", None)
    assert effective("hybrid-thinking", False)[1].temperature == 0.5
    with pytest.raises(ValueError, match="no preset named 'missing'"):
        use("hybrid-thinking", "missing")


def _sampling_of(values: PresetValues) -> dict:
    return {"temperature": values.temperature, "top_p": values.top_p, "top_k": values.top_k, "min_p": values.min_p,
            "presence_penalty": values.presence_penalty, "max_tokens": values.max_output}


def test_reset_removes_the_override_and_the_use_entry_but_keeps_named_presets() -> None:
    save_override("thinking-2507", {"temperature": 1.0})
    save_named("loose", {"temperature": 1.2}, base="thinking-2507")
    use("thinking-2507", "loose")
    use("hybrid-thinking", "loose")
    reset("thinking-2507")
    assert effective("thinking-2507", True) == ("thinking-2507", qwen_preset("thinking-2507", True))
    assert stored()["use"] == {"hybrid-thinking": "loose"} and "overrides" not in stored()
    assert set(presets.named()) == {"loose"}
    presets.delete_named("loose")
    assert "presets" not in stored() and "use" not in stored()


def test_user_values_are_explicit_and_untouched_fields_follow_qwens_quantized_advice() -> None:
    qwen_q = qwen_preset("hybrid-thinking", True)
    save_override("hybrid-thinking", {**qwen_q.__dict__, "temperature": 0.4}, quantized=True)
    assert stored()["overrides"] == {"hybrid-thinking": {"temperature": 0.4}}  # only what differs from Qwen's
    assert effective("hybrid-thinking", True)[1].presence_penalty == 1.5
    assert effective("hybrid-thinking", False)[1].presence_penalty == 0.0
    save_override("hybrid-thinking", {**qwen_q.__dict__, "presence_penalty": 0.0}, quantized=True)
    assert stored()["overrides"] == {"hybrid-thinking": {"presence_penalty": 0.0}}
    assert effective("hybrid-thinking", True)[1].presence_penalty == 0.0  # the user's value, set explicitly
    save_override("hybrid-thinking", qwen_q, quantized=True)  # nothing differs: no override left
    assert "overrides" not in stored()
    with pytest.raises(ValueError, match="temperature must be between 0.0 and 2.0"):
        save_override("hybrid-thinking", {"temperature": 9})
    with pytest.raises(ValueError, match="one of Qwen's presets"):
        save_named("hybrid-thinking", {"temperature": 0.1})
    with pytest.raises(ValueError, match="no Qwen preset 'bogus'"):
        effective("bogus", False)


def test_invalid_stored_values_are_reported_with_their_key_and_qwens_value_is_used() -> None:
    write("""[presets.bad]
base = "gpt-5"
temperature = 3
top_k = 1.5
colour = "red"

[presets.hybrid-thinking]
temperature = 0.1

[overrides.hybrid-non-thinking]
top_p = 0
max_output = 4096

[overrides.made-up]
temperature = 0.1

[use]
hybrid-thinking = "missing"
instruct-2507 = "bad"
""")
    problems: list[str] = []
    presets.check(problems)
    p = f"{settings_path()}: "
    assert problems == [
        p + "presets.bad.base: must be one of hybrid-thinking, hybrid-non-thinking, instruct-2507, thinking-2507, "
            "qwen35-thinking, qwen35-non-thinking (got 'gpt-5'); hybrid-thinking is used",
        p + "presets.bad.temperature: must be between 0.0 and 2.0 (got 3); Qwen's value is used",
        p + "presets.bad.top_k: must be a whole number between 0 and 1000, 0 = off (got 1.5); Qwen's value is used",
        p + "presets.bad.colour: unknown field (fields: temperature, top_p, top_k, min_p, presence_penalty, "
            "max_output, thinking_budget, seed); ignored",
        p + "presets.hybrid-thinking: is the name of one of Qwen's presets: edit it as [overrides.hybrid-thinking]; "
            "ignored",
        p + "overrides.hybrid-non-thinking.top_p: must be above 0.0 and at most 1.0 (got 0); Qwen's value is used",
        p + "overrides.made-up: no such Qwen preset (presets: hybrid-thinking, hybrid-non-thinking, instruct-2507, "
            "thinking-2507, qwen35-thinking, qwen35-non-thinking); ignored",
        p + "use.hybrid-thinking: no preset named 'missing' (named presets: bad); Qwen's is used",
    ]
    assert effective("hybrid-thinking", False) == ("hybrid-thinking", qwen_preset("hybrid-thinking", False))
    name, values = effective("instruct-2507", False)
    assert name == "bad" and values == qwen_preset("hybrid-thinking", False)  # every field of it was invalid
    name, values = effective("hybrid-non-thinking", False)
    assert values.top_p == qwen_preset("hybrid-non-thinking", False).top_p and values.max_output == 4096


def test_thinking_budget_comes_from_the_preset_else_the_chat_default_and_only_when_thinking() -> None:
    write("[chat]\nthinking_budget = 1024\n")
    assert thinking_budget_for(Variant.HYBRID, True, False) == 1024
    assert thinking_budget_for(Variant.HYBRID, False, False) == 0
    assert thinking_budget_for(Variant.NO_THINKING, True, False) == 0
    save_override("thinking-2507", {"thinking_budget": 8192})
    assert thinking_budget_for(Variant.ALWAYS_THINKS, True, False) == 8192
    assert thinking_budget_for(Variant.HYBRID, True, False) == 1024


def test_the_seed_comes_from_ask_else_the_preset_else_the_chat_setting_and_is_random_by_default() -> None:
    assert sampling_for(Variant.HYBRID, True, False).seed is None  # Qwen's presets carry none: random
    write("[chat]\nseed = 7\n")
    assert sampling_for(Variant.HYBRID, True, False).seed == 7
    save_override("hybrid-thinking", {"seed": 11})
    assert stored()["overrides"] == {"hybrid-thinking": {"seed": 11}} and stored()["chat"] == {"seed": 7}
    assert sampling_for(Variant.HYBRID, True, False).seed == 11  # the preset's is above [chat]'s
    assert sampling_for(Variant.HYBRID, False, False).seed == 7  # another mode, another preset
    assert sampling_for(Variant.HYBRID, True, False, seed=0).seed == 0  # --seed is above both; 0 is a seed
    save_named("fixed", {"seed": 2**32 - 1}, base="hybrid-non-thinking")
    use("hybrid-non-thinking", "fixed")
    assert sampling_for(Variant.HYBRID, False, False).seed == 2**32 - 1
    save_override("hybrid-thinking", qwen_preset("hybrid-thinking", False))  # seed None again: nothing differs
    assert "overrides" not in stored() and sampling_for(Variant.HYBRID, True, False).seed == 7
    write("[overrides.hybrid-thinking]\nseed = -1\ntemperature = 0.5\n")
    problems: list[str] = []
    presets.check(problems)
    assert problems == [f"{settings_path()}: overrides.hybrid-thinking.seed: must be between 0 and 4294967295, "
                        "empty = random (got -1); Qwen's value is used"]
    assert effective("hybrid-thinking", False)[1] == PresetValues(**{**qwen_preset("hybrid-thinking", False).__dict__,
                                                                    "temperature": 0.5})


# --- the screen ------------------------------------------------------------------------------------------------


class Host(App[None]):
    def __init__(self, slot: str, quantized: bool) -> None:
        super().__init__()
        self.slot, self.quantized = slot, quantized
        self.results: list[bool | None] = []

    def compose(self) -> ComposeResult:
        yield Static("chat")

    def on_mount(self) -> None:
        self.push_screen(PresetsScreen(self.slot, self.quantized), self.results.append)


def field(app: App, name: str) -> Input:
    return app.screen.query_one(f"#field-{name}", Input)


def error(app: App, name: str) -> str:
    label = app.screen.query_one(f"#error-{name}", Label)
    return str(label.render()) if label.display else ""


async def test_screen_out_of_range_value_shows_the_range_and_saves_nothing() -> None:
    app = Host("hybrid-thinking", True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert field(app, "presence_penalty").value == "1.5"  # Qwen's advice for quantized files
        field(app, "temperature").value = "3"
        field(app, "top_k").value = "many"
        field(app, "top_p").focus()
        await pilot.press("enter")
        await pilot.pause()
        assert error(app, "temperature") == "temperature must be between 0.0 and 2.0 (got 3)"
        assert error(app, "top_k") == "top_k must be a whole number between 0 and 1000, 0 = off (got 'many')"
        assert error(app, "top_p") == ""
        assert isinstance(app.screen, PresetsScreen) and app.results == []
        assert not settings_path().exists()
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == [False]


async def test_screen_valid_edit_saves_an_override_and_reset_restores_qwens() -> None:
    app = Host("hybrid-thinking", True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        field(app, "temperature").value = "0.4"
        field(app, "thinking_budget").value = "4096"
        await pilot.click("#save")
        await pilot.pause()
    assert app.results == [True]
    assert stored() == {"overrides": {"hybrid-thinking": {"temperature": 0.4, "thinking_budget": 4096}}}
    assert effective("hybrid-thinking", True)[1].presence_penalty == 1.5  # not pinned by the screen

    app = Host("hybrid-thinking", True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert field(app, "temperature").value == "0.4"  # the screen shows the preset in use
        await pilot.click("#reset")
        await pilot.pause()
        assert field(app, "temperature").value == "0.6"
        assert effective("hybrid-thinking", True) == ("hybrid-thinking", qwen_preset("hybrid-thinking", True))
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == [True]
    assert "overrides" not in stored()


async def test_screen_saves_a_named_preset_and_switches_between_presets() -> None:
    app = Host("hybrid-non-thinking", False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not app.screen.query("#field-thinking_budget")  # this mode does not think
        field(app, "top_k").value = "50"
        app.screen.query_one("#save-as", Input).value = "hybrid-thinking"
        await pilot.click("#save")
        await pilot.pause()
        assert "one of Qwen's presets" in error(app, "save-as") and not settings_path().exists()
        app.screen.query_one("#save-as", Input).value = "chatty"
        app.screen.query_one("#save-as", Input).focus()
        await pilot.press("enter")  # the error above moved the buttons: Enter, not a click at a stale place
        await pilot.pause()
    assert app.results == [True]
    assert stored() == {"presets": {"chatty": {"base": "hybrid-non-thinking", "top_k": 50}},
                        "use": {"hybrid-non-thinking": "chatty"}}

    app = Host("hybrid-non-thinking", False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        select = app.screen.query_one("#preset-choice", Select)
        assert select.value == "named:chatty" and field(app, "top_k").value == "50"
        select.value = "qwen"
        await pilot.pause()
        assert field(app, "top_k").value == "20"
        assert effective("hybrid-non-thinking", False)[0] == "hybrid-non-thinking"
        await pilot.press("escape")
        await pilot.pause()
    assert app.results == [True]
    assert "chatty" in presets.named()  # choosing Qwen's keeps the named preset


async def test_screen_sets_a_seed_and_an_empty_field_makes_it_random_again() -> None:
    app = Host("hybrid-thinking", False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        seed = field(app, "seed")
        assert seed.value == "" and seed.placeholder == "random"  # Qwen's preset has no seed
        seed.value = "-1"
        seed.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: error(app, "seed"), what="the seed's range")
        assert error(app, "seed") == "seed must be between 0 and 4294967295, empty = random (got -1)"
        assert not settings_path().exists()
        seed.value = "42"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.results == [True], what="the screen to save and close")
    assert stored() == {"overrides": {"hybrid-thinking": {"seed": 42}}}
    assert sampling_for(Variant.HYBRID, True, False).seed == 42

    app = Host("hybrid-thinking", False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert field(app, "seed").value == "42"
        field(app, "seed").value = ""
        field(app, "seed").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.results == [True], what="the screen to save and close")
    assert "overrides" not in stored() and sampling_for(Variant.HYBRID, True, False).seed is None
