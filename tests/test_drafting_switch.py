"""Speculative decoding turned off and on per answer (issue 22): GenerateRequest.drafting on the real engine, the
settings writer for `[engine] speculative`, and F5's switch reaching the session and settings.toml."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Label, Switch

from qwen_chat.config.engine_settings import load_engine_settings, save_speculative
from qwen_chat.config.settings import settings_path
from qwen_chat.engines.drafting import DraftLength
from qwen_chat.engines.llama import Engine
from qwen_chat.engines.protocol import Done, GenerateRequest, LoadRequest
from qwen_chat.gguf.files import read_model_info
from qwen_chat.qwen3.sampling import Sampling
from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt
from qwen_chat.tui.app import QwenChatApp

from fake_engine import FakeEngine
from helpers import SIZE, Recorder, loaded_engine, make_app, status, type_and_send, wait_for, write_settings

# a text the model is asked to write back: prompt lookup drafts it from the prompt
TEXT = ("The keeper wrote the weather, the ships that passed, and the birds that struck the lantern at night. "
        "His entries are short and plain, but over forty years they add up to a portrait of a coast that changed.")
SETTINGS = """# my settings
theme = "qwen-light"  # the light one

[engine]
threads = 2  # two cores here
speculative = true
"""

# ---- the engine -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(real_model: Path) -> Iterator[tuple[Engine, Recorder]]:
    with loaded_engine(LoadRequest(real_model, n_ctx=2048, n_threads=2, n_threads_batch=2)) as (eng, recorder, _):
        eng._model.loop.speculator.new_length = functools.partial(DraftLength, pause=0)  # never rests: no timing
        yield eng, recorder


def _answer(eng: Engine, rec: Recorder, model: Path, request_id: int, drafting: bool) -> Done:
    template = ChatTemplate(read_model_info(model).chat_template)
    prompt = build_prompt(template, [Turn("user", "Repeat this text exactly:\n\n" + TEXT)], enable_thinking=False)
    eng.generate(GenerateRequest(request_id, prompt, Sampling(temperature=0.0, max_tokens=24, seed=1),
                                 drafting=drafting))
    done = rec.until(Done)[0][-1]
    assert isinstance(done, Done) and done.drafting is not None, done
    return done


def test_an_answer_without_drafting_decodes_one_token_at_a_time_and_says_why(engine, real_model: Path) -> None:
    eng, rec = engine
    plain = _answer(eng, rec, real_model, 1, drafting=False)
    assert plain.drafting.batches == 0 and plain.drafting.drafted == 0, plain.drafting
    assert plain.drafting.describe() == ("speculative decoding: off for this answer: turned off in F5 / "
                                         "[engine] speculative = false")
    assert plain.answer.startswith("The keeper wrote")  # it still writes the text back, one token per decode
    # the next answer on the same loaded model (no reload) drafts again: the switch is per answer
    drafted = _answer(eng, rec, real_model, 2, drafting=True)
    assert drafted.drafting.batches > 0 and drafted.drafting.accepted > 0, drafted.drafting
    assert drafted.drafting.off == "" and drafted.answer.startswith("The keeper wrote")


# ---- the settings writer --------------------------------------------------------------------------------


def test_saving_the_setting_keeps_the_files_comments_and_other_keys() -> None:
    path = write_settings(SETTINGS)
    save_speculative(False)
    assert path.read_text(encoding="utf-8") == SETTINGS.replace("speculative = true", "speculative = false")
    assert load_engine_settings().speculative is False and load_engine_settings().threads == 2
    save_speculative(True)
    assert path.read_text(encoding="utf-8") == SETTINGS


def test_saving_into_a_file_that_cannot_be_written_raises_and_changes_nothing() -> None:
    path = write_settings(SETTINGS)
    path.with_suffix(".tmp").mkdir()  # where the writer puts the new text before it replaces the file (even root
    with pytest.raises(OSError):  # cannot write a file there; a chmod would not stop root)
        save_speculative(False)
    assert path.read_text(encoding="utf-8") == SETTINGS


# ---- F5 -------------------------------------------------------------------------------------------------


async def _open_f5(pilot, app: QwenChatApp) -> Switch:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: "ready" in status(app), what="model load")
    await pilot.press("f5")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "PresetsScreen", what="F5")
    return app.screen.query_one("#drafting", Switch)


def _note(app: QwenChatApp) -> str:
    return str(app.screen.query_one("#presets-note", Label).render())


async def test_f5_switch_turns_drafting_off_in_the_session_and_settings(tiny_models: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    path = write_settings(SETTINGS)
    engine = FakeEngine.scripted()
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        assert app.session.drafting is True  # from settings.toml
        switch = await _open_f5(pilot, app)
        assert switch.value is True
        await pilot.click("#drafting")
        await wait_for(pilot, lambda: "speculative = false" in path.read_text(encoding="utf-8"), what="the save")
        assert _note(app) == "Speculative decoding off from the next answer; saved in settings.toml."
        assert path.read_text(encoding="utf-8") == SETTINGS.replace("speculative = true", "speculative = false")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.session.drafting is False, what="the session's value")
        await type_and_send(pilot, "hello")
        await wait_for(pilot, lambda: any(isinstance(r, GenerateRequest) for r in engine.requests), what="a request")
        request = next(r for r in engine.requests if isinstance(r, GenerateRequest))
        assert request.drafting is False
        assert sum(1 for r in engine.requests if isinstance(r, LoadRequest)) == 1  # no reload


async def test_f5_switch_on_a_file_that_cannot_be_written_says_so_and_holds_for_this_run(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    path = write_settings(SETTINGS)
    path.with_suffix(".tmp").mkdir()  # the writer's temporary file cannot be made (see above)
    app = make_app(tmp_path / "chat.db", tiny_models["hybrid"], engine=FakeEngine.scripted())
    async with app.run_test(size=SIZE) as pilot:
        await _open_f5(pilot, app)
        await pilot.click("#drafting")
        await wait_for(pilot, lambda: "for this run only" in _note(app), what="the note")
        assert _note(app).startswith("Speculative decoding off for this run only: not saved: ")
        assert str(settings_path().with_suffix(".tmp")) in _note(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.session.drafting is False, what="the session's value")
    assert path.read_text(encoding="utf-8") == SETTINGS
