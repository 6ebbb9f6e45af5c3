"""settings.toml: every section survives a save, invalid values are reported with their key, the keymap works."""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import string
import time

import pytest
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.keys import Keys, _character_to_key
from textual.widgets import Footer, Static

from qwen_chat.config import settings
from qwen_chat.config.check import check
from qwen_chat.config.keymap import _normal_key, key_problem, load_keymap
from qwen_chat.config.presets import named
from qwen_chat.config.settings import (
    ChatSettings,
    Endpoint,
    SettingsError,
    load_chat,
    load_endpoints,
    load_theme,
    save_chat,
    save_endpoint,
    save_theme,
    settings_path,
    toml_loads,
    update_document,
)
from qwen_chat.config.tool_settings import load_tool_settings

FULL = """\
theme = "qwen-dark"
future-setting = [1, 2]

[endpoints.lab]
url = "http://gpu-box:8000/v1"
model = "Qwen/Qwen3-235B-A22B"

[keys]
stop = "escape"
toggle-thinking = "ctrl+t, f9"

[chat]
thinking_budget = 2048
context = "128k"
persona = "reviewer"

[presets."my precise"]
base = "thinking-2507"
temperature = 0.3
top_k = 40

[overrides.hybrid-thinking]
top_p = 0.9

[use]
hybrid-thinking = "my precise"

[plugins.someday]
enabled = true
"""


def write(text: str) -> None:
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(text, encoding="utf-8")


def parsed() -> dict:
    return toml_loads(settings_path().read_text(encoding="utf-8"))


def test_saving_the_theme_or_an_endpoint_keeps_every_other_section() -> None:
    write(FULL)
    before = parsed()
    save_theme("qwen-light")
    after = parsed()
    assert after == {**before, "theme": "qwen-light"}
    save_endpoint(Endpoint("home", "http://127.0.0.1:8080/v1"))
    after = parsed()
    assert after["endpoints"] == {**before["endpoints"], "home": {"url": "http://127.0.0.1:8080/v1"}}
    assert {k: v for k, v in after.items() if k not in ("endpoints", "theme")} == \
        {k: v for k, v in before.items() if k not in ("endpoints", "theme")}
    assert load_theme() == "qwen-light"
    assert set(load_endpoints()) == {"lab", "home"}
    assert load_keymap({"stop", "toggle-thinking"}) == {"stop": "escape", "toggle-thinking": "ctrl+t,f9"}
    assert load_chat() == ChatSettings(thinking_budget=2048, context="128k", persona="reviewer")
    assert settings_path().read_text().startswith('theme = "qwen-light"\nfuture-setting = [1, 2]\n')  # as it was


def test_a_new_file_starts_with_the_header() -> None:
    save_theme("qwen-light")
    text = settings_path().read_text(encoding="utf-8")
    assert text.startswith("# qwen-chat settings") and "your comments are kept" in text
    assert parsed() == {"theme": "qwen-light"}


def test_the_writer_round_trips_awkward_values() -> None:
    document = {
        "theme": 'a "quoted"\\ name\nwith a newline, a tab\t, DEL \x7f, \x01 and 🙂',
        "numbers": {"small": 1e-05, "big": 1e300, "neg": -0.0, "inf": math.inf, "int": -12, "yes": False},
        "dates": {"when": datetime.datetime(2025, 7, 1, 12, 30, tzinfo=datetime.timezone.utc),
                  "day": datetime.date(2025, 7, 1)},
        "presets": {"with.dot and space": {"base": "hybrid-thinking"}, "ünï": {"top_k": 1}},
        "lists": {"mixed": [1, "two", [3.5], {"k": "v"}]},
        "empty": {},
        "nested": {"a": {"b": {"c": 1}}},
    }
    update_document(lambda doc: doc.update(document))
    again = toml_loads(settings_path().read_text(encoding="utf-8"))
    assert math.isinf(again["numbers"].pop("inf")) and math.isinf(document["numbers"].pop("inf"))
    assert again == document


def test_saving_keeps_the_users_comments_and_order() -> None:
    write("# my settings, by hand\n"
          "theme = \"qwen-dark\"  # the dark one\n\n"
          "[chat]\n# long thoughts are fine\nthinking_budget = 0\n\n"
          "[keys]\nstop = \"escape\"  # like vim\n")
    save_theme("qwen-light")
    save_chat(ChatSettings(thinking_budget=4096))
    save_endpoint(Endpoint("lab", "http://gpu-box:8000/v1"))
    text = settings_path().read_text(encoding="utf-8")
    for comment in ("# my settings, by hand", "# the dark one", "# long thoughts are fine", "# like vim"):
        assert comment in text
    assert text.index("[chat]") < text.index("[keys]") < text.index("[endpoints.lab]")
    assert load_theme() == "qwen-light" and load_chat().thinking_budget == 4096


