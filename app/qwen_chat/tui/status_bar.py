"""The status line under the chat: model, thinking mode and budget meter, speed, context use, plan, state."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from qwen_chat.session.chat import ChatSession
from qwen_chat.tui.printable import printable_line
from qwen_chat.tui.served_note import CHECK_EVERY, served_label


class StatusBar(Static):
    def __init__(self) -> None:
        super().__init__("", id="status", markup=False)
        self.mode = ""
        self.state = "starting"
        self.last_speed = 0.0
        self.last_drafting = ""  # the last answer's speculative decoding: acceptance and speed-up (Drafting.short)
        self.thinking_tokens = 0  # of the answer being written, or the last one (the budget meter)
        self.budget = 0
        self.served = ""  # "served at URL" while a `qwen-chat serve` serves the same file (served_note.py)
        self._session: ChatSession | None = None

    def on_mount(self) -> None:
        self.set_interval(CHECK_EVERY, self._check_served)

    def _check_served(self) -> None:
        session = self._session
        if session is None:
            return
        model = session.model
        served = served_label(model.info.path if model.info is not None and model.remote_model is None else None)
        if served != self.served:
            self.served = served
            self.show(session)

    def show(self, session: ChatSession) -> None:
        self._session = session
        model = session.model
        parts = [model.model_name] + ([self.mode] if self.mode else [])
        if self.thinking_tokens:
            verb = "thinking" if session.generating else "thought"
            parts.append(f"{verb} {self.thinking_tokens:,}/{self.budget:,}" if self.budget
                         else f"{verb} {self.thinking_tokens:,} tokens")
        if self.last_speed and not session.generating:
            parts.append(f"{self.last_speed:.1f} tok/s" + (f" ({self.last_drafting})" if self.last_drafting else ""))
        if model.n_ctx:
            share = model.context_used / model.n_ctx
            parts.append(f"ctx {model.context_used:,}/{model.n_ctx:,} ({share:.0%})")
        if model.plan is not None and model.ready:
            parts.append(model.plan.short(model.gpu_layers))
        parts.append(self.state)
        if self.served:
            parts.append(self.served)
        # the model's name is a file name or what a server calls it, and the state may quote an error:
        # either may hold control characters, drawn as symbols instead of reaching the terminal
        self.update(Text(printable_line("  │  ".join(parts))))