def test_the_file_is_parsed_once_until_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    write("[chat]\nthinking_budget = 100\n")
    parses = []
    real = settings.toml_loads
    monkeypatch.setattr(settings, "toml_loads", lambda text: parses.append(text) or real(text))
    for _ in range(5):
        assert load_chat().thinking_budget == 100
        load_endpoints(), load_theme()
    assert len(parses) == 1
    time.sleep(0.01)
    write("[chat]\nthinking_budget = 200\n")  # another size, another modification time: read again
    assert load_chat().thinking_budget == 200 and len(parses) == 2


def _settled(seconds_ago: float = 60) -> None:
    """Date the file back, as a file written a while ago is: a fresh time is never trusted on its own."""
    then = time.time_ns() - int(seconds_ago * 1e9)
    os.utime(settings_path(), ns=(then, then))


def test_the_file_is_read_only_when_its_stamp_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    write("[chat]\nthinking_budget = 100\n")
    _settled()
    reads = []
    real = settings._read
    monkeypatch.setattr(settings, "_read", lambda path: reads.append(path) or real(path))
    for _ in range(10):  # every loader, as an answer and the app ask for them
        assert load_chat().thinking_budget == 100
        load_endpoints(), load_theme(), load_tool_settings(), load_keymap({"stop"}), named()
    assert len(reads) == 1
    update_document(lambda document: document["chat"].__setitem__("thinking_budget", 200))
    _settled(30)
    for _ in range(10):
        assert load_chat().thinking_budget == 200 and load_theme() is None
    assert len(reads) == 2  # the save's new stamp: read once more, then trusted again


def test_a_change_within_one_tick_of_the_clock_is_still_seen() -> None:
    write("[chat]\nthinking_budget = 100\n")
    assert load_chat().thinking_budget == 100
    stamp = os.stat(settings_path())
    write("[chat]\nthinking_budget = 300\n")  # same size, same inode, and (forced here) the same time
    os.utime(settings_path(), ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert load_chat().thinking_budget == 300  # a time this young is not trusted: the bytes are compared


def test_a_broken_file_is_reported_once_and_never_overwritten() -> None:
    write('theme = "qwen-dark"\n[chat\n')
    with pytest.raises(SettingsError, match="fix it first: nothing was saved"):
        save_theme("qwen-light")
    assert isinstance(SettingsError("x"), OSError)  # the app's `except OSError` handlers catch it
    assert settings_path().read_text() == 'theme = "qwen-dark"\n[chat\n'
    problems = check({"stop"})
    assert len(problems) == 1 and "its settings are ignored" in problems[0]


def test_unknown_sections_are_reported_and_kept() -> None:
    write(FULL)
    problems = check({"stop", "toggle-thinking"})
    assert problems == [f"{settings_path()}: future-setting: unknown setting (known: theme, endpoints, keys, chat, "
                        "presets, overrides, use, tools, engine); ignored",
                        f"{settings_path()}: plugins: unknown setting (known: theme, endpoints, keys, chat, "
                        "presets, overrides, use, tools, engine); ignored"]
    save_chat(ChatSettings())
    assert parsed()["plugins"] == {"someday": {"enabled": True}}


def test_invalid_keys_are_reported_with_their_key_and_skipped() -> None:
    write("""[keys]
frobnicate = "f1"
stop = ""
search = 5
models = "ctrl+"
downloads = "Ctrl+t"
quit = "ctrl+q,,f10"
new-conversation = "ctrl+wibble"
toggle-thinking = "ctrl+/, f9"
toggle-sidebar = "question_mark"
""")
    known = {"stop", "search", "models", "downloads", "quit", "new-conversation", "toggle-thinking", "toggle-sidebar"}
    problems: list[str] = []
    keymap = load_keymap(known, problems)
    assert keymap == {"toggle-thinking": "ctrl+slash,f9", "toggle-sidebar": "question_mark"}
    p = f"{settings_path()}: keys."
    assert problems == [
        p + "frobnicate: no such action (known: downloads, models, new-conversation, quit, search, stop, "
            "toggle-sidebar, toggle-thinking); ignored",
        p + "stop: must be a key such as \"ctrl+t\" or several separated by commas (got ''); ignored",
        p + "search: must be a key such as \"ctrl+t\" or several separated by commas (got 5); ignored",
        p + "models: 'ctrl+': '' is not a key name (e.g. a, f5, escape, enter, tab, up, pageup, slash); ignored",
        p + "downloads: 'Ctrl+t': 'Ctrl' is not a modifier (use ctrl, shift, alt, meta, super, hyper); ignored",
        p + "quit: has an empty key between commas (got 'ctrl+q,,f10'); ignored",
        p + "new-conversation: 'ctrl+wibble': 'wibble' is not a key name (e.g. a, f5, escape, enter, tab, up, "
            "pageup, slash); ignored",
    ]


def test_chat_settings_invalid_values_are_reported_with_their_range_and_replaced_by_the_default() -> None:
    assert load_chat() == ChatSettings(thinking_budget=0, context="auto", persona="")  # no file at all
    write("""[chat]
thinking_budget = -5
context = "100k"
persona = 3
seed = -1
colour = "blue"
""")
    problems: list[str] = []
    assert load_chat(problems) == ChatSettings()
    p = f"{settings_path()}: chat."
    assert problems == [
        p + "thinking_budget: must be a whole number of tokens between 0 and 262144, 0 = no limit (got -5); "
            "the default 0 is used",
        p + "context: must be one of auto, native, 64k, 128k, 256k (got '100k'); the default 'auto' is used",
        p + "persona: must be a persona name in quotes, \"\" for none (got 3); the default '' is used",
        p + "seed: must be a whole number between 0 and 4294967295, or left out for a random one (got -1); a random "
            "seed is used",
        p + "colour: unknown setting (known: thinking_budget, context, persona, min_tokens_per_second, seed); "
            "ignored",
    ]
    write("[chat]\nthinking_budget = 1.5\ncontext = \"256k\"\nseed = 4294967296\n")
    problems.clear()
    assert load_chat(problems) == ChatSettings(context="256k")
    assert [problem.split(": ")[1] for problem in problems] == ["chat.thinking_budget", "chat.seed"]
    write("[chat]\nseed = 4294967295\n")  # the largest 32-bit seed
    assert load_chat() == ChatSettings(seed=4294967295)
    save_chat(ChatSettings(thinking_budget=4096, context="64k", persona="tutor", seed=0))
    assert load_chat() == ChatSettings(thinking_budget=4096, context="64k", persona="tutor", seed=0)
    save_chat(dataclasses.replace(load_chat(), seed=None))  # no seed: the key goes (TOML has no None)
    assert load_chat().seed is None and "seed" not in settings_path().read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="chat.context must be one of"):
        save_chat(ChatSettings(context="1m"))
    with pytest.raises(ValueError, match="chat.seed must be a whole number"):
        save_chat(ChatSettings(seed=True))


def test_key_names_agree_with_textuals() -> None:
    """settings.py knows Textual's key names without importing Textual (only tui/ may): the two must agree."""
    odd = {"ctrl-at"}  # an internal alias in Textual's enum, not a key name anyone types
    assert [k.value for k in Keys if not k.value.startswith("<") and k.value not in odd and key_problem(k.value)] == []
    for character in string.punctuation.replace("+", "") + "é":
        assert _normal_key(f"ctrl+{character}") == f"ctrl+{_character_to_key(character)}", character
        assert key_problem(f"ctrl+{_character_to_key(character)}") is None, character
    assert key_problem("ctrl+wibble") is not None and key_problem("alt+Escape") is not None


class KeyApp(App[None]):
    BINDINGS = [Binding("ctrl+t", "hit('thinking')", "Thinking", id="toggle-thinking"),
                Binding("f4", "hit('downloads')", "Downloads", id="downloads")]

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[str] = []
        self.problems: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("keys")
        yield Footer()

    def on_mount(self) -> None:
        self.set_keymap(load_keymap({b.id for b in self.BINDINGS if b.id}, self.problems))

    def action_hit(self, what: str) -> None:
        self.hits.append(what)


async def test_a_remapped_key_triggers_the_action_in_a_textual_app() -> None:
    write('[keys]\ntoggle-thinking = "f9, ctrl+/"\nno-such-thing = "f1"\n')
    app = KeyApp()
    async with app.run_test() as pilot:
        await pilot.press("f9")
        await pilot.press("ctrl+slash")
        await pilot.press("ctrl+t")  # the keymap replaces the default key
        await pilot.press("f4")  # not remapped: still works
        await pilot.pause()
    assert app.hits == ["thinking", "thinking", "downloads"]
    assert len(app.problems) == 1 and "keys.no-such-thing: no such action" in app.problems[0]


async def test_a_key_given_to_another_action_is_taken_from_its_default_owner() -> None:
    write('[keys]\ndownloads = "ctrl+t"\n')  # as the README says
    app = KeyApp()
    async with app.run_test() as pilot:
        await pilot.press("ctrl+t")
        await pilot.press("f4")
        await pilot.pause()
    assert app.hits == ["downloads"] and app.problems == []
